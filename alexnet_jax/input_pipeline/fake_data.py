"""Random images made on the devices (no TensorFlow): one batch of uint8
images and labels, fed to every step, so a step is measured without input."""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np


class FakeData:
  """`InputPipeline`'s interface over random device arrays."""

  def __init__(self, config):
    self.config = config
    self.num_classes = config.model.num_classes
    self.class_names = [str(i) for i in range(self.num_classes)]
    self.local_devices = jax.local_device_count()
    per_process = config.batch_size // jax.process_count()
    self.per_device = per_process // self.local_devices
    self.num_train_examples = config.fake_data.num_train_examples
    self.steps_per_epoch = max(1, self.num_train_examples // config.batch_size)
    self.eval_per_device = (config.eval_batch_size // jax.process_count()
                            // self.local_devices)
    self.eval_steps = config.fake_data.eval_steps
    self.num_eval_examples = (self.eval_steps * self.eval_per_device
                              * self.local_devices * jax.process_count())
    self._train = self._make(self.per_device, seed=0)
    self._eval = None

  def _make(self, per_device: int, seed: int) -> dict[str, jax.Array]:
    size = self.config.image_size
    shape = (self.local_devices, per_device, size, size, 3)

    @jax.pmap
    def make(key):
      k1, k2 = jax.random.split(key)
      images = jax.random.randint(k1, shape[1:], 0, 256, jnp.int32)
      labels = jax.random.randint(k2, shape[1:2], 0, self.num_classes)
      return {'image': images.astype(jnp.uint8), 'label': labels}

    # One key per global device index, so the global batch is the same for
    # any split of the devices over processes.
    first = jax.process_index() * self.local_devices
    base = jax.random.key(self.config.seed + seed)
    keys = jax.numpy.stack([jax.random.fold_in(base, first + i)
                            for i in range(self.local_devices)])
    return make(keys)

  def train_batches(self, start_step: int = 0) -> Iterator[dict]:
    del start_step  # Every step sees the same batch.
    while True:
      yield self._train

  def eval_batches(self, ten_crop: bool | None = None) -> Iterator[dict]:
    """The eval batch `eval_steps` times; `ten_crop=True` repeats each image
    as its ten crops (config.ten_crop is not read)."""
    if self._eval is None:
      self._eval = self._make(self.eval_per_device, seed=1)
      self._eval['mask'] = np.ones((self.local_devices, self.eval_per_device),
                                   np.float32)
    batch = self._eval
    if ten_crop:
      images = batch['image'][:, :, None]
      batch = dict(batch, image=jnp.broadcast_to(
          images, images.shape[:2] + (10,) + images.shape[3:]))
    for _ in range(self.eval_steps):
      yield batch
