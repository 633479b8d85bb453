"""Evaluating a classifier `apply_fn(images) -> logits` over a large batch in fixed-size pieces."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

ApplyFn = Callable[[jax.Array], jax.Array]


def logits_in_batches(apply_fn: ApplyFn, images: jax.Array, batch_size: int = 500) -> jax.Array:
  """`apply_fn` over `images: [N, H, W, C]` in batches of at most `batch_size` -> `[N, K]`.

  The last batch is padded to `batch_size` (and the padding dropped) so that a jitted `apply_fn`
  compiles once.
  """
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
  images = jnp.asarray(images)
  count = images.shape[0]
  if count <= batch_size:
    return apply_fn(images)
  pieces = []
  for start in range(0, count, batch_size):
    batch = images[start:start + batch_size]
    missing = batch_size - batch.shape[0]
    if missing:
      batch = jnp.concatenate([batch, jnp.zeros((missing,) + batch.shape[1:], batch.dtype)])
    pieces.append(apply_fn(batch)[:batch_size - missing])
  return jnp.concatenate(pieces)


def top1(apply_fn: ApplyFn, images: jax.Array, batch_size: int = 500) -> jax.Array:
  """The predicted class of every image: `argmax_k apply_fn(images)[n, k]`, `[N]` int."""
  return jnp.argmax(logits_in_batches(apply_fn, images, batch_size), axis=-1)
