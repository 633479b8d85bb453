"""'auto's table is written from the per-op medians (`benchmarks.per_op.table_choice`); the
per-op benchmark's torch blur pool is the op it is compared with."""

import json

import numpy as np
import pytest

from benchmarks import per_op
from cnn_jax import ops
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


@pytest.mark.parametrize("shape", per_op.BLUR_SHAPES + (per_op.BlurShape((2, 9, 7, 3), 3, 4),))
def test_torch_blur_pool_computes_what_blur_pool_does(shape):
  # The benchmark compares the same op: torch's form equals `ops.blur_pool` (float32 sums of
  # at most 16 dyadic-weighted terms: rounding of order 1e-6).
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).standard_normal(shape.x).astype(np.float32)
  expected = ops.blur_pool(x, stride=shape.stride, filter_size=shape.filter_size)
  got = per_op.torch_blur_pool(shape)(torch.from_numpy(x).permute(0, 3, 1, 2))
  np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-6)
