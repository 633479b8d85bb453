"""Tests of cnn_jax/models/inspect.py: parameter table, XLA FLOPs, receptive field."""

import re

import jax.numpy as jnp
import pytest

from cnn_jax.models import CNN, MLP, get_model
from cnn_jax.models.inspect import (count_params, forward_flops, model_receptive_field,
                                    param_shapes, param_table, traced_receptive_field)
from cnn_jax import ops
from cnn_jax.ops import onednn
from cnn_jax.ops.arithmetic import output_size


def test_param_table_rows_add_up_to_the_total():
  params = param_shapes(get_model("resnet20"), (1, 32, 32, 3))
  table = param_table(params)
  lines = table.splitlines()
  assert lines[0] == "| layer | shapes | params |"
  row_counts = [int(line.rsplit("|", 2)[1].strip().replace(",", "")) for line in lines[2:-1]]
  assert sum(row_counts) == count_params(params) == 269_722
  assert f"**{count_params(params):,}**" in lines[-1]
  assert any(line.startswith("| Block1_1/Conv1 | kernel [3, 3, 16, 16] | 2,304 |")
             for line in lines)


def test_forward_flops_of_one_conv_layer_are_twice_its_multiply_adds():
  # One 5x5 conv 3 -> 16 on 32x32 ('valid'), then a small head: the conv dominates.
  model = CNN(features=(16,), kernel_sizes=(5,), pool_after=(False,), hidden=(),
              dropout_rates=(0.0,), head="global_avg", padding="valid")
  side = output_size(32, 5)
  multiply_adds = 4 * side * side * 5 * 5 * 3 * 16
  flops = forward_flops(model, (4, 32, 32, 3))
  assert 2 * multiply_adds <= flops <= 1.1 * 2 * multiply_adds


def test_forward_flops_scale_with_the_batch():
  model = MLP(widths=(64,))
  one, eight = forward_flops(model, (1, 8, 8, 1)), forward_flops(model, (8, 8, 8, 1))
  assert eight == pytest.approx(8 * one, rel=0.05)


@pytest.mark.parametrize("name,side,size,start", [
    ("resnet18", 512, 435, 31), ("resnet50", 512, 427, 31), ("alexnet_torchvision", 224, 195, 31),
    ("alexnet", 227, 195, 33)])
def test_receptive_fields_of_the_classic_networks(name, side, size, start):
  # AlexNet 195 as in Araujo et al. (Distill 2019); 435 and 427 are the values usually quoted
  # for torchvision's ResNet-18 and ResNet-50 (TF-slim's v1 layout strides elsewhere). Start 31:
  # a stride-2 'same' layer on an even side pads (k - 1) // 2 - 1 pixels below, not (k - 1) // 2.
  field = model_receptive_field(get_model(name), (1, side, side, 3))
  assert (field.size, field.jump, field.start) == (size, 32, start)


def test_receptive_field_of_a_named_layer_and_of_the_last_spatial_one():
  model = get_model("resnet20")
  assert model_receptive_field(model, (1, 32, 32, 3)) == model_receptive_field(
      model, (1, 32, 32, 3), "block3_3") == (81, 4, 3.0)
  assert model_receptive_field(model, (1, 32, 32, 3), "conv1") == (3, 1, 0.0)
  # p4 maps are channels-last maps: the p4cnn's field is that of its 3x3 convs and 2x2 pools.
  assert model_receptive_field(get_model("p4cnn"), (1, 28, 28, 1)) == (18, 4, 1.5)


def test_receptive_field_of_a_model_without_spatial_layers_is_an_error():
  with pytest.raises(ValueError, match=re.escape("MLP")):
    model_receptive_field(MLP(), (1, 8, 8, 1))
  with pytest.raises(ValueError, match=r"layer must be one of .*'conv1'.*, got 'conv9'"):
    model_receptive_field(CNN(), (1, 28, 28, 1), "conv9")


@pytest.mark.skipif(not onednn.available(), reason="the oneDNN extension is not available")
def test_the_onednn_lowering_has_the_receptive_field_of_the_xla_one():
  kernel = jnp.ones((3, 3, 2, 4))
  fields = {lowering: traced_receptive_field(
      lambda x, lowering=lowering: ops.correlate(
          ops.correlate(x, jnp.ones((5, 5, 1, 2)), stride=2, padding="same",
                        lowering=lowering),
          kernel, kernel_dilation=2, padding=1, lowering=lowering),
      (1, 28, 28, 1)) for lowering in ("xla", "onednn")}
  assert fields["xla"] is not None and fields["onednn"] == fields["xla"]
