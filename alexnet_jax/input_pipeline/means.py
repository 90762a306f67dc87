"""The training split's statistics over its resized squares: the mean per
channel (`normalization.mean_from_data`) or per pixel (`mean_image`, the
paper's mean image), and its RGB principal components (the paper's PCA
lighting). Each is measured once and cached by the split and the resizing."""

import os
import time
from typing import Callable

from absl import logging
import numpy as np

from alexnet_jax.input_pipeline import options
from alexnet_jax.input_pipeline.options import import_tensorflow
from alexnet_jax.input_pipeline.preprocess import Preprocess


def _measured(source, split: str, pre: Preprocess, cache_dir: str, kind: str,
              per_image: Callable, finish: Callable) -> np.ndarray:
  """finish(sum of per_image(square) over `split`'s resized squares (float64
  [size, size, 3], 0-255), count), all processes' shares, cached."""
  key = source.identity(split) + [pre.resize_size, pre.resize_mode, kind]
  path = os.path.join(cache_dir, 'means', options.digest(key)[:24] + '.npy')
  value = options.read_cache(path)
  if value is None:
    tf = import_tensorflow()
    ds = source.records(source.shards(split, 1)[0]).map(
        lambda r: per_image(tf.cast(pre.decode_and_resize(r['image']),
                                    tf.float64)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    start = time.perf_counter()
    total, count = 0.0, 0
    for sums in options.numpy_batches(ds.batch(64), source.name,
                                      f'measuring the {kind}'):
      total = total + sums.sum(axis=0)
      count += len(sums)
    logging.info('Measured the %s of %d images in %.1f s.', kind, count,
                 time.perf_counter() - start)
    value = finish(np.asarray(total), count)
    options.write_cache(path, value)
  logging.info('The %s of the %r split: %s', kind, split,
               np.array2string(value, threshold=12))
  return value


def channel_mean(source, split: str, pre: Preprocess,
                 cache_dir: str) -> tuple[float, float, float]:
  """Mean RGB (0-255) of `split`'s resized squares."""
  tf = import_tensorflow()
  mean = _measured(source, split, pre, cache_dir, 'mean RGB',
                   lambda x: tf.reduce_sum(x, axis=(0, 1)),
                   lambda total, n: total / (n * pre.resize_size ** 2))
  return tuple(float(v) for v in mean)


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

  def components(total, count):  # [4, 3]: eigenvalues, then eigenvectors.
    n = count * pre.resize_size ** 2
    mean = total[:3] / n
    eigval, eigvec = np.linalg.eigh(  # Ascending.
        total[3:].reshape(3, 3) / n - np.outer(mean, mean))
    return np.concatenate([eigval[None, ::-1], eigvec[:, ::-1]])
  pca = _measured(source, split, pre, cache_dir, 'RGB principal components',
                  moments, components).astype(np.float32)
  return pca[0], pca[1:]


def mean_image(source, split: str, pre: Preprocess,
               cache_dir: str) -> np.ndarray:
  """The per-pixel mean (0-255, float32 [resize_size, resize_size, 3]) of
  `split`'s resized squares."""
  return _measured(source, split, pre, cache_dir, 'mean image', lambda x: x,
                   lambda total, n: (total / n).astype(np.float32))
