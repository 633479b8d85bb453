"""torchvision weights in cnn-jax: parity with torch twins keyed as torchvision, exact round trips.

The twins below reproduce torchvision's ResNet and AlexNet modules and key names (torchvision
itself is not a dependency). Random weights and random running statistics, so that every batch
norm matters in eval.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import models

torch = pytest.importorskip("torch")
nn = torch.nn

# float32 on both sides, different summation orders through ~20 layers: observed ~1e-6 of the
# logit scale (issue 17); 1e-5 leaves a 10x margin, far below the 6% the 'same' padding gave.
LOGIT_RTOL = 1e-5


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(y)))))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
  """torchvision.models.ResNet's modules and key names."""

  def __init__(self, block, stage_sizes, num_classes):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = 64
    for stage, (size, planes) in enumerate(zip(stage_sizes, (64, 128, 256, 512)), start=1):
      blocks = []
      for index in range(size):
        stride = 2 if stage > 1 and index == 0 else 1
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
          downsample = nn.Sequential(
              nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
              nn.BatchNorm2d(planes * block.expansion))
        blocks.append(block(inplanes, planes, stride, downsample))
        inplanes = planes * block.expansion
      setattr(self, f"layer{stage}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(inplanes, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for stage in range(1, 5):
      x = getattr(self, f"layer{stage}")(x)
    return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchvisionAlexNet(nn.Module):
  """torchvision.models.AlexNet's modules and key names."""

  def __init__(self, num_classes):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, num_classes))

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _twin(name, num_classes):
  torch.manual_seed(0)
  if name == "alexnet_torchvision":
    return TorchvisionAlexNet(num_classes)
  stages = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3),
            "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}[name]
  block = BasicBlock if name in ("resnet18", "resnet34") else Bottleneck
  model = TorchvisionResNet(block, stages, num_classes)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):  # non-trivial running statistics and affine
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
  return model


def _logits_both(name, size, num_classes=10):
  twin = _twin(name, num_classes).eval()
  model, variables = models.from_torchvision(name, twin.state_dict())
  x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    expected = twin(torch.from_numpy(x)).numpy()
  got = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)
  return np.asarray(got), expected


def _assert_close_relative(got, expected, rtol, what=""):
  """max |got - expected| <= rtol max |expected|: error relative to the array's scale."""
  scale = np.max(np.abs(expected))
  assert np.max(np.abs(got - expected)) <= rtol * scale, (
      f"{what}: max |difference| {np.max(np.abs(got - expected)):.3g} over scale {scale:.3g}")


def test_from_torchvision_gives_torchvision_logits_alexnet():
  # 64x64 input: the adaptive pool then upsamples 1x1 to 6x6, which fc6 still flattens.
  got, expected = _logits_both("alexnet_torchvision", 64)
  _assert_close_relative(got, expected, LOGIT_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet34", "resnet50", "resnet101", "resnet152"])
def test_from_torchvision_gives_torchvision_logits_deep_resnets(name):
  got, expected = _logits_both(name, 64)
  _assert_close_relative(got, expected, LOGIT_RTOL)


def test_torch_padding_matches_torchvision_at_every_layer():
  """Stem conv, stem pool, every block's output and the logits of ResNet-18 from torchvision's
  weights, at an even size (where 'same' would pad strided layers asymmetrically) and an odd one
  (where the output sizes could differ)."""
  twin = _twin("resnet18", 10).eval()
  model, variables = models.from_torchvision("resnet18", twin.state_dict())
  outputs = {}
  hooks = [getattr(twin, module).register_forward_hook(
      lambda _, __, out, name=name: outputs.__setitem__(name, out.detach().numpy()))
           for module, name in (("relu", "conv1"), ("maxpool", "pool1"), ("fc", "logits"))]
  for stage in range(1, 5):
    for index in range(2):
      hooks.append(getattr(twin, f"layer{stage}")[index].register_forward_hook(
          lambda _, __, out, name=f"block{stage}_{index + 1}": outputs.__setitem__(
              name, out.detach().numpy())))
  for size in (32, 33):
    x = np.random.default_rng(size).normal(size=(1, 3, size, size)).astype(np.float32)
    outputs.clear()
    with torch.no_grad():
      twin(torch.from_numpy(x))
    _, state = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False,
                           mutable=["intermediates"])
    assert len(outputs) == 11
    for name, expected in outputs.items():
      got = np.asarray(state["intermediates"][name][0])
      got = got.transpose(0, 3, 1, 2) if got.ndim == 4 else got
      # float32, a few layers deep: the layer's scale times 1e-5 (see LOGIT_RTOL).
      assert got.shape == expected.shape, (size, name)
      _assert_close_relative(got, expected, LOGIT_RTOL, f"{name} at {size}x{size}")
  for hook in hooks:
    hook.remove()


def test_unbiased_batch_norm_variance_matches_torch_running_statistics():
  """One training step of ResNet-18 on a batch of 2 at 32x32 (the last stage sees n = 2 values
  per channel, where unbiased and biased differ by 2x)."""
  twin = _twin("resnet18", 10).train()
  model, variables = models.from_torchvision("resnet18", twin.state_dict())
  x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    twin(torch.from_numpy(x))
  _, updated = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=True,
                           mutable=["batch_stats"])
  exported = models.to_torchvision("resnet18", {**variables, **updated})
  for key, value in twin.state_dict().items():
    if key.endswith(("running_mean", "running_var")):
      # Training normalizes by the std of n = 2 values per channel at the last stage, which
      # amplifies float32 rounding (observed 2.6e-5 of the scale): 1e-4. A biased running
      # variance is off by 0.1 / (n - 1) of the batch variance: ~10% at n = 2, 1% at n = 8.
      _assert_close_relative(exported[key], value.numpy(), 1e-4, key)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "alexnet_torchvision"])
def test_round_trips_are_exact(name):
  twin = _twin(name, 10)
  state_dict = {k: v.numpy() for k, v in twin.state_dict().items()}
  _, variables = models.from_torchvision(name, twin.state_dict())
  exported = models.to_torchvision(name, variables)
  assert list(exported) == list(state_dict), "not in torchvision's order"
  for key, value in state_dict.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  _, again = models.from_torchvision(name, exported)
  jax.tree.map(np.testing.assert_array_equal, again, variables)
  twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in exported.items()}, strict=True)


def test_from_torchvision_names_missing_unexpected_and_misshaped_keys():
  state_dict = {k: v.numpy() for k, v in _twin("resnet18", 10).state_dict().items()}
  del state_dict["layer2.0.bn1.running_var"]
  state_dict["layer9.0.conv1.weight"] = np.zeros(1)
  state_dict["layer1.1.conv2.weight"] = np.zeros((64, 64, 5, 5), np.float32)
  with pytest.raises(ValueError) as error:
    models.from_torchvision("resnet18", state_dict)
  message = str(error.value)
  assert "missing keys ['layer2.0.bn1.running_var']" in message
  assert "unexpected keys ['layer9.0.conv1.weight']" in message
  assert "layer1.1.conv2.weight: expected (64, 64, 3, 3), got (64, 64, 5, 5)" in message
  with pytest.raises(ValueError, match="name must be one of"):
    models.from_torchvision("resnet20", state_dict)
