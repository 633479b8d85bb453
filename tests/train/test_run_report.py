"""The end-of-run files: summary.json and report.md with its two figures."""

import json

import ml_collections
import pytest

from cnn_jax.train import report

RECORDS = [{"step": 10, "train_loss": 1.5, "train_accuracy": 0.5},
           {"step": 20, "train_loss": 0.75, "train_accuracy": 0.8, "test_loss": 0.6,
            "test_accuracy": 0.75}]
SUMMARY = {"test_accuracy": 0.98123456, "steps": 20, "best_step": 20, "test_loss": 0.0612345}


@pytest.fixture
def written_report(tmp_path, monkeypatch):
  """Writes the report, keeping its figures (`Figure.savefig` is intercepted) to read their
  lines."""
  figures = []
  savefig = report.Figure.savefig

  def kept(figure, *args, **kwargs):
    figures.append(figure)
    return savefig(figure, *args, **kwargs)

  monkeypatch.setattr(report.Figure, "savefig", kept)
  config = ml_collections.ConfigDict(dict(model=dict(name="cnn"), dataset="mnist_offline",
                                          learning_rate=0.1))
  report.write_report(str(tmp_path), RECORDS, SUMMARY, config)
  monkeypatch.undo()
  return tmp_path, figures


def test_report_page_holds_the_rounded_summary_the_figures_and_the_config(written_report):
  workdir, _ = written_report
  page = (workdir / "report.md").read_text()
  assert page.startswith("# Run report: cnn on mnist_offline\n")
  table = page[page.index("| quantity | value |"):].split("\n\n")[0].splitlines()
  assert table[2:] == ["| best_step | 20 |", "| steps | 20 |", "| test_accuracy | 0.9812 |",
                       "| test_loss | 0.06123 |"]  # sorted by name, floats to 4 digits
  assert "![loss](loss.png)" in page and "![accuracy](accuracy.png)" in page
  config_json = page.split("```json\n")[1].split("\n```")[0]
  assert json.loads(config_json) == {"dataset": "mnist_offline", "learning_rate": 0.1,
                                     "model": {"name": "cnn"}}
  for name in ("loss.png", "accuracy.png"):
    assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_plot_each_recorded_metric_against_the_step(written_report):
  _, figures = written_report
  assert len(figures) == 2
  expected = [("cross-entropy", {"train_loss": ([10, 20], [1.5, 0.75]),
                                 "test_loss": ([20], [0.6])}),
              ("accuracy", {"train_accuracy": ([10, 20], [0.5, 0.8]),
                            "test_accuracy": ([20], [0.75])})]
  for figure, (ylabel, curves) in zip(figures, expected):
    (axes,) = figure.axes
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("step", ylabel)
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
             for line in axes.get_lines()}
    assert lines == curves
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(curves)


def test_summary_is_written_as_sorted_json(tmp_path):
  report.write_summary(str(tmp_path), SUMMARY)
  text = (tmp_path / "summary.json").read_text()
  assert json.loads(text) == SUMMARY
  assert list(json.loads(text)) == sorted(SUMMARY)
