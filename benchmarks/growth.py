"""How cost grows: images/s and memory against batch and image size; FLOPs against ResNet depth.

Depth: XLA's `cost_analysis` FLOPs of one 224x224 forward pass of ResNet-18 ... 152, divided by 2
(one multiply-add = 2 FLOPs), next to He et al. 2016 Table 1 (1.8, 3.6, 3.8, 7.6, 11.3 GMACs).
XLA also counts BN, ReLU, pooling and the fc layer, so its figures sit slightly above the table's.
"""

from __future__ import annotations

import functools
import statistics

import jax

from benchmarks import environment, steps
from cnn_jax import models

HE_ET_AL_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6,
                  "resnet152": 11.3}


def depth_records() -> list[dict]:
  """GMACs of one 224x224 image through each ImageNet ResNet, XLA's count and the paper's."""
  records = []
  for name, published in HE_ET_AL_GMACS.items():
    model = models.get_model(name)
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jax.numpy.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               {"params": jax.random.key(0)}, images)
    lowered = jax.jit(functools.partial(model.apply, train=False)).lower(variables, images)
    flops = steps._first(lowered.cost_analysis())["flops"]
    records.append({"section": "depth", "model": name, "xla_gmacs": flops / 2e9,
                    "he_et_al_gmacs": published})
  return records


def size_records(model_name: str, lowering_name: str, batches, image_sizes,
                 repeats: int) -> list[dict]:
  """Train images/s (JAX and torch, interleaved) and XLA step memory per batch and image size."""
  spec = steps.MODELS[model_name]
  records = []
  settings = ([(batch, spec.image_shape[0]) for batch in batches]
              + [(spec.batch, size) for size in image_sizes if size != spec.image_shape[0]])
  for batch, size in settings:
    image_shape = (size, size, spec.image_shape[2])
    runner = steps.jax_runner(spec, lowering_name, batch=batch, image_shape=image_shape)
    twin = steps.torch_runner(spec, model_name, batch=batch, image_shape=image_shape)
    jax_times, torch_times = [], []
    for _ in range(repeats):
      jax_times.append(environment.median_seconds(runner.train, 1))
      torch_times.append(environment.median_seconds(twin.train, 1))
    jax_seconds, torch_seconds = statistics.median(jax_times), statistics.median(torch_times)
    records.append({
        "section": "growth", "model": model_name, "lowering": lowering_name, "batch": batch,
        "image_size": size, "jax_train_images_per_s": batch / jax_seconds,
        "torch_train_images_per_s": batch / torch_seconds,
        "ratio": torch_seconds / jax_seconds, "jax_train_memory_mb": runner.train_memory_mb})
  return records
