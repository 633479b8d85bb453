"""Experiment 3 (equivariance by construction): plan, the background-padding control, execute on
the smoke config, and the report's contrasts from fixture results."""

import functools
import math
import os

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import models, ops
from experiments import equivariance
from experiments.configs import exp_sweep
from experiments.in_memory_training import load_digits, prng_key
from experiments.runs import Run


@pytest.mark.parametrize("field, value, message", [
    ("seeds", (), "config.equivariance.seeds must be a non-empty list"),
    ("shifts", ((1, 2, 3),), r"config.equivariance.shifts must be a non-empty list of \(dy, dx\)"),
    ("shifts", (), r"config.equivariance.shifts must be a non-empty list of \(dy, dx\)"),
])
def test_bad_settings_are_rejected(field, value, message):
  config = exp_sweep.get_config()
  config.equivariance[field] = value
  with pytest.raises(ValueError, match=message):
    equivariance.validate(config)


def test_plan_has_every_variant_at_every_seed_and_five_seeds_by_default():
  config = exp_sweep.get_config()
  runs = equivariance.plan(config)
  assert len(config.equivariance.seeds) >= 5
  assert len(runs) == len(equivariance.VARIANTS) * len(config.equivariance.seeds)
  assert len({run.name for run in runs}) == len(runs)


def test_variants_of_a_family_share_their_weights_at_a_seed():
  """What makes the report's paired tests paired."""
  variants = equivariance.VARIANTS
  for control in ("conv", "pool"):  # the controls change the input's padding, not the model
    assert variants[f"{control}_background_padding"].model == (
        variants[f"{control}_zero_padding"].model)
  images = jnp.zeros((1, 8, 8, 1))  # the parameter shapes do not depend on the image size
  params = {name: models.get_model("cnn", num_classes=10, **variants[name].model).init(
      prng_key(3), images, train=False)["params"]
            for name in ("conv_circular", "conv_zero_padding", "pool_circular",
                         "blurpool_circular")}
  jax.tree.map(np.testing.assert_array_equal, params["conv_zero_padding"],
               params["conv_circular"])
  jax.tree.map(np.testing.assert_array_equal, params["blurpool_circular"],
               params["pool_circular"])


@functools.cache
def _zero_padded_conv1():
  """The conv stack's variables and a jitted `(variables, x) -> conv1 activation`."""
  model = models.get_model("cnn", num_classes=10,
                           **equivariance.VARIANTS["conv_zero_padding"].model)
  variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 10, 10, 1)), train=False)
  conv1 = jax.jit(lambda variables, x: model.apply(
      variables, x, train=False, mutable=["intermediates"])[1]["intermediates"]["conv1"][0])
  return variables, conv1


@jax.jit
def _padded_conv1(params, x, background):
  """Explicitly: x padded with the background value, a 'valid' 3x3 correlation, ReLU."""
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=background)
  return jax.nn.relu(ops.correlate(padded, params["kernel"], padding="valid") + params["bias"])


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(background=st.floats(-2.0, 2.0), seed=st.integers(0, 100))
def test_background_padding_variables_pad_the_input_with_the_background(background, seed):
  variables, conv1 = _zero_padded_conv1()
  x = jax.random.normal(jax.random.PRNGKey(seed), (2, 10, 10, 1))
  shifted = equivariance.background_padding_variables(variables, jnp.array([background]))
  expected = _padded_conv1(variables["params"]["Conv1"], x, background)
  # float32 sums of 9 products of O(1) values, reassociated by the bias identity.
  np.testing.assert_allclose(conv1(shifted, x - background), expected, atol=1e-5)


def test_network_stride_is_the_last_spatial_layers():
  layer = lambda stride: type("Layer", (), {"stride": stride})()
  assert equivariance.network_stride([layer(1), layer(2), layer(4), layer(None)]) == 4
  assert equivariance.network_stride([layer(None)]) == 1


@pytest.fixture(scope="module")
def smoke_metrics():
  config = exp_sweep.get_config("smoke")
  digits = load_digits()
  return {variant: equivariance.execute(Run(equivariance.NAME, variant, 0, {"variant": variant}),
                                        config, digits)
          for variant in ("conv_circular", "conv_zero_padding", "pool_circular")}


def test_circular_stride_one_stack_is_equivariant_and_zero_padding_is_not(smoke_metrics):
  circular, zero = smoke_metrics["conv_circular"], smoke_metrics["conv_zero_padding"]
  # float32 rounding of sums over 8-16 channels and 28x28 positions.
  assert max(layer["on_grid"] for layer in circular["layers"]) < 1e-5
  assert all(math.isnan(layer["off_grid"]) for layer in circular["layers"])
  assert zero["logit_invariance"]["on_grid"] > 1e-3
  assert [layer["name"] for layer in zero["layers"]] == ["conv1", "conv2", "global_pool",
                                                        "logits"]
  assert len(zero["layers"][0]["per_shift"]) == len(zero["shifts"]) == 2
  assert -0.5 < zero["background"] < -0.3  # -mean / std of the digits


def test_pooled_circular_stack_is_invariant_on_its_grid_only(smoke_metrics):
  pooled = smoke_metrics["pool_circular"]
  assert pooled["network_stride"] == 4
  logits = pooled["logit_invariance"]
  # Smoke shifts: (1, 0) off every grid, (4, 4) on the stride-4 grid.
  assert logits["on_grid"] < 1e-5 and logits["off_grid"] > 1e-3


def _fake_results(values: dict[str, tuple[float, float]], seeds=(0, 1, 2, 3, 4)) -> list[dict]:
  """Results whose logit errors (on grid, off grid) are `values[variant]` plus seed noise."""
  rng = np.random.default_rng(0)
  results = []
  for seed in seeds:
    for variant, (on_grid, off_grid) in values.items():
      pooled = variant in ("pool_circular", "blurpool_circular", "pool_zero_padding",
                           "pool_background_padding")
      jitter = lambda v: v * (1 + 0.05 * rng.standard_normal()) if v else v
      spatial = ([("conv1", 1), ("pool1", 2), ("conv2", 2), ("pool2", 4)] if pooled
                 else [("conv1", 1), ("conv2", 1)])
      layers = [{"name": name, "stride": stride, "grid": stride, "on_grid": 0.0,
                 "off_grid": math.nan if stride == 1 else 0.4, "per_shift": []}
                for name, stride in spatial]
      logits = {"on_grid": jitter(on_grid), "off_grid": jitter(off_grid)}
      layers += [{"name": name, "stride": None, "grid": 4 if pooled else 1, **logits,
                  "per_shift": []} for name in ("global_pool", "logits")]
      results.append({"run": {"experiment": "equivariance", "name": f"{variant}_seed{seed}",
                              "seed": seed, "options": {"variant": variant}},
                      "metrics": {"shifts": [[1, 0], [4, 4]],
                                  "network_stride": 4 if pooled else 1, "background": -0.42,
                                  "layers": layers, "logit_invariance": logits}})
  return results


def test_report_computes_verdicts_and_draws_its_figure(tmp_path):
  results = _fake_results({
      "conv_circular": (0.0, math.nan), "conv_zero_padding": (1e-2, math.nan),
      "conv_background_padding": (1e-2, math.nan), "pool_circular": (1e-7, 5e-2),
      "blurpool_circular": (1e-7, 5e-3), "pool_zero_padding": (5e-2, 6e-2),
      "pool_background_padding": (5e-2, 6e-2)})
  text = equivariance.report(results, exp_sweep.get_config(), str(tmp_path))
  verdicts = {line.split(" | ")[0].lstrip("| "): line.rsplit(" | ", 1)[1].rstrip(" |")
              for line in text.splitlines() if line.count(" | ") == 6 and "verdict" not in line}
  assert verdicts["Zero padding breaks the invariance of the stride-1 circular stack"] == (
      "supported")
  assert verdicts["Blur pooling lowers the off-grid error of max pooling"] == "supported"
  assert verdicts["Max pooling is invariant on its grid only"] == "supported"
  # Equal means up to noise: not a significant difference, reported as such.
  assert verdicts["Padding with the background value lowers the zero-padded error (pooled, on "
                  "grid)"] == "not supported"
  assert "consistency" not in text.split("Relative invariance")[1]
  assert f"![per-layer equivariance error at random initialization]({equivariance.FIGURE})" in text
  assert os.path.exists(tmp_path / equivariance.FIGURE)


def test_report_with_one_seed_says_the_contrasts_did_not_run(tmp_path):
  results = _fake_results({"conv_circular": (0.0, math.nan),
                           "conv_zero_padding": (1e-2, math.nan)}, seeds=(0,))
  text = equivariance.report(results, exp_sweep.get_config("smoke"), str(tmp_path))
  assert text.count("not run (fewer than 2 seeds per cell)") == len(equivariance.CONTRASTS)
