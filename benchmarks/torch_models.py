"""PyTorch twins of the benchmarked cnn-jax models: the same layers, shapes and parameter counts.

They exist only as a speed reference (the optional `bench` extra installs torch). Layout NCHW
(or channels-last memory format, chosen by the benchmark); the flatten before a dense layer
therefore orders features differently from the NHWC Flax models, which changes no cost.

* `MnistCNN`: conv32 3x3 -> ReLU -> conv64 3x3 -> ReLU -> max-pool 2 -> dropout 0.25 -> fc128 ->
  ReLU -> dropout 0.5 -> fc10 ('valid' convs; 1,199,882 parameters on 28x28x1).
* `ResNet` with `cifar_option_a=True`: He et al.'s CIFAR ResNet-6n+2 (16-32-64, parameter-free
  option A shortcuts; ResNet-20: 269,722 parameters).
* `ResNet` with `BasicBlock`: ResNet-18 with an ImageNet stem (7x7/2 conv, 3x3/2 max-pool;
  11,689,512 parameters for 1000 classes) or a CIFAR stem (3x3 conv, no pooling).
* `AlexNetTorchvision`: torchvision's layout (61,100,840 parameters for 1000 classes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MnistCNN(nn.Module):
  """`x: [N, 1, 28, 28]` -> logits `[N, 10]`."""

  def __init__(self, num_classes: int = 10):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(inplace=True), nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.features(x)


class BasicBlock(nn.Module):
  """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN (+ shortcut) -> ReLU.

  The shortcut, where the shape changes: a 1x1 conv + BN (option B), or with `option_a` the
  parameter-free subsample-and-zero-pad of He et al.'s CIFAR networks.
  """

  def __init__(self, channels_in: int, channels_out: int, stride: int, option_a: bool):
    super().__init__()
    self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(channels_out)
    self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels_out)
    self.stride, self.extra_channels = stride, channels_out - channels_in
    self.option_a = option_a
    self.projection = None
    if (stride != 1 or channels_in != channels_out) and not option_a:
      self.projection = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                                      nn.BatchNorm2d(channels_out))

  def shortcut(self, x: torch.Tensor) -> torch.Tensor:
    if self.projection is not None:
      return self.projection(x)
    if self.stride == 1 and self.extra_channels == 0:
      return x
    x = x[:, :, ::self.stride, ::self.stride]
    return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)), inplace=True)
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
  """A ResNet of `BasicBlock`s: stem -> stages (stage i > 1 starts at stride 2) -> GAP -> fc.

  Args:
    stage_sizes: blocks per stage.
    widths: channels per stage.
    num_classes: size of the output layer.
    stem: 'imagenet' (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or 'cifar' (3x3 conv, BN, ReLU).
    cifar_option_a: parameter-free shortcuts (He et al.'s CIFAR networks).
  """

  def __init__(self, stage_sizes, widths, num_classes: int, stem: str,
               cifar_option_a: bool = False):
    super().__init__()
    if stem == "imagenet":
      self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                nn.MaxPool2d(3, 2, 1))
    else:
      self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    blocks, channels = [], widths[0]
    for stage, (size, width) in enumerate(zip(stage_sizes, widths)):
      for index in range(size):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(BasicBlock(channels, width, stride, cifar_option_a))
        channels = width
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(channels, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.blocks(self.stem(x))
    return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class AlexNetTorchvision(nn.Module):
  """torchvision's AlexNet: `x: [N, 3, 224, 224]` -> `[N, num_classes]`."""

  def __init__(self, num_classes: int = 1000):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build(name: str, num_classes: int) -> nn.Module:
  """The twin of `cnn_jax.models.get_model(name)` for the benchmark names of `MODELS`."""
  if name == "cnn":
    return MnistCNN(num_classes)
  if name == "resnet20":
    return ResNet((3, 3, 3), (16, 32, 64), num_classes, "cifar", cifar_option_a=True)
  if name == "resnet18_cifar":
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, "cifar")
  if name == "resnet18":
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, "imagenet")
  if name == "alexnet_torchvision":
    return AlexNetTorchvision(num_classes)
  raise ValueError(f"no torch twin for model {name!r}; known: cnn, resnet20, resnet18_cifar, "
                   f"resnet18, alexnet_torchvision")


def parameter_count(model: nn.Module) -> int:
  """Trainable parameters (BN running statistics are buffers, not counted)."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)
