"""Random access to a split inside tf.data: `fetch_many(int64 [k] indices)`
gives ([k encoded images' bytes], labels [k]), one Python call for the
group, for the global shuffle (a process reads only its records)."""

import numpy as np

from alexnet_jax.input_pipeline.options import import_tensorflow


class MemoryTable:
  """A split held in memory: encoded bytes or file paths, and labels."""

  def __init__(self, keys: np.ndarray, labels: np.ndarray, are_paths: bool):
    tf = import_tensorflow()
    self.size = len(labels)
    self._keys = tf.constant(keys, tf.string, shape=(self.size,))
    self._labels = tf.constant(labels, tf.int64, shape=(self.size,))
    self._are_paths = are_paths

  def fetch_many(self, indices):
    tf = import_tensorflow()
    keys = tf.unstack(tf.gather(self._keys, indices))
    images = [tf.io.read_file(k) for k in keys] if self._are_paths else keys
    return images, tf.gather(self._labels, indices)


class DataSourceTable:
  """An array_record TFDS split (`tfds.data_source`)."""

  def __init__(self, source):
    self._source = source
    self.size = len(source)

  def fetch_many(self, indices):
    tf = import_tensorflow()

    def read(indices):  # A call per record costs more than the read.
      records = [self._source[int(i)] for i in indices]
      return (np.array([r['image'] for r in records], object),
              np.array([r['label'] for r in records], np.int64))

    images, labels = tf.numpy_function(read, [indices], (tf.string, tf.int64),
                                       stateful=False)
    images.set_shape(indices.shape)
    labels.set_shape(indices.shape)
    return tf.unstack(images), labels


def records(table, start: int = 0):
  """tf.data of {'image': encoded bytes, 'label'} of the table's records
  from `start` (those before are not read)."""
  tf = import_tensorflow()

  def record(index):
    images, labels = table.fetch_many(tf.reshape(index, [1]))
    return {'image': images[0], 'label': labels[0]}
  return tf.data.Dataset.range(start, table.size).map(
      record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
