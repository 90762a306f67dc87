"""The training split's statistics, measured over its resized squares (all
processes' shares): the mean per channel (`config.normalization.
mean_from_data`) or per pixel (`config.normalization.mean_image`, the paper's
mean image, as Caffe's imagenet_mean.binaryproto), and the principal
components of its RGB values (`config.augment.lighting_from_data`: the
paper's PCA lighting, section 4.1). Each is computed once and cached under
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
from alexnet_jax.input_pipeline.preprocess import Preprocess


def _cache_path(cache_dir: str, key: list, extension: str) -> str:
  return os.path.join(cache_dir, 'means', cache.digest(key)[:24] + extension)


def _pixel_sums(source, split: str, pre: Preprocess, per_image: Callable,
                what: str) -> tuple[np.ndarray, int]:
  """The sum over `split`'s resized squares of `per_image(square)` (the
  square as float64 [resize_size, resize_size, 3], 0-255), and the count."""
  tf = import_tensorflow()
  shard = source.shards(split, 1, False)[0]
  read = source.read
  ds = source.records(shard).map(
      lambda r: per_image(tf.cast(pre.decode_and_resize(read(r)), tf.float64)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  start = time.perf_counter()
  total, count = 0.0, 0
  for sums in numpy_batches(ds.batch(256), source.name, what):
    total = total + sums.sum(axis=0)
    count += len(sums)
  logging.info('Measured %s of %d images in %.1f s.', what[len('the '):],
               count, time.perf_counter() - start)
  return np.asarray(total), count


def channel_mean(source, split: str, preprocess: Preprocess,
                 cache_dir: str) -> tuple[float, float, float]:
  """Mean RGB (0-255) of `split`'s resized squares."""
  tf, pre = import_tensorflow(), preprocess
  key = source.identity(split) + [pre.resize_size, pre.resize_mode]
  path = _cache_path(cache_dir, key, '.json')
  cached = cache.read_json(path)
  if cached and cached.get('key') == key:
    return tuple(cached['mean'])
  total, count = _pixel_sums(
      source, split, pre, lambda x: tf.reduce_sum(x, axis=(0, 1)),
      'the mean RGB')
  mean = tuple(float(v) for v in total / (count * pre.resize_size ** 2))
  cache.write_json(path, {'key': key, 'mean': mean, 'num_images': count})
  return mean


def rgb_principal_components(source, split: str, preprocess: Preprocess,
                             cache_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(eigenvalues [3], largest first; eigenvectors as the columns [3, 3]) of
  the covariance of `split`'s RGB pixel values, on the [0, 1] scale of
  augmentation.LIGHTING_EIGVAL and LIGHTING_EIGVEC (ImageNet's)."""
  tf, pre = import_tensorflow(), preprocess
  key = source.identity(split) + [pre.resize_size, pre.resize_mode, 'pca']
  path = _cache_path(cache_dir, key, '.json')
  cached = cache.read_json(path)
  if cached and cached.get('key') == key:
    return (np.array(cached['eigval'], np.float32),
            np.array(cached['eigvec'], np.float32))

  def moments(x):  # Sums of each channel and of each product of two.
    rgb = tf.reshape(x / 255.0, (-1, 3))
    return tf.concat([tf.reduce_sum(rgb, 0),
                      tf.reshape(tf.matmul(rgb, rgb, transpose_a=True), (9,))],
                     0)

  total, count = _pixel_sums(source, split, pre, moments,
                             "the RGB values' principal components")
  n = count * pre.resize_size ** 2
  mean = total[:3] / n
  covariance = total[3:].reshape(3, 3) / n - np.outer(mean, mean)
  eigval, eigvec = np.linalg.eigh(covariance)  # Ascending.
  eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
  cache.write_json(path, {'key': key, 'eigval': eigval.tolist(),
                          'eigvec': eigvec.tolist(), 'num_images': count})
  return eigval.astype(np.float32), eigvec.astype(np.float32)


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
  for squares in numpy_batches(ds.batch(64), source.name,
                               'the mean image computation'):
    total += squares.sum(axis=0)
    count += len(squares)
  mean = (total / count).astype(np.float32)
  logging.info('Measured the mean image of %d images in %.1f s.', count,
               time.perf_counter() - start)
  cache.write_npy(path, mean)
  return mean
