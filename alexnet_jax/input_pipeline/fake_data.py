"""Random images made on the devices (no TensorFlow): one batch of uint8
images and labels, fed to every step, so a step is measured without input."""

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np


class FakeData:
  """`InputPipeline`'s interface over random device arrays (the config's
  fields of these names; the last two from config.fake_data)."""

  def __init__(self, num_classes: int, image_size: int, batch_size: int,
               eval_batch_size: int, seed: int, num_train_examples: int,
               eval_steps: int):
    self.num_classes, self.image_size, self.seed = num_classes, image_size, seed
    self.class_names = [str(i) for i in range(num_classes)]
    self.local_devices = jax.local_device_count()
    per_process = batch_size // jax.process_count()
    self.num_train_examples = num_train_examples
    self.steps_per_epoch = max(1, num_train_examples // batch_size)
    self.eval_per_device = (eval_batch_size // jax.process_count()
                            // self.local_devices)
    self.eval_steps = eval_steps
    self.num_eval_examples = (eval_steps * self.eval_per_device
                              * self.local_devices * jax.process_count())
    self._train = self._make(per_process // self.local_devices, seed=0)
    self._eval = None

  def _make(self, per_device: int, seed: int) -> dict[str, jax.Array]:
    shape = (per_device, self.image_size, self.image_size, 3)

    @jax.pmap
    def make(key):
      k1, k2 = jax.random.split(key)
      images = jax.random.randint(k1, shape, 0, 256, jnp.int32)
      labels = jax.random.randint(k2, shape[:1], 0, self.num_classes)
      return {'image': images.astype(jnp.uint8), 'label': labels}

    # One key per global device index, so the global batch is the same for
    # any split of the devices over processes.
    first = jax.process_index() * self.local_devices
    base = jax.random.key(self.seed + seed)
    return make(jnp.stack([jax.random.fold_in(base, first + i)
                           for i in range(self.local_devices)]))

  def train_batches(self, start_step: int = 0) -> Iterator[dict]:
    del start_step  # Every step sees the same batch.
    while True:
      yield self._train

  def eval_batches(self, ten_crop: bool | None = None) -> Iterator[dict]:
    """The eval batch `eval_steps` times; `ten_crop=True` repeats each image
    as its ten crops."""
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
