import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.analysis.predictions import logits_in_batches, top1


def test_batched_logits_equal_one_call():
  images = jnp.arange(7 * 2 * 2 * 1, dtype=jnp.float32).reshape(7, 2, 2, 1)
  apply_fn = lambda x: jnp.stack([x.sum(axis=(1, 2, 3)), -x.max(axis=(1, 2, 3))], axis=-1)
  np.testing.assert_allclose(logits_in_batches(apply_fn, images, batch_size=3), apply_fn(images))
  np.testing.assert_array_equal(top1(apply_fn, images, batch_size=4),
                                jnp.argmax(apply_fn(images), -1))


def test_batches_have_one_shape():
  shapes = set()
  apply_fn = lambda x: (shapes.add(x.shape), x.reshape(x.shape[0], -1))[1]
  logits_in_batches(apply_fn, jnp.zeros((10, 2, 2, 1)), batch_size=4)
  assert shapes == {(4, 2, 2, 1)}


def test_bad_batch_size_is_rejected():
  with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
    logits_in_batches(lambda x: x, jnp.zeros((2, 2, 2, 1)), batch_size=0)
