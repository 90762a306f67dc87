"""Input pipeline: dataset -> per-process shard -> decode -> augment -> batch.

Datasets (`config.dataset`):
  * any TFDS name (`imagenet2012` is prepared from the tar files in
    `config.manual_dir`; `alexnet_shapes` is generated locally);
  * 'tfds_directory': the TFDS dataset written in `config.dataset_dir`
    (e.g. by `alexnet_jax.prepare_dataset`: images resized once to 256);
  * 'image_folder': the folder `config.dataset_dir`, either with split
    folders, root/<split>/<class>/<image> (the layout of
    `tfds.folder_dataset.ImageFolder`), or with class folders only,
    root/<class>/<image> (the Oxford 17 Flowers layout), split here into
    'train' and 'validation': a file is held out when a hash of its name
    (within its class) falls below `config.validation_fraction`, so its side
    never changes when files are added; per-class shares are approximate.

This is the only module that imports TensorFlow and TFDS, and it does so
lazily, so the model, the train step and fake-data runs need JAX alone.

The paper's preprocessing: the shorter side resized to `resize_size` and the
central square kept (or the whole image squashed to a square); training takes
random `image_size` crops, random horizontal flips and PCA lighting noise;
evaluation takes the centre crop, or the four corner crops, the centre crop
and their mirror images (`config.ten_crop`; the batch then has a crop axis:
[devices, per_device, 10, H, W, 3]). Images leave the pipeline as uint8 RGB
crops; the accelerator does the rest (`train.training_images`): each training
batch carries its random flips and PCA lighting offsets ('flip', 'light'),
which are applied there in float, as the paper adds the noise (unrounded,
unclipped), before the mean is subtracted (`config.normalization.mean`, or
`TFDSData.normalization_mean` measured on the training split when
`config.normalization.mean_from_data`). The host's work per image is thus
the decoding of its crop window and nothing else that costs.

Training crops skip most of the decoding: the crop window is mapped back to
the original image and only that window is decoded
(`tf.io.decode_and_crop_jpeg`) and then resized (plain bilinear). Where the
image's shorter side already equals `resize_size` (e.g. 256x256 JPEGs at
resize_size=256, as `alexnet_jax.prepare_dataset` writes them) this is
exactly resize-then-crop with no resizing; otherwise it resamples the same
window, with a sub-pixel difference in the sampling grid and no antialiasing.
With `config.cache` the resized squares are decoded once and kept in memory;
crops are then exact slices. Evaluation always decodes the whole image,
resizes it (antialiased) and then crops.

Training order is a function of (config.seed, epoch, global position) alone,
the same for any number of processes: epoch `e` is one permutation of all the
training records seeded by (seed, e); global batch `s` is its positions
[s * batch_size, (s + 1) * batch_size), and each process reads only its
contiguous slice of each global batch (`epoch_order`). Each example's
augmentation (crop corner, flip, lighting) is drawn for its global position
from a generator seeded by (seed, e) (`draw_augmentation`).
Restarting at step `s` (with any process count) rebuilds epoch
`s // steps_per_epoch` and starts at the right position without reading the
examples before it. This needs random access to the records: image folders
have it, TFDS datasets have it in the array_record format (new ones are
prepared so); a tfrecord-format TFDS split is loaded into memory once
(refused above MEMORY_TABLE_LIMIT). With `config.cache` every process holds
all the decoded training squares.

Unreadable images in an image folder are found by one scan that decodes every
file (its result is cached next to the TFDS data); by `config.bad_images` they
are skipped (and counted in the log) or stop the run with an error naming
them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import os
import re
import time
from typing import Any, Iterator, Sequence

from absl import logging
import jax
import numpy as np

from alexnet_jax import config_lib

# PCA lighting noise (the paper, section 4.1; fb.resnet.torch's constants
# for pixels in [0, 1], scaled here by 255 for 0-255 pixels). Columns of
# LIGHTING_EIGVEC are the eigenvectors: the RGB offset is
# LIGHTING_EIGVEC @ (alpha * LIGHTING_EIGVAL).
LIGHTING_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
LIGHTING_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)

EMBEDDED_DATASETS = ('alexnet_shapes',)
IMAGE_FOLDER = config_lib.IMAGE_FOLDER
TFDS_DIRECTORY = 'tfds_directory'  # A TFDS dataset in config.dataset_dir.
# Those of tfds.folder_dataset.ImageFolder (compared lower-case).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
NUM_TEN_CROPS = 10
# Files TFDS needs in `manual_dir` to prepare these datasets.
MANUAL_FILES = {
    'imagenet2012': ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'),
}
CACHE_SUBDIR = 'alexnet_jax_cache'  # Under the TFDS data dir.
# Keeps the augmentation's random stream apart from the epoch's permutation.
AUGMENTATION_STREAM = 1
# A tfrecord-format split larger than this is not loaded into memory.
MEMORY_TABLE_LIMIT = 4 * 2**30
_FOLDER_SPLITS = ('train', 'validation')  # Of a folder without split folders.


class DataError(RuntimeError):
  """The data cannot be read: missing files, corrupt images, failed reads."""


def _invalid(field: str, value: Any, allowed: str):
  """The error for a config field, worded as config_lib words its own."""
  return config_lib.ConfigError(
      f'config.{field}={value!r} is invalid: {allowed}.')


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Keep TensorFlow off any accelerator; JAX owns it.
  tf.config.set_visible_devices([], 'GPU')
  return tf


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


# ---------------------------------------------------------------------------
# Options read from the config.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """The input fields read outside the preprocessing."""
  dataset_dir: str | None  # config.dataset_dir: the root of an image folder.
  validation_fraction: float  # config.validation_fraction: folders w/o splits.
  ten_crop: bool  # config.ten_crop: 10-crop evaluation.
  bad_images: str  # config.bad_images: 'skip' or 'error'.
  mean_from_data: bool  # config.normalization.mean_from_data
  mean_image: bool  # config.normalization.mean_image
  manual_dir: str | None  # config.manual_dir: tar files for imagenet2012.
  data_dir: str | None  # config.data_dir: the TFDS data dir.

  @classmethod
  def from_config(cls, config) -> 'DataOptions':
    """The fields, as config_lib.validate_data checked them."""
    return cls(
        dataset_dir=config.get('dataset_dir', None),
        validation_fraction=config.validation_fraction,
        ten_crop=config.ten_crop,
        bad_images=config.bad_images,
        mean_from_data=config.normalization.mean_from_data,
        mean_image=config.normalization.get('mean_image', False),
        manual_dir=config.get('manual_dir', None),
        data_dir=config.get('data_dir', None))

  def cache_dir(self) -> str:
    """Where computed means and folder scans are cached."""
    tfds = _tfds()
    root = (self.data_dir or os.environ.get('TFDS_DATA_DIR') or
            tfds.core.constants.DATA_DIR)
    return os.path.join(os.path.expanduser(root), CACHE_SUBDIR)


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, value: Any) -> None:
  """Writes atomically; a cache that cannot be written is only logged."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
      json.dump(value, f, indent=1)
    os.replace(tmp, path)
  except OSError as e:
    logging.warning('Could not write the cache file %s: %s', path, e)


def _digest(*parts: Any) -> str:
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Preprocessing (TensorFlow ops).
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """The paper's preprocessing, in TensorFlow ops (config fields in comments)."""
  image_size: int  # config.image_size: the crop fed to the network (227).
  resize_size: int  # config.resize_size: shorter side before cropping (256).
  resize_mode: str  # 'crop' (paper) or 'squash' (Caffe): to resize_size^2.
  random_crop: bool  # config.augment.random_crop
  flip: bool  # config.augment.flip
  lighting_std: float  # config.augment.lighting_std; 0 disables.

  def decode(self, image_bytes):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [h, w, 3]."""
    tf = _tf()
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

  def resized_shape(self, shape):
    """[h, w] of the whole image once resized (before the central square)."""
    tf = _tf()
    size = self.resize_size
    if self.resize_mode == 'squash':
      return tf.constant([size, size], tf.int32)
    shape = tf.cast(shape, tf.float32)
    scale = size / tf.reduce_min(shape)
    return tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32),
                      size)

  def resize_square(self, image):
    """uint8 [h, w, 3] -> uint8 [resize_size, resize_size, 3]."""
    tf = _tf()
    size = self.resize_size
    shape = tf.shape(image)[:2]
    target = self.resized_shape(shape)
    image = tf.cond(tf.reduce_all(tf.equal(shape, target)),
                    lambda: image, lambda: _resize_uint8(image, target))
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    image = image[top:top + size, left:left + size]
    return tf.ensure_shape(image, (size, size, 3))

  def decode_and_resize(self, image_bytes):
    """Encoded bytes -> uint8 [resize_size, resize_size, 3]."""
    return self.resize_square(self.decode(image_bytes))

  def crop_window(self, shape, offset):
    """The window of the original image [top, left, height, width] that
    becomes the image_size crop at `offset` (y, x) of the resized square."""
    tf = _tf()
    target = self.resized_shape(shape)
    scale = tf.cast(shape, tf.float32) / tf.cast(target, tf.float32)
    start = (target - self.resize_size) // 2 + offset
    start = tf.cast(tf.round(tf.cast(start, tf.float32) * scale), tf.int32)
    size = tf.cast(tf.round(self.image_size * scale), tf.int32)
    size = tf.clip_by_value(size, 1, shape)
    start = tf.clip_by_value(start, 0, shape - size)
    return tf.concat([start, size], axis=0)

  def crop_from_bytes(self, image_bytes, offset, jpeg_only: bool = False):
    """The image_size crop at `offset` of the resized square, decoding (for
    JPEGs) only the crop's window of the original image. `jpeg_only` (every
    image of the dataset a JPEG) skips the per-image format check, a
    conditional that costs tf.data a good share of the decode's time."""
    tf = _tf()
    size = self.image_size

    def jpeg():
      shape = tf.image.extract_jpeg_shape(image_bytes)[:2]
      window = self.crop_window(shape, offset)
      start, extent = window[:2], window[2:]
      # One more pixel on every side, cut off after decoding: libjpeg's
      # chroma upsampling at a window's edge lacks the neighbours that a
      # full decode uses; with them the pixels equal the full decode's.
      low = tf.maximum(start - 1, 0)
      high = tf.minimum(start + extent + 1, shape)
      padded = tf.io.decode_and_crop_jpeg(
          image_bytes, tf.concat([low, high - low], 0), channels=3)
      return tf.slice(padded, tf.concat([start - low, [0]], 0),
                      tf.concat([extent, [3]], 0))

    def other():
      image = self.decode(image_bytes)
      window = self.crop_window(tf.shape(image)[:2], offset)
      return tf.slice(image, tf.concat([window[:2], [0]], 0),
                      tf.concat([window[2:], [3]], 0))

    crop = jpeg() if jpeg_only else tf.cond(tf.io.is_jpeg(image_bytes), jpeg,
                                            other)
    # Plain bilinear: an antialiased resize costs more than the decode.
    crop = tf.cond(tf.reduce_all(tf.equal(tf.shape(crop)[:2], size)),
                   lambda: crop,
                   lambda: _resize_uint8(crop, [size, size], antialias=False))
    return tf.ensure_shape(crop, (size, size, 3))

  def square_jpeg_windows(self, offsets: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """For JPEGs that are already the resized square (resize_size^2, as
    `alexnet_jax.prepare_dataset` writes them), the windows to decode for
    crops at `offsets` [n, 2], worked out ahead in NumPy: ([n, 4] windows
    with the extra pixel on each side, [n, 3] where the crop starts in
    them). Fewer small ops per image is what tf.data is fastest at."""
    low = np.maximum(offsets - 1, 0)
    high = np.minimum(offsets + self.image_size + 1, self.resize_size)
    windows = np.concatenate([low, high - low], axis=1).astype(np.int32)
    starts = np.concatenate([offsets - low, np.zeros_like(low[:, :1])], 1)
    return windows, starts.astype(np.int32)

  def crop_from_square_jpeg(self, image_bytes, window, start):
    """The crop that `square_jpeg_windows` planned: decode the window,
    drop its extra border."""
    tf = _tf()
    padded = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
    return tf.slice(padded, start, (self.image_size, self.image_size, 3))

  def crop_from_square(self, square, offset):
    size = self.image_size
    return square[offset[0]:offset[0] + size, offset[1]:offset[1] + size]

  def center_offset(self):
    tf = _tf()
    margin = (self.resize_size - self.image_size) // 2
    return tf.constant([margin, margin], tf.int32)

  def center_crop(self, square):
    return self.crop_from_square(square, self.center_offset())

  def ten_crops(self, square):
    """[10, image_size, image_size, 3]: the four corner crops, the centre crop,
    then the same five mirrored."""
    tf = _tf()
    last = self.resize_size - self.image_size
    mid = last // 2
    crops = [self.crop_from_square(square, (y, x))
             for y, x in ((0, 0), (0, last), (last, 0), (last, last),
                          (mid, mid))]
    crops += [tf.reverse(c, axis=[1]) for c in crops]
    return tf.stack(crops)


def _resize_uint8(image, size, antialias: bool = True):
  tf = _tf()
  image = tf.image.resize(image, size, method='bilinear', antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def preprocess_from_config(config) -> Preprocess:
  return Preprocess(image_size=config.image_size,
                    resize_size=config.resize_size,
                    resize_mode=config.resize_mode,
                    random_crop=config.augment.random_crop,
                    flip=config.augment.flip,
                    lighting_std=config.augment.lighting_std)


# ---------------------------------------------------------------------------
# Sources: a dataset's splits, per-process shards and records.
#
# A source yields records {'image', 'label'} for a shard, where 'image' is
# whatever `read` turns into encoded image bytes (the bytes themselves for
# TFDS, a file path for folders: a shuffle then moves paths, not images).
# ---------------------------------------------------------------------------


def get_builder(config, options: DataOptions | None = None):
  """The TFDS builder for `config.dataset`, prepared if it is not yet."""
  tfds = _tfds()
  _tf()
  options = options or DataOptions.from_config(config)
  name = config.dataset
  if name in EMBEDDED_DATASETS:
    from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
    return shapes.build(options.data_dir)
  if name == TFDS_DIRECTORY:
    path = os.path.expanduser(options.dataset_dir)
    if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
      raise _invalid('dataset_dir', options.dataset_dir,
                     'holds no TFDS dataset (no dataset_info.json; '
                     'alexnet_jax.prepare_dataset writes one)')
    return tfds.builder_from_directory(path)
  kwargs = {'data_dir': options.data_dir} if options.data_dir else {}
  try:
    builder = tfds.builder(name, **kwargs)
  except Exception as e:  # TFDS raises its own DatasetNotFoundError.
    if 'not found' in str(e).lower():
      close = difflib.get_close_matches(name, tfds.list_builders(), n=5)
      raise config_lib.ConfigError(
          f'config.dataset={name!r} is not a TFDS dataset; close matches: '
          f'{close} (or {IMAGE_FOLDER!r} with config.dataset_dir).') from None
    raise
  if not builder.is_prepared():
    # array_record gives random access: each process reads only its records.
    builder = tfds.builder(name, file_format='array_record', **kwargs)
    _prepare(builder, options)
  return builder


def _prepare(builder, options: DataOptions) -> None:
  """Prepares a TFDS dataset, checking its manual files first."""
  tfds = _tfds()
  manual_dir = options.manual_dir or os.path.join(
      os.fspath(builder.data_dir_root), 'downloads', 'manual')
  manual_dir = os.path.expanduser(manual_dir)
  needed = next((files for prefix, files in MANUAL_FILES.items()
                 if builder.name.startswith(prefix)), ())
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  missing = [f for f in needed
             if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing or (instructions and not needed and not (
      os.path.isdir(manual_dir) and os.listdir(manual_dir))):
    where = '\n'.join(f'  {os.path.join(manual_dir, f)}' for f in needed)
    raise DataError(
        f'TFDS dataset {builder.name!r} is not prepared in '
        f'{builder.data_dir_root} and needs files you download yourself. '
        + (f'Missing: {", ".join(missing)}. Put these files here:\n{where}\n'
           if missing else f'The manual dir {manual_dir} is empty.\n')
        + f'(set config.manual_dir to the folder that holds them; '
        f'TFDS prepares the dataset from them once.)\n'
        f"TFDS's instructions:\n{instructions}")
  logging.info('Preparing TFDS dataset %r in %s (once).', builder.name,
               builder.data_dir_root)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(
        f'TFDS could not prepare {builder.name!r} in {builder.data_dir_root}: '
        f'{type(e).__name__}: {e}\n(Without network access, prepare it '
        f'elsewhere and copy the data dir, or use config.dataset='
        f'{IMAGE_FOLDER!r}.)') from e


class TFDSSource:
  """A TFDS dataset; shards are `tfds.even_splits` sub-splits."""

  def __init__(self, builder):
    self.builder = builder
    self.name = builder.name
    label = builder.info.features['label']
    self.num_classes = label.num_classes
    self.class_names = list(label.names)
    # Every image a JPEG: training crops skip the per-image format check.
    image = builder.info.features['image']
    self.jpeg_only = getattr(image, 'encoding_format', None) == 'jpeg'
    shape = tuple(getattr(image, 'shape', (None,))[:2])
    # (h, w) when every image has it (None where they differ).
    self.image_shape = shape if None not in shape else None

  def shards(self, split: str, count: int, drop_remainder: bool) -> list:
    tfds = _tfds()
    known = list(self.builder.info.splits.keys())
    parts = [p.split('[')[0] for p in split.split('+')]
    if known and any(p not in known for p in parts):
      raise config_lib.ConfigError(
          f'split {split!r} is not a split of {self.name!r}; its splits are '
          f'{known} (set config.train_split / config.eval_split).')
    return tfds.even_splits(split, n=count, drop_remainder=drop_remainder)

  def _as_dataset(self, shard):
    tfds = _tfds()
    return self.builder.as_dataset(
        split=shard, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False))

  def _array_record(self) -> bool:
    """Whether the records are in the array_record format (random access,
    read through tfds.data_source; TFDS's as_dataset does not read it)."""
    tfds = _tfds()
    return (getattr(self.builder.info, 'file_format', None) ==
            tfds.core.FileFormat.ARRAY_RECORD)

  def _data_source(self, shard) -> 'DataSourceTable':
    tfds = _tfds()
    return DataSourceTable(self.builder.as_data_source(
        shard, decoders={'image': tfds.decode.SkipDecoding()}))

  def num_examples(self, shard) -> int:
    if self._array_record():
      return self._data_source(shard).size
    # The dataset's own cardinality: TFDS sets it from the split's metadata
    # (and tfds.testing.mock_data from its num_examples).
    count = int(self._as_dataset(shard).cardinality())
    if count < 0:
      count = self.builder.info.splits[shard].num_examples
    return count

  def size(self, split: str) -> int:
    self.shards(split, 1, False)  # Checks the split's name.
    return self.num_examples(split)

  def records(self, shard):
    if self._array_record():
      table = self._data_source(shard)
      return _tf().data.Dataset.range(table.size).map(
          lambda i: dict(zip(('image', 'label'), table.fetch(i))))
    return self._as_dataset(shard).map(
        lambda ex: {'image': ex['image'], 'label': ex['label']})

  @staticmethod
  def read(record):
    return record['image']

  def table(self, split: str):
    """Random access to `split`: record by record for the array_record
    format; otherwise (tfrecord, read only in sequence) the encoded images
    are loaded into memory once."""
    self.shards(split, 1, False)  # Checks the split's name.
    if self._array_record():
      return self._data_source(split)
    try:
      size = int(self.builder.info.splits[split].num_bytes)
    except Exception:  # pylint: disable=broad-except
      size = 0
    if size > MEMORY_TABLE_LIMIT:
      raise DataError(
          f'The {split!r} split of {self.name!r} is {size / 2**30:.1f} GiB in '
          f'the tfrecord format, which is read only in sequence and would be '
          f'held in memory for the global shuffle. Prepare it in the '
          f'array_record format (random access): move '
          f'{self.builder.data_dir} aside and run again (this pipeline '
          f'prepares datasets as array_record).')
    images, labels = [], []
    for batch in self.records(split).batch(1024).as_numpy_iterator():
      images.extend(batch['image'])
      labels.append(batch['label'])
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return MemoryTable(np.array(images, object), labels, are_paths=False)

  def identity(self, split: str) -> list:
    """Identifies a split's content (for cache keys)."""
    return ['tfds', self.name, str(self.builder.version),
            os.fspath(self.builder.data_dir), split]


@dataclasses.dataclass(frozen=True)
class FolderShard:
  paths: tuple[str, ...]
  labels: tuple[int, ...]


class FolderSource:
  """Images in class folders, with or without split folders above them.

  Classes are the sorted folder names (as in tfds.folder_dataset.ImageFolder,
  so both number the classes alike); images are the files with the
  extensions IMAGE_EXTENSIONS, directly in a class folder.
  """

  def __init__(self, options: DataOptions):
    if not options.dataset_dir:  # A placeholder in the config files.
      raise _invalid('dataset_dir', options.dataset_dir,
                     f"dataset={IMAGE_FOLDER!r} needs the folder's path")
    self.root = os.path.abspath(os.path.expanduser(options.dataset_dir))
    self.name = f'{IMAGE_FOLDER}:{self.root}'
    if not os.path.isdir(self.root):
      raise _invalid('dataset_dir', options.dataset_dir, 'not a directory')
    self.split_files, self.class_names = list_image_folder(
        self.root, options.validation_fraction)
    self.num_classes = len(self.class_names)
    self.bad_images, not_jpeg = self._scan(options)
    self.jpeg_only = not not_jpeg
    self.image_shape = None  # Not known without decoding.
    if self.bad_images:
      shown = '\n'.join(f'  {os.path.join(self.root, p)}: {why}'
                        for p, why in sorted(self.bad_images.items())[:20])
      more = len(self.bad_images) - 20
      shown += f'\n  ... and {more} more' if more > 0 else ''
      total = sum(len(v) for v in self.split_files.values())
      if options.bad_images == 'error':
        raise DataError(
            f'{len(self.bad_images)} of {total} images in {self.root} cannot '
            f'be decoded (config.bad_images="error"):\n{shown}\nRemove or '
            f'replace them, or set config.bad_images="skip".')
      logging.warning('Skipping %d of %d images in %s that cannot be decoded '
                      '(config.bad_images="skip"):\n%s', len(self.bad_images),
                      total, self.root, shown)
      self.split_files = {
          s: [(p, y) for p, y in files if p not in self.bad_images]
          for s, files in self.split_files.items()}
    counts = {s: len(f) for s, f in self.split_files.items()}
    logging.info('Image folder %s: %d classes, images per split %s (%d '
                 'unreadable skipped).', self.root, self.num_classes, counts,
                 len(self.bad_images))

  def _scan(self, options: DataOptions) -> tuple[dict[str, str], list[str]]:
    """({relative path: reason} of the images TensorFlow cannot decode, the
    readable images that are not JPEGs); the scan decodes every image once
    and is cached by the files' sizes and modification times."""
    files = sorted(p for f in self.split_files.values() for p, _ in f)
    stats = []
    for p in files:
      st = os.stat(os.path.join(self.root, p))
      stats.append((p, st.st_size, st.st_mtime_ns))
    signature = _digest(stats)
    cache = os.path.join(options.cache_dir(), 'image_folder_scans',
                         _digest(self.root)[:24] + '.json')
    cached = _read_json(cache)
    if cached and cached.get('signature') == signature and (
        'not_jpeg' in cached):
      return dict(cached['bad']), list(cached['not_jpeg'])
    start = time.perf_counter()
    bad = scan_images(self.root, files)
    not_jpeg = [p for p in files if p not in bad and
                not _starts_as_jpeg(os.path.join(self.root, p))]
    logging.info('Scanned %d images of %s in %.1f s: %d cannot be decoded.',
                 len(files), self.root, time.perf_counter() - start, len(bad))
    _write_json(cache, {'root': self.root, 'signature': signature,
                        'bad': bad, 'not_jpeg': not_jpeg})
    return bad, not_jpeg

  def _split(self, split: str) -> list[tuple[str, int]]:
    files = []
    for part in split.split('+'):
      if part not in self.split_files:
        raise config_lib.ConfigError(
            f'split {part!r} (from {split!r}) is not a split of the image '
            f'folder {self.root}; its splits are {sorted(self.split_files)} '
            f'(set config.train_split / config.eval_split).')
      files += self.split_files[part]
    return files

  def shards(self, split: str, count: int, drop_remainder: bool) -> list:
    files = self._split(split)
    n = len(files)
    if drop_remainder:
      bounds = [i * (n // count) for i in range(count + 1)]
    else:
      bounds = [i * n // count for i in range(count + 1)]
    shards = []
    for i in range(count):
      part = files[bounds[i]:bounds[i + 1]]
      shards.append(FolderShard(
          tuple(os.path.join(self.root, p) for p, _ in part),
          tuple(y for _, y in part)))
    return shards

  @staticmethod
  def num_examples(shard: FolderShard) -> int:
    return len(shard.paths)

  @staticmethod
  def records(shard: FolderShard):
    tf = _tf()
    return tf.data.Dataset.from_tensor_slices({
        'image': tf.constant(shard.paths, tf.string, shape=(len(shard.paths),)),
        'label': tf.constant(shard.labels, tf.int64,
                             shape=(len(shard.labels),))})

  @staticmethod
  def read(record):
    return _tf().io.read_file(record['image'])

  def size(self, split: str) -> int:
    return len(self._split(split))

  def table(self, split: str) -> MemoryTable:
    files = self._split(split)
    return MemoryTable(
        np.array([os.path.join(self.root, p) for p, _ in files], object),
        np.array([y for _, y in files], np.int64), are_paths=True)

  def identity(self, split: str) -> list:
    return ['folder', self.root, split,
            _digest(sorted(self._split(split)))]


def _starts_as_jpeg(path: str) -> bool:
  """Whether a file begins with JPEG's start-of-image marker."""
  with open(path, 'rb') as f:
    return f.read(3) == b'\xff\xd8\xff'


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path)
                if not d.startswith('.') and
                os.path.isdir(os.path.join(path, d)))


def _images(path: str) -> list[str]:
  return sorted(f for f in os.listdir(path)
                if _is_image(f) and os.path.isfile(os.path.join(path, f)))


def in_validation(file_name: str, fraction: float) -> bool:
  """Whether a file of a class folder (no split folders) is held out: a hash
  of its name within the class, as a number in [0, 1), below `fraction`. A
  file's side depends on its name alone, so adding or removing files moves
  no other file; each class's share is `fraction` only on average."""
  digest = hashlib.sha256(file_name.encode()).hexdigest()
  return int(digest[:16], 16) / 2**64 < fraction


def _class_images(root: str, relpath: str) -> list[str]:
  """The images of the class folder root/relpath; refuses one without any
  (an empty folder, or a link to a folder of folders, such as a parent)."""
  path = os.path.join(root, relpath)
  files = _images(path)
  if not files:
    link = (f' (a link to {os.path.realpath(path)})'
            if os.path.islink(path) else '')
    raise config_lib.ConfigError(
        f'config.dataset_dir={root!r}: the class folder {path}{link} holds no '
        f'images {IMAGE_EXTENSIONS}; remove it or add its images.')
  return files


def list_image_folder(root: str, validation_fraction: float
                      ) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
  """({split: [(path relative to root, label)]}, class names) of a folder.

  root/<split>/<class>/<image> gives the split folders' names; root/<class>/
  <image> gives 'train' and 'validation', each file's side decided by
  `in_validation` (stratified in spirit: each class holds out about
  `validation_fraction` of its files, and a class may hold out none).
  """
  top = _subdirs(root)
  if not top:
    raise config_lib.ConfigError(
        f'config.dataset_dir={root!r} holds no folders: expected class '
        f'folders root/<class>/<image> or split folders root/<split>/<class>/'
        f'<image> (images: {IMAGE_EXTENSIONS}).')
  flat = any(_images(os.path.join(root, d)) for d in top)
  if flat:
    classes = top
    splits = {s: [] for s in _FOLDER_SPLITS}
    for label, name in enumerate(classes):
      for f in _class_images(root, name):
        split = ('validation' if in_validation(f, validation_fraction)
                 else 'train')
        splits[split].append((os.path.join(name, f), label))
    held_out = {y for _, y in splits['validation']}
    missing = [c for i, c in enumerate(classes) if i not in held_out]
    if validation_fraction > 0 and missing:
      logging.warning('validation_fraction=%s holds out no file of the '
                      'classes %s (too few files).', validation_fraction,
                      missing)
    if not splits['validation']:
      del splits['validation']
  else:
    classes = sorted({c for s in top for c in _subdirs(os.path.join(root, s))})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for s in top:
      splits[s] = [(os.path.join(s, c, f), index[c])
                   for c in _subdirs(os.path.join(root, s))
                   for f in _class_images(root, os.path.join(s, c))]
  for s in splits:
    splits[s].sort()
  if not any(splits.values()):
    raise config_lib.ConfigError(
        f'config.dataset_dir={root!r} holds no images with the extensions '
        f'{IMAGE_EXTENSIONS} in root/<class>/ or root/<split>/<class>/.')
  if len(classes) < 2:
    raise config_lib.ConfigError(
        f'config.dataset_dir={root!r} holds {len(classes)} class folder(s): '
        f'{classes}; a classifier needs at least 2.')
  return splits, classes


def scan_images(root: str, relpaths: Sequence[str]) -> dict[str, str]:
  """{relative path: reason} of the files TensorFlow cannot read or decode
  (decoding all of them in parallel with tf.data)."""
  tf = _tf()
  if not relpaths:
    return {}
  paths = [os.path.join(root, p) for p in relpaths]
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))

  def check(index, path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
    return index, tf.shape(image)

  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.ignore_errors()
  good = {int(i) for i, _ in ds.as_numpy_iterator()}
  bad = {}
  for i, path in enumerate(paths):
    if i in good:
      continue
    try:  # Once more, eagerly, for the reason.
      tf.io.decode_image(tf.io.read_file(path), channels=3,
                         expand_animations=False)
      reason = 'failed to decode in the scan'
    except tf.errors.OpError as e:
      reason = tf_error_message(e)
    bad[relpaths[i]] = reason
  return bad


def tf_error_message(error) -> str:
  """The first line of a TensorFlow error, without the op decorations."""
  lines = error.message.strip().splitlines() or ['']
  message = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', lines[0])
  return re.sub(r'\s*\[Op:\w+\].*$', '', message) or type(error).__name__


def make_source(config, options: DataOptions, builder=None):
  if builder is not None:
    return TFDSSource(builder)
  if config.dataset == IMAGE_FOLDER:
    return FolderSource(options)
  return TFDSSource(get_builder(config, options))


# ---------------------------------------------------------------------------
# Random access to a split, and the global training order.
# ---------------------------------------------------------------------------


class MemoryTable:
  """A split held in memory: encoded bytes or file paths, and labels, looked
  up by index (a tf.gather)."""

  def __init__(self, keys: np.ndarray, labels: np.ndarray, are_paths: bool):
    tf = _tf()
    self.size = len(labels)
    self._keys = tf.constant(keys, tf.string, shape=(self.size,))
    self._labels = tf.constant(labels, tf.int64, shape=(self.size,))
    self._are_paths = are_paths

  def fetch(self, index):
    """int64 scalar index -> (encoded image bytes, label)."""
    tf = _tf()
    key = tf.gather(self._keys, index)
    image = tf.io.read_file(key) if self._are_paths else key
    return image, tf.gather(self._labels, index)


class DataSourceTable:
  """A TFDS split in the array_record format, read record by record
  (`tfds.data_source`), so a process reads only the records it uses."""

  def __init__(self, source):
    self._source = source
    self.size = len(source)

  def fetch(self, index):
    tf = _tf()

    def read(i):
      record = self._source[int(i)]
      return record['image'], np.int64(record['label'])

    image, label = tf.py_function(read, [index], (tf.string, tf.int64))
    image.set_shape(())
    label.set_shape(())
    return image, label


def epoch_order(num_examples: int, global_batch: int, epoch: int, seed: int,
                num_processes: int, process: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """(record indices, global positions) that `process` reads in `epoch`.

  The epoch is one permutation of all records, seeded by (seed, epoch); its
  first steps * global_batch positions form the global batches, and each
  process takes its contiguous slice of every global batch. The examples,
  their order and (via the position) their augmentation are thus the same
  for any number of processes.
  """
  steps = num_examples // global_batch
  per_process = global_batch // num_processes
  permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
  positions = (np.arange(steps)[:, None] * global_batch
               + process * per_process + np.arange(per_process)).ravel()
  return permutation[positions], positions


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The random choices of an epoch's training examples, by global position.

  The host only decodes each example's crop window; the flip and the
  lighting noise are applied to the batch on the accelerator
  (`train.training_images`).
  """
  offsets: np.ndarray  # int32 [n, 2]: the crop's corner in the resized square.
  flips: np.ndarray  # bool [n]: mirror the crop left-right.
  lights: np.ndarray  # float32 [n, 3]: PCA lighting's RGB offset, 0-255 scale.


def draw_augmentation(preprocess: Preprocess, num_positions: int, epoch: int,
                      seed: int) -> Augmentation:
  """The choices for global positions [0, num_positions) of `epoch`: a
  function of (seed, epoch, position) alone. Every draw is made whatever the
  switches say, so turning one off leaves the others unchanged."""
  pre, n = preprocess, num_positions
  rng = np.random.default_rng([seed, epoch, AUGMENTATION_STREAM])
  room = pre.resize_size - pre.image_size
  offsets = rng.integers(0, room + 1, (n, 2), dtype=np.int32)
  flips = rng.random(n) < 0.5
  alphas = rng.normal(0.0, 1.0, (n, 3)) * pre.lighting_std
  if not pre.random_crop:
    offsets[:] = room // 2
  if not pre.flip:
    flips[:] = False
  # The paper: I + [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T, for pixels in [0, 1].
  lights = 255.0 * (alphas * LIGHTING_EIGVAL) @ LIGHTING_EIGVEC.T
  return Augmentation(offsets, flips, lights.astype(np.float32))


# ---------------------------------------------------------------------------
# Batches for the training loop.
# ---------------------------------------------------------------------------


class TFDSData:
  """Train and eval batches of `config.dataset` for this process.

  Attributes: num_classes, class_names, steps_per_epoch, num_train_examples
  (all processes: the examples of one epoch), num_eval_examples, eval_steps
  (the same on every process), normalization_mean (RGB, 0-255 scale: the
  config's, or measured on the training split when
  config.normalization.mean_from_data), bad_images ({path: reason} skipped in
  an image folder).
  """

  def __init__(self, config, builder=None):
    config_lib.validate_data(config)
    tf = self.tf = _tf()
    self.config = config
    self.options = DataOptions.from_config(config)
    self.source = make_source(config, self.options, builder)
    self.builder = getattr(self.source, 'builder', None)
    self.num_classes = self.source.num_classes
    self.class_names = self.source.class_names
    self.bad_images = dict(getattr(self.source, 'bad_images', {}))
    self.preprocess = preprocess_from_config(config)
    nproc, pid = jax.process_count(), jax.process_index()
    self.local_devices = jax.local_device_count()
    self.per_process_batch = config.batch_size // nproc
    self.eval_per_process_batch = config.eval_batch_size // nproc

    self._train_table = None  # Built on first use: evaluation needs none.
    self.num_train_examples = self.source.size(config.train_split)
    self.steps_per_epoch = self.num_train_examples // config.batch_size
    if self.steps_per_epoch < 1:
      raise _invalid(
          'batch_size', config.batch_size,
          f'larger than the {config.train_split!r} split of '
          f'{self.source.name!r} ({self.num_train_examples} examples)')
    eval_shards = self.source.shards(config.eval_split, nproc, False)
    self._eval_shard = eval_shards[pid]
    sizes = [self.source.num_examples(s) for s in eval_shards]
    self.num_eval_examples = sum(sizes)
    if not self.num_eval_examples:
      raise _invalid(
          'eval_split', config.eval_split,
          f'the split of {self.source.name!r} is empty')
    self.eval_steps = math.ceil(max(sizes) / self.eval_per_process_batch)
    if self.options.mean_from_data:
      self.normalization_mean = self.dataset_mean()
      logging.info('Mean RGB of the %r split: %s', config.train_split,
                   self.normalization_mean)
    else:
      self.normalization_mean = tuple(
          float(v) for v in config.normalization.mean)
    self._train_squares = None
    self._eval_base = None
    self._options = tf.data.Options()
    self._options.deterministic = True
    self._options.experimental_optimization.map_parallelization = True
    # The paper's per-pixel mean image (float32 [resize_size^2, 3]), or None.
    self.mean_image = (self.dataset_mean_image() if self.options.mean_image
                       else None)

  def _squares(self, shard):
    """Records with the image decoded and resized to the square, cached."""
    tf, read = self.tf, self.source.read
    return self.source.records(shard).map(
        lambda r: {'image': self.preprocess.decode_and_resize(read(r)),
                   'label': r['label']},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()

  def _table(self):
    if self._train_table is None:
      self._train_table = self.source.table(self.config.train_split)
      if self._train_table.size != self.num_train_examples:
        raise DataError(
            f'The {self.config.train_split!r} split of {self.source.name!r} '
            f'read {self._train_table.size} records; its metadata says '
            f'{self.num_train_examples}.')
    return self._train_table

  def _cached_train_squares(self):
    """All training images decoded and resized to the square, in memory
    (every process holds all: the global shuffle may give it any of them)."""
    if self._train_squares is None:
      tf, table = self.tf, self._table()
      ds = tf.data.Dataset.range(table.size).map(
          lambda i: self.preprocess.decode_and_resize(table.fetch(i)[0]),
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      squares = np.concatenate(list(self._numpy(
          ds.batch(256).with_options(self._options), 'caching')))
      labels = np.concatenate(list(self._numpy(
          tf.data.Dataset.range(table.size).map(
              lambda i: table.fetch(i)[1]).batch(4096), 'caching')))
      self._train_squares = (tf.constant(squares), tf.constant(labels))
    return self._train_squares

  def train_dataset(self, epoch: int, skip_examples: int = 0):
    """The tf.data pipeline of one training epoch (uint8 crops and labels,
    in batches of this process), starting `skip_examples` into it."""
    tf = self.tf
    indices, positions = self._epoch(epoch)
    offsets = self._augmentation(epoch).offsets[positions]
    plans, crop = self._crops(offsets)
    pre, minus_mean = self.preprocess, self._minus_mean_image

    def example(index, plan, offset):
      image, label = crop(index, plan)
      return minus_mean(image, lambda m: pre.crop_from_square(m, offset)), label

    ds = tf.data.Dataset.from_tensor_slices(jax.tree_util.tree_map(
        lambda a: a[skip_examples:], (indices, plans, offsets)))
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(self.per_process_batch, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(self._options)

  def _minus_mean_image(self, crops, crop_of):
    """`crops` less the same crops (`crop_of`) of the mean image, in float;
    `crops` as they are without config.normalization.mean_image."""
    if self.mean_image is None:
      return crops
    tf = self.tf
    mean = crop_of(tf.constant(self.mean_image))
    return tf.cast(crops, tf.float32) - mean

  def _crops(self, offsets: np.ndarray):
    """(per-example crop plans, fn(record index, plan) -> (crop, label)) for
    crops at `offsets` of the resized squares."""
    tf, pre, source = self.tf, self.preprocess, self.source
    if self.config.cache:
      squares, labels = self._cached_train_squares()
      return offsets, lambda i, offset: (
          pre.crop_from_square(tf.gather(squares, i), offset),
          tf.gather(labels, i))
    fetch = self._table().fetch
    if source.jpeg_only and source.image_shape == (pre.resize_size,) * 2:
      # JPEGs stored at the resized square: the windows are known ahead.
      def planned(i, plan):
        image, label = fetch(i)
        return pre.crop_from_square_jpeg(image, *plan), label
      return pre.square_jpeg_windows(offsets), planned

    def crop(i, offset):
      image, label = fetch(i)
      return pre.crop_from_bytes(image, offset, source.jpeg_only), label
    return offsets, crop

  @functools.lru_cache(maxsize=2)  # train_batches and train_dataset share.
  def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    return epoch_order(self.num_train_examples, self.config.batch_size, epoch,
                       self.config.seed, jax.process_count(),
                       jax.process_index())

  @functools.lru_cache(maxsize=2)
  def _augmentation(self, epoch: int) -> Augmentation:
    return draw_augmentation(self.preprocess, self.num_train_examples, epoch,
                             self.config.seed)

  def train_batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches from global step `start_step`: uint8
    'image' crops, 'label', and the 'flip' and 'light' the accelerator
    applies."""
    epoch, skip_batches = divmod(start_step, self.steps_per_epoch)
    b = self.per_process_batch
    while True:
      _, positions = self._epoch(epoch)
      augmentation = self._augmentation(epoch)
      ds = self.train_dataset(epoch, skip_batches * b)
      for k, (images, labels) in enumerate(
          self._numpy(ds, f'training epoch {epoch}'), start=skip_batches):
        batch = self._shard(images, labels)
        at = positions[k * b:(k + 1) * b]
        d = self.local_devices
        batch['flip'] = augmentation.flips[at].reshape(d, -1)
        batch['light'] = augmentation.lights[at].reshape(d, -1, 3)
        yield batch
      epoch += 1
      skip_batches = 0

  def eval_dataset(self):
    """The tf.data pipeline of this process's evaluation batches (unpadded)."""
    tf, pre, cfg = self.tf, self.preprocess, self.config
    if self._eval_base is None:
      self._eval_base = (self._squares(self._eval_shard) if cfg.cache else
                         self.source.records(self._eval_shard))
    read, cached = self.source.read, cfg.cache
    ten = self.options.ten_crop

    def example(record):
      square = (record['image'] if cached else
                pre.decode_and_resize(read(record)))
      crop_of = pre.ten_crops if ten else pre.center_crop
      image = self._minus_mean_image(crop_of(square), crop_of)
      return {'image': image, 'label': record['label']}

    ds = self._eval_base.map(example, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)
    ds = ds.batch(self.eval_per_process_batch)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(self._options)

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """Every example of this process's eval shard once, padded and masked.

    Every process yields `self.eval_steps` batches (padding with fully masked
    batches), so collective eval steps stay in lockstep. With ten_crop the
    images are [devices, per_device, 10, H, W, 3].
    """
    size = self.config.image_size
    count = 0
    for batch in self._numpy(self.eval_dataset(), 'evaluation'):
      count += 1
      yield self._pad_and_shard(batch['image'], batch['label'])
    crops = (NUM_TEN_CROPS,) if self.options.ten_crop else ()
    dtype = np.uint8 if self.mean_image is None else np.float32
    empty = np.zeros((0,) + crops + (size, size, 3), dtype)
    for _ in range(self.eval_steps - count):
      yield self._pad_and_shard(empty, np.zeros((0,), np.int64))

  def _numpy(self, ds, what: str) -> Iterator[dict[str, np.ndarray]]:
    """Iterates `ds`, turning a TensorFlow failure into a DataError."""
    tf = self.tf
    iterator = ds.as_numpy_iterator()
    while True:
      try:
        batch = next(iterator)
      except StopIteration:
        return
      except tf.errors.OpError as e:
        raise DataError(
            f'Reading {self.source.name!r} failed during {what}: '
            f'{tf_error_message(e)}') from None
      yield batch

  def dataset_mean(self) -> tuple[float, float, float]:
    """Mean RGB (0-255) of the training split's resized squares, all
    processes' shares; computed once and cached in a JSON file."""
    tf, cfg, pre = self.tf, self.config, self.preprocess
    key = self.source.identity(cfg.train_split) + [
        pre.resize_size, pre.resize_mode]
    path = os.path.join(self.options.cache_dir(), 'means',
                        _digest(key)[:24] + '.json')
    cached = _read_json(path)
    if cached and cached.get('key') == key:
      return tuple(cached['mean'])
    shard = self.source.shards(cfg.train_split, 1, False)[0]
    read = self.source.read
    ds = self.source.records(shard).map(
        lambda r: tf.reduce_sum(tf.cast(pre.decode_and_resize(read(r)),
                                        tf.float64), axis=(0, 1)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    start = time.perf_counter()
    total, count = np.zeros(3, np.float64), 0
    for sums in self._numpy(ds.batch(256), 'the mean computation'):
      total += sums.sum(axis=0)
      count += len(sums)
    mean = tuple(float(v) for v in total / (count * pre.resize_size ** 2))
    logging.info('Measured the mean RGB of %d images in %.1f s.', count,
                 time.perf_counter() - start)
    _write_json(path, {'key': key, 'mean': mean, 'num_images': count})
    return mean

  def dataset_mean_image(self) -> np.ndarray:
    """The per-pixel mean (0-255, float32 [resize_size, resize_size, 3]) of
    the training split's resized squares, all processes' shares: the paper's
    mean image, as Caffe's imagenet_mean.binaryproto. Computed once and
    cached as a .npy file."""
    tf, cfg, pre = self.tf, self.config, self.preprocess
    key = self.source.identity(cfg.train_split) + [
        pre.resize_size, pre.resize_mode, 'image']
    path = os.path.join(self.options.cache_dir(), 'means',
                        _digest(key)[:24] + '.npy')
    size = (pre.resize_size, pre.resize_size, 3)
    try:
      cached = np.load(path)
      if cached.shape == size:
        return cached
    except (OSError, ValueError):
      pass
    table = self._table()
    ds = tf.data.Dataset.range(table.size).map(
        lambda i: tf.cast(pre.decode_and_resize(table.fetch(i)[0]),
                          tf.float64),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    start = time.perf_counter()
    total, count = np.zeros(size, np.float64), 0
    for squares in self._numpy(ds.batch(64).with_options(self._options),
                               'the mean image computation'):
      total += squares.sum(axis=0)
      count += len(squares)
    mean = (total / count).astype(np.float32)
    logging.info('Measured the mean image of %d images in %.1f s.', count,
                 time.perf_counter() - start)
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = f'{path}.tmp{os.getpid()}.npy'
      np.save(tmp, mean)
      os.replace(tmp, path)
    except OSError as e:
      logging.warning('Could not write the cache file %s: %s', path, e)
    return mean

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


def dataset_num_classes(config) -> int:
  """The number of classes of `config.dataset` (prepares it if needed)."""
  options = DataOptions.from_config(config)
  return make_source(config, options).num_classes
