"""Tests of cnn_jax/models/registry.py: every name builds a model with the common contract."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.models import MODEL_NAMES, get_model

EXPECTED_NAMES = {
    "mlp", "cnn", "p4cnn", "alexnet", "alexnet_torchvision", "resnet18", "resnet34", "resnet50",
    "resnet101", "resnet152", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "plain18", "plain34", "plain20", "plain32", "plain44", "plain56", "plain110"}


def _input_shape(name):
  if name in ("mlp", "cnn", "p4cnn"):
    return (2, 28, 28, 1)
  if name == "alexnet":
    return (2, 227, 227, 3)
  if name in ("alexnet_torchvision", "resnet18", "resnet34", "resnet50", "resnet101",
              "resnet152", "plain18", "plain34"):
    return (2, 224, 224, 3)
  return (2, 32, 32, 3)


def test_model_names_are_the_documented_sorted_tuple():
  assert isinstance(MODEL_NAMES, tuple)
  assert list(MODEL_NAMES) == sorted(MODEL_NAMES)
  assert set(MODEL_NAMES) == EXPECTED_NAMES


# Tracing the deepest models takes several seconds each.
DEEP = {"resnet101", "resnet152", "resnet110", "plain110"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in DEEP else name
    for name in sorted(EXPECTED_NAMES)])
def test_every_model_maps_images_to_float32_logits_in_train_and_eval(name):
  model = get_model(name, num_classes=6)
  x = jax.ShapeDtypeStruct(_input_shape(name), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  for train in (False, True):
    logits, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=train, rngs={"dropout": jax.random.key(1)},
                                 mutable=["batch_stats", "intermediates"]), variables, x)
    assert logits.shape == (2, 6) and logits.dtype == jnp.float32
    assert state["intermediates"]["logits"][0].shape == (2, 6)
  has_batch_norm = name.startswith(("resnet", "plain", "p4cnn"))
  assert ("batch_stats" in variables) == has_batch_norm


def test_unknown_name_lists_the_valid_names():
  with pytest.raises(ValueError, match="resnet18.*") as error:
    get_model("resnet19")
  assert "'resnet19'" in str(error.value)
  assert all(name in str(error.value) for name in MODEL_NAMES)


def test_unknown_field_names_the_field_and_the_valid_ones():
  with pytest.raises(ValueError, match="num_clases") as error:
    get_model("cnn", num_clases=10)
  assert "num_classes" in str(error.value)


def test_overrides_reach_the_module():
  model = get_model("resnet20", num_classes=100, padding="circular", axis_name="batch")
  assert (model.num_classes, model.padding, model.axis_name) == (100, "circular", "batch")
  assert get_model("plain56").residual is False and get_model("resnet56").residual is True


@pytest.mark.parametrize("name, overrides, shape", [
    ("mlp", {}, (2, 28, 28, 1)), ("cnn", {"features": (4, 8)}, (2, 28, 28, 1)),
    ("resnet20", {"widths": (4, 8, 8)}, (2, 32, 32, 3)),
    ("p4cnn", {"features": (2, 2, 2)}, (2, 28, 28, 1)),
    ("alexnet_torchvision", {"num_classes": 7}, (1, 224, 224, 3))])
def test_every_recorded_layer_is_sown_and_open_to_an_additive_perturbation(name, overrides,
                                                                           shape):
  model = get_model(name, **overrides)
  x = jax.random.uniform(jax.random.key(0), shape)
  variables = model.init(jax.random.key(1), x, train=False)
  assert "perturbations" not in variables
  logits, state = model.apply(variables, x, train=False,
                              mutable=["intermediates", "perturbations"])
  sown = {path for path in flax.traverse_util.flatten_dict(state["intermediates"])}
  assert set(flax.traverse_util.flatten_dict(state["perturbations"])) == sown
  assert sown and ("logits",) in sown
  # A perturbation of the logits layer adds to the logits; one of the first layer moves them.
  zeros = jax.tree.map(jnp.zeros_like, state["perturbations"])
  delta = jax.random.normal(jax.random.key(2), logits.shape)
  shifted = model.apply({**variables, "perturbations": {**zeros, "logits": delta}}, x,
                        train=False)
  np.testing.assert_allclose(shifted, logits + delta, rtol=1e-5, atol=1e-5)
  first = next(iter(state["perturbations"]))
  moved = model.apply({**variables, "perturbations": {
      **zeros, first: jnp.ones_like(zeros[first])}}, x, train=False)
  assert float(jnp.max(jnp.abs(moved - logits))) > 1e-4


@pytest.mark.parametrize("name, shape", [("mlp", (3, 8, 8, 1)), ("cnn", (3, 28, 28, 1)),
                                         ("p4cnn", (3, 28, 28, 1)), ("resnet20", (3, 32, 32, 3))])
def test_a_non_finite_input_gives_nan_logits_for_that_example_only(name, shape):
  # Under jit with the suite's XLA:CPU flags (conftest: runtime.setup), YNNPACK's fused
  # reductions skip NaN: without the models' own rule the all-NaN image came out finite.
  model = get_model(name)
  x = jnp.ones(shape).at[0].set(jnp.nan).at[1, 2, 3, 0].set(jnp.inf)
  variables = model.init(jax.random.key(0), jnp.ones(shape), train=False)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert np.isnan(logits[:2]).all()
  assert np.isfinite(logits[2]).all()
