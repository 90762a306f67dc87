"""Input pipeline: TFDS split -> per-process shard -> decode -> augment -> batch.

This is the only module that imports TensorFlow and TFDS, and it does so
lazily, so the model, the train step and fake-data runs need JAX alone.

Training order is deterministic and resumable: epoch `e` shuffles with a seed
derived from (config.seed, e), each example's augmentation draws from a
stateless seed derived from (config.seed, e, its position in the epoch), so
restarting at step `s` rebuilds epoch `s // steps_per_epoch` and skips the
examples already consumed, without decoding them.

Images leave the pipeline as uint8 NHWC; normalisation happens on the device.
Batches have shape [local_devices, per_device_batch, ...].
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Iterator

import jax
import numpy as np

# PCA lighting noise (SPEC.md; fb.resnet.torch's constants for pixels in [0, 1]).
LIGHTING_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
LIGHTING_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)

EMBEDDED_DATASETS = ('alexnet_shapes',)


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Keep TensorFlow off any accelerator; JAX owns it.
  tf.config.set_visible_devices([], 'GPU')
  return tf


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def get_builder(config):
  """The TFDS builder for `config.dataset`, prepared (built) when embedded."""
  tfds = _tfds()
  _tf()
  name = config.dataset
  if name in EMBEDDED_DATASETS:
    from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
    return shapes.build(config.get('data_dir'))
  kwargs = {}
  if config.get('data_dir'):
    kwargs['data_dir'] = config.data_dir
  try:
    builder = tfds.builder(name, **kwargs)
  except Exception as e:  # TFDS raises its own DatasetNotFoundError.
    if 'not found' in str(e).lower():
      close = difflib.get_close_matches(name, tfds.list_builders(), n=5)
      raise ValueError(f'dataset={name!r} is not a TFDS dataset; close '
                       f'matches: {close}') from None
    raise
  return builder


@dataclasses.dataclass
class Preprocess:
  """The paper's preprocessing, in TensorFlow ops (config fields in comments)."""
  image_size: int  # config.image_size: the crop fed to the network (227).
  resize_size: int  # config.resize_size: shorter side before cropping (256).
  resize_mode: str  # 'crop' (paper) or 'squash' (Caffe): to resize_size^2.
  random_crop: bool  # config.augment.random_crop
  flip: bool  # config.augment.flip
  lighting_std: float  # config.augment.lighting_std; 0 disables.

  def decode_and_resize(self, image_bytes):
    """JPEG bytes -> uint8 [resize_size, resize_size, 3]."""
    tf = _tf()
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    size = self.resize_size
    if self.resize_mode == 'squash':
      image = tf.image.resize(image, (size, size), antialias=True)
    else:
      shape = tf.cast(tf.shape(image)[:2], tf.float32)
      scale = size / tf.reduce_min(shape)
      new = tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32)
      new = tf.maximum(new, size)
      image = tf.image.resize(image, new, antialias=True)
      top = (new[0] - size) // 2
      left = (new[1] - size) // 2
      image = image[top:top + size, left:left + size]
    image = tf.ensure_shape(image, (size, size, 3))
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

  def train_augment(self, image, seed):
    """Random crop, flip and lighting noise from a stateless seed [2]."""
    tf = _tf()
    seeds = tf.random.experimental.stateless_split(seed, 3)
    size = self.image_size
    if self.random_crop:
      image = tf.image.stateless_random_crop(image, (size, size, 3), seeds[0])
    else:
      image = self.center_crop(image)
    if self.flip:
      image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if self.lighting_std > 0:
      alpha = tf.random.stateless_normal((3,), seeds[2], stddev=self.lighting_std)
      rgb = tf.linalg.matvec(LIGHTING_EIGVEC, alpha * LIGHTING_EIGVAL) * 255.0
      image = tf.cast(image, tf.float32) + rgb
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image

  def center_crop(self, image):
    offset = (self.resize_size - self.image_size) // 2
    return image[offset:offset + self.image_size,
                 offset:offset + self.image_size]


def preprocess_from_config(config) -> Preprocess:
  return Preprocess(image_size=config.image_size,
                    resize_size=config.resize_size,
                    resize_mode=config.resize_mode,
                    random_crop=config.augment.random_crop,
                    flip=config.augment.flip,
                    lighting_std=config.augment.lighting_std)


class TFDSData:
  """Train and eval batches of a TFDS dataset for this process."""

  def __init__(self, config, builder=None):
    tfds = _tfds()
    self.tf = _tf()
    self.config = config
    self.builder = builder if builder is not None else get_builder(config)
    info = self.builder.info
    self.num_classes = info.features['label'].num_classes
    self.class_names = list(info.features['label'].names)
    self.preprocess = preprocess_from_config(config)
    nproc, pid = jax.process_count(), jax.process_index()
    self.local_devices = jax.local_device_count()
    self.per_process_batch = config.batch_size // nproc
    self.eval_per_process_batch = config.eval_batch_size // nproc

    train_splits = tfds.even_splits(config.train_split, n=nproc,
                                    drop_remainder=True)
    self.train_split = train_splits[pid]
    self.num_train_examples = info.splits[train_splits[0]].num_examples
    self.steps_per_epoch = self.num_train_examples // self.per_process_batch
    if self.steps_per_epoch < 1:
      raise ValueError(
          f'batch_size={config.batch_size} is larger than the '
          f'{config.train_split!r} split of {config.dataset!r} '
          f'({self.num_train_examples * nproc} examples).')
    eval_splits = tfds.even_splits(config.eval_split, n=nproc,
                                   drop_remainder=False)
    self.eval_split = eval_splits[pid]
    self.num_eval_examples = info.splits[config.eval_split].num_examples
    largest = max(info.splits[s].num_examples for s in eval_splits)
    self.eval_steps = math.ceil(largest / self.eval_per_process_batch)
    self._train_base = None
    self._eval_base = None

  def _decoded(self, split, cache: bool):
    tfds, tf = _tfds(), self.tf
    ds = self.builder.as_dataset(
        split=split, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False))
    if cache:  # Cache decoded, resized images (small datasets).
      ds = ds.map(lambda ex: {'image': self.preprocess.decode_and_resize(
          ex['image']), 'label': ex['label']},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      ds = ds.cache()
    return ds

  def _image(self, image, cached: bool):
    return image if cached else self.preprocess.decode_and_resize(image)

  def train_batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches, starting at global step `start_step`."""
    tf, cfg = self.tf, self.config
    if self._train_base is None:
      self._train_base = self._decoded(self.train_split, cfg.cache)
    cached = cfg.cache
    epoch, skip_batches = divmod(start_step, self.steps_per_epoch)
    examples = self.steps_per_epoch * self.per_process_batch
    while True:
      epoch_seed = [cfg.seed, epoch]
      ds = self._train_base.shuffle(
          cfg.shuffle_buffer, seed=hash_seed(cfg.seed, epoch, jax.process_index()),
          reshuffle_each_iteration=False)
      ds = ds.take(examples).enumerate()
      ds = ds.skip(skip_batches * self.per_process_batch)

      def augment(index, ex, epoch_seed=epoch_seed):
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant(epoch_seed, tf.int64),
            index + jax.process_index() * examples)
        image = self.preprocess.train_augment(self._image(ex['image'], cached),
                                              seed)
        return {'image': image, 'label': ex['label']}

      ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
      ds = ds.batch(self.per_process_batch, drop_remainder=True)
      ds = ds.prefetch(tf.data.AUTOTUNE)
      for batch in ds.as_numpy_iterator():
        yield self._shard(batch['image'], batch['label'])
      epoch += 1
      skip_batches = 0

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """Every example of this process's eval shard once, padded and masked.

    Every process yields `self.eval_steps` batches (padding with fully masked
    batches), so collective eval steps stay in lockstep.
    """
    tf = self.tf
    if self._eval_base is None:
      self._eval_base = self._decoded(self.eval_split, self.config.cache)
    cached = self.config.cache

    def center(ex):
      image = self.preprocess.center_crop(self._image(ex['image'], cached))
      return {'image': image, 'label': ex['label']}

    ds = self._eval_base.map(center, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)
    ds = ds.batch(self.eval_per_process_batch).prefetch(tf.data.AUTOTUNE)
    size = self.config.image_size
    count = 0
    for batch in ds.as_numpy_iterator():
      count += 1
      yield self._pad_and_shard(batch['image'], batch['label'])
    empty = np.zeros((0, size, size, 3), np.uint8)
    for _ in range(self.eval_steps - count):
      yield self._pad_and_shard(empty, np.zeros((0,), np.int64))

  def _pad_and_shard(self, images, labels):
    n, full = len(labels), self.eval_per_process_batch
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(full - n, np.float32)])
    images = np.concatenate(
        [images, np.zeros((full - n,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels, np.zeros(full - n, labels.dtype)])
    out = self._shard(images, labels)
    out['mask'] = mask.reshape(self.local_devices, -1)
    return out

  def _shard(self, images, labels) -> dict[str, np.ndarray]:
    d = self.local_devices
    return {'image': images.reshape((d, -1) + images.shape[1:]),
            'label': labels.astype(np.int32).reshape(d, -1)}


def hash_seed(*values: int) -> int:
  """A stable 31-bit seed from integers (Python's hash() is salted)."""
  return int(np.random.SeedSequence(list(values)).generate_state(1)[0] >> 1)


def dataset_num_classes(config) -> Any:
  return get_builder(config).info.features['label'].num_classes
