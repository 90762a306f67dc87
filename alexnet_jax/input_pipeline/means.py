"""The training split's statistics over its resized squares (all processes'
shares): the mean per channel (`normalization.mean_from_data`) or per pixel
(`normalization.mean_image`, the paper's mean image, as Caffe's
imagenet_mean.binaryproto), and the principal components of its RGB values
(`augment.lighting_from_data`: the paper's PCA lighting, section 4.1). Each
is computed once and cached under `DataOptions.cache_dir()`, keyed by the
split's identity and the resizing.
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


def _pixel_sums(source, split: str, pre: Preprocess, per_image: Callable,
                what: str) -> tuple[np.ndarray, int]:
  """The sum over `split`'s resized squares of `per_image(square)` (the
  square as float64 [resize_size, resize_size, 3], 0-255), and the count."""
  tf = import_tensorflow()
  read = source.read
  ds = source.records(source.shards(split, 1)[0]).map(
      lambda r: per_image(tf.cast(pre.decode_and_resize(read(r)), tf.float64)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  start = time.perf_counter()
  total, count = 0.0, 0
  for sums in numpy_batches(ds.batch(64), source.name, f'measuring {what}'):
    total = total + sums.sum(axis=0)
    count += len(sums)
  logging.info('Measured %s of %d images in %.1f s.', what, count,
               time.perf_counter() - start)
  return np.asarray(total), count


def _cached(source, split: str, pre: Preprocess, cache_dir: str, kind: str,
            compute: Callable[[], dict]) -> dict:
  """`compute()`'s dict of lists, cached by the split and the resizing."""
  key = source.identity(split) + [pre.resize_size, pre.resize_mode, kind]
  path = os.path.join(cache_dir, 'means', cache.digest(key)[:24] + '.json')
  cached = cache.read_json(path)
  if cached and cached.get('key') == key:
    return cached
  value = compute()
  cache.write_json(path, dict(value, key=key))
  return value


def channel_mean(source, split: str, pre: Preprocess,
                 cache_dir: str) -> tuple[float, float, float]:
  """Mean RGB (0-255) of `split`'s resized squares."""
  tf = import_tensorflow()

  def compute():
    total, count = _pixel_sums(source, split, pre,
                               lambda x: tf.reduce_sum(x, axis=(0, 1)),
                               'the mean RGB')
    return {'mean': (total / (count * pre.resize_size ** 2)).tolist()}
  return tuple(_cached(source, split, pre, cache_dir, 'rgb', compute)['mean'])


def rgb_principal_components(source, split: str, pre: Preprocess,
                             cache_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(eigenvalues [3], largest first; eigenvectors as the columns [3, 3]) of
  the covariance of `split`'s RGB values, on the [0, 1] scale of
  augmentation.LIGHTING_EIGVAL and LIGHTING_EIGVEC (ImageNet's)."""
  tf = import_tensorflow()

  def moments(x):  # Sums of each channel and of each product of two.
    rgb = tf.reshape(x / 255.0, (-1, 3))
    return tf.concat([tf.reduce_sum(rgb, 0), tf.reshape(
        tf.matmul(rgb, rgb, transpose_a=True), (9,))], 0)

  def compute():
    total, count = _pixel_sums(source, split, pre, moments,
                               "the RGB values' principal components")
    n = count * pre.resize_size ** 2
    mean = total[:3] / n
    eigval, eigvec = np.linalg.eigh(  # Ascending.
        total[3:].reshape(3, 3) / n - np.outer(mean, mean))
    return {'eigval': eigval[::-1].tolist(), 'eigvec': eigvec[:, ::-1].tolist()}
  pca = _cached(source, split, pre, cache_dir, 'pca', compute)
  return (np.array(pca['eigval'], np.float32),
          np.array(pca['eigvec'], np.float32))


def mean_image(source, split: str, pre: Preprocess,
               cache_dir: str) -> np.ndarray:
  """The per-pixel mean (0-255, float32 [resize_size, resize_size, 3]) of
  `split`'s resized squares."""
  key = source.identity(split) + [pre.resize_size, pre.resize_mode, 'image']
  path = os.path.join(cache_dir, 'means', cache.digest(key)[:24] + '.npy')
  size = (pre.resize_size, pre.resize_size, 3)
  cached = cache.read_npy(path)
  if cached is not None and cached.shape == size:
    return cached
  total, count = _pixel_sums(source, split, pre, lambda x: x,
                             'the mean image')
  mean = (total / count).astype(np.float32)
  cache.write_npy(path, mean)
  return mean
