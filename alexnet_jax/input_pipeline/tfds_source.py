"""The dataset as a source of records: a TFDS name (prepared on first use as
array_record, for random access; `imagenet2012` from the tars in
`manual_dir`), the embedded `alexnet_shapes`, a TFDS dataset in `dataset_dir`
('tfds_directory') or an image folder. docs/input_pipeline.md lists what a
source offers; images stay encoded until the pipeline decodes a window."""

import difflib
import os

from absl import logging
import numpy as np

from alexnet_jax.input_pipeline import options as options_lib
from alexnet_jax.input_pipeline import tables
from alexnet_jax.input_pipeline.image_folder import FolderSource
from alexnet_jax.input_pipeline.options import DataError
from alexnet_jax.input_pipeline.options import DataOptions
from alexnet_jax.input_pipeline.options import IMAGE_FOLDER
from alexnet_jax.input_pipeline.options import import_tfds

EMBEDDED_DATASETS = ('alexnet_shapes',)
# Files TFDS needs in `manual_dir` to prepare these datasets.
MANUAL_FILES = {'imagenet2012': ('ILSVRC2012_img_train.tar',
                                 'ILSVRC2012_img_val.tar')}
# A tfrecord-format split larger than this is not loaded into memory.
MEMORY_TABLE_LIMIT = 4 * 2**30


def make_source(options: DataOptions, builder=None):
  """The source of `options.dataset`, or of `builder` when one is given."""
  if builder is not None:
    return TFDSSource(builder)
  if options.dataset == IMAGE_FOLDER:
    return FolderSource(options)
  return TFDSSource(get_builder(options))


def get_builder(options: DataOptions):
  """The TFDS builder of `options.dataset`, prepared if it is not yet."""
  tfds = import_tfds()
  options_lib.import_tensorflow()  # Off the accelerator before TFDS uses it.
  name = options.dataset
  if name in EMBEDDED_DATASETS:
    from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
    return shapes.build(options.data_dir)
  if name == options_lib.TFDS_DIRECTORY:
    path = os.path.expanduser(options.dataset_dir)
    if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
      raise options_lib.invalid(
          'dataset_dir', options.dataset_dir, 'holds no TFDS dataset (no '
          'dataset_info.json; alexnet_jax.tools.prepare_dataset writes one)')
    return tfds.builder_from_directory(path)
  kwargs = {'data_dir': options.data_dir} if options.data_dir else {}
  try:
    builder = tfds.builder(name, **kwargs)
  except Exception as e:  # TFDS raises its own DatasetNotFoundError.
    if 'not found' in str(e).lower():
      close = difflib.get_close_matches(name, tfds.list_builders(), n=5)
      raise options_lib.ConfigError(
          f'config.dataset={name!r} is not a TFDS dataset; close matches: '
          f'{close} (or {IMAGE_FOLDER!r} with config.dataset_dir).') from None
    raise
  if not builder.is_prepared():
    # array_record gives random access: each process reads only its records.
    builder = tfds.builder(name, file_format='array_record', **kwargs)
    _prepare(builder, options)
  return builder


def _prepare(builder, options: DataOptions) -> None:
  """Prepares a TFDS dataset; first refuses one whose downloaded-by-hand files
  are missing, saying which go where (TFDS would say less)."""
  tfds = import_tfds()
  manual_dir = os.path.expanduser(options.manual_dir or os.path.join(
      os.fspath(builder.data_dir_root), 'downloads', 'manual'))
  needed = next((files for prefix, files in MANUAL_FILES.items()
                 if builder.name.startswith(prefix)), ())
  advice = ' '.join(
      (getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None) or '').split())
  missing = [f for f in needed
             if not os.path.isfile(os.path.join(manual_dir, f))]
  if missing or (advice and not needed and not (
      os.path.isdir(manual_dir) and os.listdir(manual_dir))):
    todo = (f'put {", ".join(missing)} into {manual_dir} (config.manual_dir)'
            if missing else f'the manual dir {manual_dir} is empty')
    raise DataError(
        f'TFDS dataset {builder.name!r} is not prepared in '
        f'{builder.data_dir_root} and needs files you download yourself: '
        f'{todo}; TFDS prepares the dataset from them once.'
        + (f" TFDS's instructions: {advice}" if advice and not missing
           else ''))
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
    image = builder.info.features['image']
    self.jpeg_only = getattr(image, 'encoding_format', None) == 'jpeg'
    shape = tuple(getattr(image, 'shape', (None,))[:2])
    self.image_shape = shape if None not in shape else None  # If all alike.
    # Random access, through tfds.data_source (as_dataset does not read it).
    self._array_record = (getattr(builder.info, 'file_format', None) ==
                          import_tfds().core.FileFormat.ARRAY_RECORD)

  def image_shapes(self, split: str) -> np.ndarray | None:
    if self.image_shape is None:
      return None
    return np.tile(np.array(self.image_shape, np.int32),
                   (self.num_examples(split), 1))

  def shards(self, split: str, count: int) -> list:
    known = list(self.builder.info.splits.keys())
    parts = [p.split('[')[0] for p in split.split('+')]
    if known and any(p not in known for p in parts):
      raise options_lib.ConfigError(
          f'split {split!r} is not a split of {self.name!r}; its splits are '
          f'{known} (set config.train_split / config.eval_split).')
    return import_tfds().even_splits(split, n=count)

  def _as_dataset(self, shard):
    tfds = import_tfds()
    return self.builder.as_dataset(
        split=shard, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False))

  def _data_source(self, shard) -> tables.DataSourceTable:
    return tables.DataSourceTable(self.builder.as_data_source(
        shard, decoders={'image': import_tfds().decode.SkipDecoding()}))

  def num_examples(self, shard) -> int:
    if self._array_record:
      return self._data_source(shard).size
    # TFDS sets the cardinality from the split's metadata (mock_data too).
    count = int(self._as_dataset(shard).cardinality())
    return count if count >= 0 else self.builder.info.splits[shard].num_examples

  def records(self, shard, start: int = 0):
    if self._array_record:
      return tables.records(self._data_source(shard), start)
    return self._as_dataset(shard).skip(start).map(
        lambda ex: {'image': ex['image'], 'label': ex['label']})

  def table(self, split: str):
    """Random access to `split`: array_record's, or (tfrecord, read only in
    sequence) the encoded images loaded into memory once."""
    self.shards(split, 1)  # Checks the split's name.
    if self._array_record:
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
    images, labels = [], [np.zeros(0, np.int64)]
    for batch in self.records(split).batch(1024).as_numpy_iterator():
      images.extend(batch['image'])
      labels.append(batch['label'])
    return tables.MemoryTable(np.array(images, object),
                              np.concatenate(labels), are_paths=False)

  def identity(self, split: str) -> list:
    """Identifies a split's content (for cache keys)."""
    return ['tfds', self.name, str(self.builder.version),
            os.fspath(self.builder.data_dir), split]
