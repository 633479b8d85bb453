"""The end-to-end benchmark's parsing and table (no timing: the benchmark itself times)."""

from benchmarks import end_to_end


def test_the_done_line_of_the_training_loop_is_parsed():
  # The format of `cnn_jax.train.loop`'s last log line.
  line = ("Done: test accuracy %.4f (best %.4f at step %d), %.0f s, %.0f train images/s"
          % (0.979, 0.979, 465, 15.2, 7206.4))
  match = end_to_end.DONE_LINE.search("I1127 loop.py:482] " + line)
  assert match is not None and (match[1], match[2]) == ("15", "7206")


def test_speedups_are_higher_for_faster_oneDNN_runs_whatever_the_measure():
  results = {
      "time": "20261127-000000", "repeats": 2, "load_average_at_end": 1.0,
      "environment": {"processor": "cpu", "cpu_count": 2, "jax": "0", "onednn_available": True,
                      "load_average_1min": 0.0},
      "jobs": {
          "make run": {"onednn": [{"seconds": 20.0, "train_seconds": 10.0,
                                   "train_images_per_second": 3000.0}] * 2,
                       "xla": [{"seconds": 30.0, "train_seconds": 20.0,
                                "train_images_per_second": 1500.0}] * 2},
          "sweep run": {"onednn": [{"seconds": 10.0}, {"seconds": 14.0}],
                        "xla": [{"seconds": 24.0}, {"seconds": 24.0}]}}}
  table = end_to_end.markdown(results)
  assert ("| make run | train images/s | 3,000.0 [3,000.0, 3,000.0] | 1,500.0 [1,500.0, 1,500.0] "
          "| 2.00x |") in table
  assert "| make run | training s | 10.0 [10.0, 10.0] | 20.0 [20.0, 20.0] | 2.00x |" in table
  assert "| make run | wall s |" in table and "| 1.50x |" in table
  assert "| sweep run | wall s | 12.0 [10.0, 14.0] | 24.0 [24.0, 24.0] | 2.00x |" in table
