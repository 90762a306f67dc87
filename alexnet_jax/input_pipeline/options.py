"""What every stage of the pipeline shares: its options (read from the config
once, by `DataOptions.from_config`), its errors, TensorFlow (imported only
when a data function runs) and the cache files of costly results."""

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Iterator

from absl import logging
import numpy as np

from alexnet_jax import config_lib

ConfigError = config_lib.ConfigError  # A config field's bad value.
IMAGE_FOLDER = config_lib.IMAGE_FOLDER
TFDS_DIRECTORY = 'tfds_directory'  # A TFDS dataset in config.dataset_dir.
CACHE_SUBDIR = 'alexnet_jax_cache'  # Under the TFDS data dir.


class DataError(RuntimeError):
  """The data cannot be read: missing files, corrupt images, failed reads."""


def invalid(field: str, value: Any, allowed: str) -> ConfigError:
  """A config field's error, worded as config_lib words its own."""
  return ConfigError(f'config.{field}={value!r} is invalid: {allowed}.')


def import_tensorflow():
  """TensorFlow, kept off any accelerator (JAX owns it)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  return tf


def import_tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """The config's data fields (names as in the config), the pipeline's only
  input besides the dataset itself."""
  dataset: str
  dataset_dir: str | None  # The root of an image folder or a TFDS directory.
  data_dir: str | None  # The TFDS data dir.
  manual_dir: str | None  # Files downloaded by hand (imagenet2012's tars).
  train_split: str
  eval_split: str
  validation_fraction: float  # Held out of class folders without splits.
  bad_images: str  # 'skip' or 'error'.
  batch_size: int  # Global, over all processes.
  eval_batch_size: int
  seed: int
  cache: bool  # Keep the decoded squares in memory.
  ten_crop: bool
  mean: tuple[float, float, float]  # normalization.mean (RGB, 0-255).
  mean_from_data: bool  # normalization.mean_from_data
  mean_image: bool  # normalization.mean_image
  lighting_from_data: bool  # augment.lighting_from_data
  preprocess: Any  # preprocess.Preprocess

  @classmethod
  def from_config(cls, config) -> 'DataOptions':
    """The options of `config`, checked (config_lib.validate_data)."""
    # Imported here: preprocess imports this module.
    from alexnet_jax.input_pipeline.preprocess import Preprocess  # pylint: disable=g-import-not-at-top
    config_lib.validate_data(config)
    augment, norm = config.augment, config.normalization
    same = ('dataset', 'train_split', 'eval_split', 'validation_fraction',
            'bad_images', 'batch_size', 'eval_batch_size', 'seed', 'cache',
            'ten_crop')
    optional = ('dataset_dir', 'data_dir', 'manual_dir')
    return cls(
        **{name: config[name] for name in same},
        **{name: config.get(name, None) for name in optional},
        mean=tuple(float(v) for v in norm.mean),
        mean_from_data=norm.mean_from_data,
        mean_image=norm.get('mean_image', False),
        lighting_from_data=augment.get('lighting_from_data', False),
        preprocess=Preprocess(
            image_size=config.image_size, resize_size=config.resize_size,
            resize_mode=config.resize_mode, random_crop=augment.random_crop,
            flip=augment.flip, lighting_std=augment.lighting_std))

  def cache_dir(self) -> str:
    """Where computed means and folder scans are cached."""
    root = (self.data_dir or os.environ.get('TFDS_DATA_DIR') or
            import_tfds().core.constants.DATA_DIR)
    return os.path.join(os.path.expanduser(root), CACHE_SUBDIR)


def digest(*parts: Any) -> str:
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def read_cache(path: str) -> Any:
  """The JSON or .npy file at `path`; None where it cannot be read."""
  try:
    if path.endswith('.npy'):
      return np.load(path)
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_cache(path: str, value: Any) -> None:
  """Writes a temporary file renamed to `path` (readers never see half a
  file); a failure is only logged."""
  npy = path.endswith('.npy')
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb' if npy else 'w') as f:
      if npy:
        np.save(f, value)
      else:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)
  except OSError as e:
    logging.warning('Could not write the cache file %s: %s', path, e)


def tf_error_message(error) -> str:
  """The first line of a TensorFlow error, without the op decorations."""
  lines = error.message.strip().splitlines() or ['']
  message = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', lines[0])
  return re.sub(r'\s*\[Op:\w+\].*$', '', message) or type(error).__name__


def numpy_batches(ds, source_name: str, what: str) -> Iterator[Any]:
  """`ds` as NumPy, in a deterministic order with its maps run in parallel;
  a TensorFlow failure becomes a DataError naming the source and `what`."""
  tf = import_tensorflow()
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  try:
    yield from ds.with_options(options).as_numpy_iterator()
  except tf.errors.OpError as e:
    raise DataError(f'Reading {source_name!r} failed during {what}: '
                    f'{tf_error_message(e)}') from None
