"""'auto's table is written from the per-op medians (`benchmarks.per_op.table_choice`)."""

import json

import pytest

from benchmarks import per_op
from cnn_jax.ops import lowering


def _record(**milliseconds):
  return {f"jax-{name} dw ms": value for name, value in milliseconds.items()}


@pytest.mark.parametrize("milliseconds, choice", [
    (dict(xla=9.0, tiled=9.5, onednn=10.0), "onednn"),  # 10% faster: within the margin
    (dict(xla=8.0, tiled=9.5, onednn=10.0), "xla"),  # 20% faster
    (dict(xla=12.0, tiled=7.0, onednn=10.0), "tiled"),
    (dict(xla=12.0, tiled=11.0, onednn=3.0), "onednn"),
    (dict(xla=12.0, tiled=11.0), "tiled"),  # oneDNN not measured: the fastest
])
def test_the_table_keeps_onednn_unless_another_lowering_is_clearly_faster(milliseconds, choice):
  assert per_op.table_choice(_record(**milliseconds), "dw") == choice


def test_write_auto_table_adds_this_isa_class_and_keeps_the_others(tmp_path):
  path = tmp_path / "table.json"
  path.write_text(json.dumps({"other-isa": {"s": dict.fromkeys(lowering.TILED_PARTS, "xla")}}))
  record = {"op": "conv", "signature": "sig"}
  for key in ("forward", "dx", "dw"):
    record |= {f"jax-xla {key} ms": 1.0, f"jax-onednn {key} ms": 2.0}
  per_op.write_auto_table([record, {"op": "pool"}], path=str(path))
  table = json.loads(path.read_text())
  assert table["other-isa"] == {"s": dict.fromkeys(lowering.TILED_PARTS, "xla")}
  assert table[lowering.cpu_isa()] == {"sig": dict.fromkeys(lowering.TILED_PARTS, "xla")}
