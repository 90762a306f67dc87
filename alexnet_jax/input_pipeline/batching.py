"""`InputPipeline`: this process's train and eval batches, [local devices,
per device, ...], read by index in the epoch's global order (a restart at any
step, with any process count, reads nothing before it)."""

import functools
import math
from typing import Iterator

import jax
import numpy as np

from alexnet_jax.input_pipeline import augmentation
from alexnet_jax.input_pipeline import means
from alexnet_jax.input_pipeline import options as options_lib
from alexnet_jax.input_pipeline import tables
from alexnet_jax.input_pipeline.options import DataOptions
from alexnet_jax.input_pipeline.options import numpy_batches
from alexnet_jax.input_pipeline.tfds_source import make_source

# Epochs shorter than this many batches are read by one tf.data pipeline:
# starting a pipeline costs about as much as a few batches.
MIN_BATCHES_PER_PIPELINE = 500
# Training crops made per tf.data map call (the largest divisor of the batch
# up to this): a Python call per crop costs about as much as the work.
CROPS_PER_CALL = 8


def group_size(batch: int, most: int) -> int:
  """The largest divisor of `batch` up to `most` (>= 1)."""
  if most < 1:
    raise ValueError(f'crops per call must be at least 1, not {most}')
  return max(d for d in range(1, min(batch, most) + 1) if batch % d == 0)


class InputPipeline:
  """Train and eval batches of `options.dataset` for this process, with
  the normalization_mean (RGB, 0-255), mean_image, lighting (eigenvalues,
  eigenvectors) and bad_images ({path: reason} skipped) it uses."""

  def __init__(self, options: DataOptions, builder=None, mean_image=None):
    self.tf = options_lib.import_tensorflow()
    self.options = opts = options
    self.source = source = make_source(options, builder)
    self.num_classes = source.num_classes
    self.class_names = source.class_names
    self.bad_images = dict(getattr(source, 'bad_images', {}))
    self.preprocess = options.preprocess
    self.local_devices = jax.local_device_count()
    self.per_process_batch = opts.batch_size // jax.process_count()
    self.eval_per_process_batch = opts.eval_batch_size // jax.process_count()
    # Built on first use, so evaluation alone reads no training data.
    self._train_table = self._train_squares = self._eval_base = None

    split = opts.train_split
    self.num_train_examples = source.num_examples(source.shards(split, 1)[0])
    self.steps_per_epoch = self.num_train_examples // opts.batch_size
    if self.steps_per_epoch < 1:
      raise options_lib.invalid(
          'batch_size', opts.batch_size, f'larger than the {split!r} split '
          f'of {source.name!r} ({self.num_train_examples} examples)')
    shards = source.shards(opts.eval_split, jax.process_count())
    self._eval_shard = shards[jax.process_index()]
    sizes = [source.num_examples(s) for s in shards]
    self.num_eval_examples = sum(sizes)
    if not self.num_eval_examples:
      raise options_lib.invalid('eval_split', opts.eval_split,
                                f'the split of {source.name!r} is empty')
    # The same on every process, so collective eval steps stay in lockstep.
    self.eval_steps = math.ceil(max(sizes) / self.eval_per_process_batch)

    measure = lambda statistic: statistic(source, split, self.preprocess,
                                          opts.cache_dir())
    self.normalization_mean = (measure(means.channel_mean)
                               if opts.mean_from_data else opts.mean)
    if opts.mean_image and mean_image is None:
      mean_image = measure(means.mean_image)
    self.mean_image = mean_image if opts.mean_image else None
    self.lighting = (measure(means.rgb_principal_components)
                     if opts.lighting_from_data else
                     (augmentation.LIGHTING_EIGVAL,  # ImageNet's.
                      augmentation.LIGHTING_EIGVEC))

  def train_table(self):
    """Random access to the training split (`tables`), built once."""
    if self._train_table is None:
      split = self.options.train_split
      self._train_table = self.source.table(split)
      if self._train_table.size != self.num_train_examples:
        raise options_lib.DataError(
            f'The {split!r} split of {self.source.name!r} read '
            f'{self._train_table.size} records; its metadata says '
            f'{self.num_train_examples}.')
    return self._train_table

  # Training.

  @functools.lru_cache(maxsize=2)  # train_batches and train_dataset share.
  def _epoch(self, epoch: int):
    """(record indices, global positions) of this process's share of
    `epoch`, and the epoch's `augmentation.Augmentation`."""
    seed, n = self.options.seed, self.num_train_examples
    indices, positions = augmentation.epoch_order(
        n, self.options.batch_size, epoch, seed, jax.process_count(),
        jax.process_index())
    return indices, positions, augmentation.draw_augmentation(
        self.preprocess, n, epoch, seed, self.lighting)

  def train_dataset(self, epoch: int, skip_examples: int = 0,
                    epochs: int = 1):
    """tf.data of `epochs` training epochs from `epoch` (uint8 crops and
    labels, in per-process batches), `skip_examples` (a multiple of the
    per-process batch) into the first."""
    tf, pre = self.tf, self.preprocess
    if skip_examples % self.per_process_batch:
      raise ValueError(
          f'skip_examples={skip_examples} is not a multiple of the '
          f'per-process batch ({self.per_process_batch})')
    orders = [self._epoch(e) for e in range(epoch, epoch + epochs)]
    indices = np.concatenate([order for order, _, _ in orders])
    offsets = np.concatenate([drawn.offsets[positions]
                              for _, positions, drawn in orders])
    plans, crops = self._crops(indices, offsets)
    group = group_size(self.per_process_batch, CROPS_PER_CALL)

    def examples(index, plan, offset):  # `group` examples at a time.
      images, labels = crops(index, plan)
      images = self._minus_mean_image(images, lambda m: tf.stack(
          [pre.crop_from_square(m, o) for o in tf.unstack(offset)]))
      size = pre.image_size
      return tf.ensure_shape(images, (group, size, size, 3)), labels

    ds = tf.data.Dataset.from_tensor_slices(jax.tree_util.tree_map(
        lambda a: a[skip_examples:].reshape((-1, group) + a.shape[1:]),
        (indices, plans, offsets)))
    ds = ds.map(examples, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    # Batches of groups, then flattened (unbatch() would copy every crop).
    ds = ds.batch(self.per_process_batch // group, drop_remainder=True)
    ds = ds.map(lambda images, labels: (
        tf.reshape(images, (-1,) + tuple(images.shape[2:])),
        tf.reshape(labels, (-1,))))
    return ds.prefetch(tf.data.AUTOTUNE)

  def _crops(self, indices: np.ndarray, offsets: np.ndarray):
    """(per-example plans, fn(record indices [k], plans [k]) -> (crops, labels
    [k])) of the crops at `offsets` of records `indices`' resized squares."""
    tf, pre, source = self.tf, self.preprocess, self.source
    if self.options.cache:
      squares, labels = self._cached_train_squares()
      return offsets, lambda index, offset: (
          tf.stack([pre.crop_from_square(tf.gather(squares, i), o)
                    for i, o in zip(tf.unstack(index), tf.unstack(offset))]),
          tf.gather(labels, index))
    fetch_all = self.train_table().fetch_many
    shapes = source.image_shapes(self.options.train_split)
    if source.jpeg_only and shapes is not None:
      # JPEGs of known sizes: the windows are worked out ahead.
      plans, resize = pre.plan_jpeg_crops(shapes[indices], offsets)

      def planned(index, plan):
        images, labels = fetch_all(index)
        return pre.crops_from_planned_jpegs(images, *plan, resize), labels
      return plans, planned

    def from_bytes(index, offset):
      images, labels = fetch_all(index)
      return pre.crops_from_bytes(images, offset, source.jpeg_only), labels
    return offsets, from_bytes

  def _cached_train_squares(self):
    """All training images decoded and resized to the square, in memory."""
    if self._train_squares is None:
      tf, resize = self.tf, self.preprocess.decode_and_resize
      ds = tables.records(self.train_table()).map(
          lambda r: (resize(r['image']), r['label']),
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      squares, labels = zip(*numpy_batches(ds.batch(256), self.source.name,
                                           'caching'))
      self._train_squares = (tf.constant(np.concatenate(squares)),
                             tf.constant(np.concatenate(labels)))
    return self._train_squares

  def _minus_mean_image(self, crops, crop_of):
    """`crops` less the same crops (`crop_of`) of the mean image, in float
    (as they are without one)."""
    if self.mean_image is None:
      return crops
    tf = self.tf
    return tf.cast(crops, tf.float32) - crop_of(tf.constant(self.mean_image))

  def train_batches(self, start_step: int = 0) -> Iterator[dict]:
    """Endless training batches from global step `start_step`: uint8
    'image' crops, 'label', and the 'flip' and 'light' the accelerator
    applies (`steps.training_images`)."""
    steps, b = self.steps_per_epoch, self.per_process_batch
    d = self.local_devices
    span = -(-MIN_BATCHES_PER_PIPELINE // steps)  # Epochs per pipeline.
    first, skip_batches = divmod(start_step, steps)
    while True:
      ds = self.train_dataset(first, skip_batches * b, span)
      batches = numpy_batches(ds, self.source.name,
                              f'training epochs {first}-{first + span - 1}')
      for j, (images, labels) in enumerate(batches, start=skip_batches):
        epoch, k = divmod(j, steps)
        _, positions, drawn = self._epoch(first + epoch)
        at = positions[k * b:(k + 1) * b]
        yield dict(self._shard(images, labels),
                   flip=drawn.flips[at].reshape(d, -1),
                   light=drawn.lights[at].reshape(d, -1, 3))
      first += span
      skip_batches = 0

  # Evaluation.

  def eval_batches(self, ten_crop: bool | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Every example of this process's eval shard once, padded and masked, in
    `eval_steps` batches (fully masked ones at the end). With ten crops
    (`ten_crop`; None: the options') the images are [devices, per_device, 10,
    H, W, 3]."""
    tf, pre, source = self.tf, self.preprocess, self.source
    cached = self.options.cache
    if self._eval_base is None:
      self._eval_base = source.records(self._eval_shard)
      if cached:
        self._eval_base = self._eval_base.map(
            lambda r: dict(r, image=pre.decode_and_resize(r['image'])),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    ten_crop = self.options.ten_crop if ten_crop is None else ten_crop
    crop_of = pre.ten_crops if ten_crop else pre.center_crop

    def example(record):
      square = (record['image'] if cached else
                pre.decode_and_resize(record['image']))
      image = self._minus_mean_image(crop_of(square), crop_of)
      return {'image': image, 'label': record['label']}

    ds = self._eval_base.map(example, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)
    ds = ds.batch(self.eval_per_process_batch).prefetch(tf.data.AUTOTUNE)
    count = 0
    for batch in numpy_batches(ds, source.name, 'evaluation'):
      count += 1
      yield self._pad_and_shard(batch['image'], batch['label'])
    spec = ds.element_spec['image']
    empty = np.zeros((0, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
    for _ in range(self.eval_steps - count):
      yield self._pad_and_shard(empty, np.zeros((0,), np.int64))

  def _pad_and_shard(self, images, labels):
    n, full = len(labels), self.eval_per_process_batch
    pad = lambda x: np.concatenate(
        [x, np.zeros((full - n,) + x.shape[1:], x.dtype)])
    out = self._shard(pad(images), pad(labels))
    out['mask'] = pad(np.ones(n, np.float32)).reshape(self.local_devices, -1)
    return out

  def _shard(self, images, labels) -> dict[str, np.ndarray]:
    d = self.local_devices
    return {'image': images.reshape((d, -1) + images.shape[1:]),
            'label': labels.astype(np.int32).reshape(d, -1)}
