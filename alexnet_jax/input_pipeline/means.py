"""The training split's mean, measured over its resized squares (all
processes' shares): per channel (`config.normalization.mean_from_data`) or
per pixel (`config.normalization.mean_image`, the paper's mean image, as
Caffe's imagenet_mean.binaryproto). Each is computed once and cached under
`DataOptions.cache_dir()`, keyed by the split's identity and the resizing.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from absl import logging
import numpy as np

from alexnet_jax.input_pipeline import cache
from alexnet_jax.input_pipeline.options import import_tensorflow
from alexnet_jax.input_pipeline.options import numpy_batches
from alexnet_jax.input_pipeline.options import tf_data_options
from alexnet_jax.input_pipeline.preprocess import Preprocess


def _cache_path(cache_dir: str, key: list, extension: str) -> str:
  return os.path.join(cache_dir, 'means', cache.digest(key)[:24] + extension)


def channel_mean(source, split: str, preprocess: Preprocess,
                 cache_dir: str) -> tuple[float, float, float]:
  """Mean RGB (0-255) of `split`'s resized squares."""
  tf, pre = import_tensorflow(), preprocess
  key = source.identity(split) + [pre.resize_size, pre.resize_mode]
  path = _cache_path(cache_dir, key, '.json')
  cached = cache.read_json(path)
  if cached and cached.get('key') == key:
    return tuple(cached['mean'])
  shard = source.shards(split, 1, False)[0]
  read = source.read
  ds = source.records(shard).map(
      lambda r: tf.reduce_sum(tf.cast(pre.decode_and_resize(read(r)),
                                      tf.float64), axis=(0, 1)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  start = time.perf_counter()
  total, count = np.zeros(3, np.float64), 0
  for sums in numpy_batches(ds.batch(256), source.name,
                            'the mean computation'):
    total += sums.sum(axis=0)
    count += len(sums)
  mean = tuple(float(v) for v in total / (count * pre.resize_size ** 2))
  logging.info('Measured the mean RGB of %d images in %.1f s.', count,
               time.perf_counter() - start)
  cache.write_json(path, {'key': key, 'mean': mean, 'num_images': count})
  return mean


def mean_image(source, split: str, preprocess: Preprocess, cache_dir: str,
               table: Callable[[], object]) -> np.ndarray:
  """The per-pixel mean (0-255, float32 [resize_size, resize_size, 3]) of
  `split`'s resized squares, read through `table()` (the split's random
  access, built only when the cache misses)."""
  tf, pre = import_tensorflow(), preprocess
  key = source.identity(split) + [pre.resize_size, pre.resize_mode, 'image']
  path = _cache_path(cache_dir, key, '.npy')
  size = (pre.resize_size, pre.resize_size, 3)
  cached = cache.read_npy(path)
  if cached is not None and cached.shape == size:
    return cached
  records = table()
  ds = tf.data.Dataset.range(records.size).map(
      lambda i: tf.cast(pre.decode_and_resize(records.fetch(i)[0]),
                        tf.float64),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  start = time.perf_counter()
  total, count = np.zeros(size, np.float64), 0
  for squares in numpy_batches(ds.batch(64).with_options(tf_data_options()),
                               source.name, 'the mean image computation'):
    total += squares.sum(axis=0)
    count += len(squares)
  mean = (total / count).astype(np.float32)
  logging.info('Measured the mean image of %d images in %.1f s.', count,
               time.perf_counter() - start)
  cache.write_npy(path, mean)
  return mean
