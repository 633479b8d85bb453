"""The experiments of issue 5: a sweep over configs and seeds, and the report it writes."""
