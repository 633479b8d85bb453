"""Flax Linen models whose convolutions and pooling go through `cnn_jax.ops`.

`get_model(name, **overrides)` builds any model by name; `MODEL_NAMES` lists them. Every model is
called as `model.apply(variables, x, train=...)` with `x: [N, H, W, C]` and returns float32
logits `[N, num_classes]`; batch norm state lives in 'batch_stats', dropout draws from the
'dropout' rng, and per-layer activations are sown into 'intermediates' and open to additive
'perturbations' (`layers.record_layer`). `from_torchvision` / `to_torchvision` convert
torchvision weights (`torchvision_weights`).
"""

from cnn_jax.models.alexnet import AlexNet, AlexNetTorchvision, apply_on_two_devices
from cnn_jax.models.baselines import CNN, MLP, mlp_param_count, mlp_width_for_params
from cnn_jax.models.layers import Conv
from cnn_jax.models.p4cnn import P4CNN, P4Conv
from cnn_jax.models.registry import MODEL_NAMES, get_model, model_fields
from cnn_jax.models.resnet import (BasicBlock, BottleneckBlock, Plain18, Plain20, Plain32,
                                   Plain34, Plain44, Plain56, Plain110, ResidualBlock, ResNet,
                                   ResNet18, ResNet20, ResNet32, ResNet34, ResNet44, ResNet50,
                                   ResNet56, ResNet101, ResNet110, ResNet152)
from cnn_jax.models.torchvision_weights import (TORCHVISION_NAMES, from_torchvision,
                                                parity_model, to_torchvision)

__all__ = [
    "MODEL_NAMES", "get_model", "model_fields", "Conv", "MLP", "CNN", "mlp_param_count",
    "mlp_width_for_params", "P4CNN", "P4Conv",
    "AlexNet", "AlexNetTorchvision", "apply_on_two_devices", "ResNet", "ResidualBlock",
    "BasicBlock",
    "BottleneckBlock", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152", "ResNet20",
    "ResNet32", "ResNet44", "ResNet56", "ResNet110", "Plain18", "Plain34", "Plain20", "Plain32",
    "Plain44", "Plain56", "Plain110", "TORCHVISION_NAMES", "from_torchvision", "to_torchvision",
    "parity_model",
]
