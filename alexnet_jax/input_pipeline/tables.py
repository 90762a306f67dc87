"""Random access to a split: record index -> (encoded image bytes, label),
inside tf.data. The global shuffle needs it (each process reads only the
records of its share of each global batch)."""

from __future__ import annotations

import numpy as np

from alexnet_jax.input_pipeline.options import import_tensorflow


class MemoryTable:
  """A split held in memory: encoded bytes or file paths, and labels, looked
  up by index (a tf.gather)."""

  def __init__(self, keys: np.ndarray, labels: np.ndarray, are_paths: bool):
    tf = import_tensorflow()
    self.size = len(labels)
    self._keys = tf.constant(keys, tf.string, shape=(self.size,))
    self._labels = tf.constant(labels, tf.int64, shape=(self.size,))
    self._are_paths = are_paths

  def fetch(self, index):
    """int64 scalar index -> (encoded image bytes, label)."""
    tf = import_tensorflow()
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
    tf = import_tensorflow()

    def read(i):
      record = self._source[int(i)]
      return record['image'], np.int64(record['label'])

    image, label = tf.py_function(read, [index], (tf.string, tf.int64))
    image.set_shape(())
    label.set_shape(())
    return image, label
