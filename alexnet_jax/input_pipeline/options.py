"""What every stage of the pipeline shares: the config's data fields, the
errors it raises, and TensorFlow, imported only when a data function runs.

The fields themselves are checked once, in `config_lib.validate_data`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Iterator

from alexnet_jax import config_lib

IMAGE_FOLDER = config_lib.IMAGE_FOLDER
TFDS_DIRECTORY = 'tfds_directory'  # A TFDS dataset in config.dataset_dir.
CACHE_SUBDIR = 'alexnet_jax_cache'  # Under the TFDS data dir.


class DataError(RuntimeError):
  """The data cannot be read: missing files, corrupt images, failed reads."""


def invalid(field: str, value: Any, allowed: str) -> config_lib.ConfigError:
  """The error for a config field, worded as config_lib words its own."""
  return config_lib.ConfigError(
      f'config.{field}={value!r} is invalid: {allowed}.')


def import_tensorflow():
  """TensorFlow, kept off any accelerator (JAX owns it)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  return tf


@functools.cache  # Called for every group of resized crops: set threads once.
def import_cv2():
  """OpenCV, single-threaded: tf.data already runs the resizes in parallel,
  and its own thread pool would compete with them."""
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)
  return cv2


def import_tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


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
    root = (self.data_dir or os.environ.get('TFDS_DATA_DIR') or
            import_tfds().core.constants.DATA_DIR)
    return os.path.join(os.path.expanduser(root), CACHE_SUBDIR)


def tf_error_message(error) -> str:
  """The first line of a TensorFlow error, without the op decorations."""
  lines = error.message.strip().splitlines() or ['']
  message = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', lines[0])
  return re.sub(r'\s*\[Op:\w+\].*$', '', message) or type(error).__name__


def numpy_batches(ds, source_name: str, what: str) -> Iterator[Any]:
  """Iterates the tf.data dataset `ds` as NumPy, turning a TensorFlow failure
  into a DataError that names the source and `what` was being read."""
  tf = import_tensorflow()
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      raise DataError(
          f'Reading {source_name!r} failed during {what}: '
          f'{tf_error_message(e)}') from None
    yield batch


def tf_data_options():
  """tf.data's options for every pipeline here: a deterministic order, maps
  run in parallel."""
  options = import_tensorflow().data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options
