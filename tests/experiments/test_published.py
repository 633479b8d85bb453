import pytest

from experiments import published


def test_table_quotes_the_constants():
  table = published.published_table(("cohen_welling_p4cnn_error", "he_resnet56_error"))
  lines = table.splitlines()
  assert len(lines) == 4
  assert lines[2] == ("| test error, P4CNN | 2.28% | Cohen & Welling 2016, Group Equivariant "
                      "CNNs, rotated MNIST |")
  assert "| 6.97% |" in lines[3]


def test_every_number_has_a_source_and_is_a_fraction():
  for number in published.PUBLISHED.values():
    assert number.source and 0.0 < number.value < 1.0


def test_unknown_key_is_rejected():
  with pytest.raises(ValueError, match=r"got unknown \['vgg_error'\]"):
    published.published_table(("vgg_error",))
