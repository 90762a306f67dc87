"""config.normalization.mean_image: the paper's per-pixel mean image of the
training split, subtracted from every crop at the crop's place."""

import os

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
from alexnet_jax import input_pipeline
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.tools import predict
from conftest import tiny_config
from test_image_folder import write_image


def _folder(root):
  """PNGs (lossless) at the resize size: the mean image is known exactly."""
  images = {}
  for split, n in (('train', 3), ('validation', 1)):
    for c in 'ab':
      for i in range(n):
        path = os.path.join(root, split, c, f'{i}.png')
        write_image(path, (72, 72), 100 * ord(c) + 10 * i + len(split), 'PNG')
        images[path] = tf.io.decode_png(open(path, 'rb').read()).numpy()
  return images


def _config(root, tmp_path, **overrides):
  config = tiny_config(dataset='image_folder', batch_size=2, eval_batch_size=2,
                       cache=False, **overrides)
  config.dataset_dir = root
  config.data_dir = str(tmp_path / 'tfds')
  config.model.num_classes = 2
  config.normalization.mean_image = True
  return config


def test_crops_lose_the_mean_image_at_their_own_place(tmp_path):
  root = str(tmp_path / 'data')
  images = _folder(root)
  config = _config(root, tmp_path)
  data = input_pipeline.create_data(config)
  train_images = [v for k, v in images.items() if '/train/' in k]
  want_mean = np.mean(np.stack(train_images).astype(np.float64), axis=0)
  np.testing.assert_allclose(data.mean_image, want_mean, atol=1e-3)
  # Training: each crop less the mean image's crop at the same corner, so
  # adding back the corner's mean gives one of the training images.
  s = config.image_size
  batch = next(data.train_batches(0))
  assert batch['image'].dtype == np.float32
  draws = input_pipeline.draw_augmentation(data.preprocess, 6, 0, config.seed)
  order = np.random.default_rng([config.seed, 0]).permutation(6)
  for p, crop in enumerate(batch['image'][0]):
    y, x = draws.offsets[p]
    restored = crop + want_mean[y:y + s, x:x + s]
    source = sorted(k for k in images if '/train/' in k)[order[p]]
    np.testing.assert_allclose(restored, images[source][y:y + s, x:x + s],
                               atol=1e-3)
  # The accelerator subtracts no channel mean on top.
  assert steps.Normalization.from_config(config.normalization).mean == (
      0.0, 0.0, 0.0)
  # Evaluation: the centre crop less the mean image's centre.
  m = (72 - s) // 2
  evals = next(data.eval_batches())
  first = sorted(k for k in images if '/validation/' in k)[0]
  np.testing.assert_allclose(
      evals['image'][0][0],
      images[first][m:m + s, m:m + s] - want_mean[m:m + s, m:m + s],
      atol=1e-3)
  # predict subtracts the same crops of the run's saved mean image.
  got = predict.preprocess(images[first], data.preprocess, False,
                           data.mean_image)
  np.testing.assert_allclose(got[0], evals['image'][0][0], atol=1e-3)


def test_mean_image_and_mean_from_data_are_exclusive(tmp_path):
  config = tiny_config()
  config.normalization.mean_image = True
  config.normalization.mean_from_data = True
  with pytest.raises(config_lib.ConfigError,
                     match='normalization.mean_image'):
    config_lib.validate(config)


@pytest.mark.slow
def test_a_run_keeps_its_mean_image_for_predict(tmp_path, capsys):
  root = str(tmp_path / 'data')
  images = _folder(root)
  config = _config(root, tmp_path, num_train_steps=2)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  saved = np.load(os.path.join(workdir, 'mean_image.npy'))
  train_images = [v for k, v in images.items() if '/train/' in k]
  np.testing.assert_allclose(saved, np.mean(train_images, axis=0), atol=1e-3)
  predict.main(['--workdir', workdir, next(iter(images))])
  assert next(iter(images)) in capsys.readouterr().out
  os.remove(os.path.join(workdir, 'mean_image.npy'))
  with pytest.raises(SystemExit, match='mean_image.npy'):
    predict.main(['--workdir', workdir, next(iter(images))])


def _correlated_folder(root):
  """PNGs at the resize size whose RGB values are correlated (distinct
  eigenvalues); returns the training split's pixels, [0, 1]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(7)
  train_pixels = []
  for split, n in (('train', 3), ('validation', 1)):
    for c in 'ab':
      for i in range(n):
        base = rng.uniform(0, 1, (72, 72, 1))
        rgb = base * np.array([200.0, 150.0, 60.0]) + rng.uniform(
            0, 50, (72, 72, 3)) * np.array([1.0, 0.5, 0.2])
        pixels = rgb.astype(np.uint8)
        path = os.path.join(root, split, c, f'{i}.png')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels).save(path)
        if split == 'train':
          train_pixels.append(pixels.reshape(-1, 3) / 255.0)
  return np.concatenate(train_pixels)


def test_pca_lighting_measured_on_the_training_split(tmp_path):
  root = str(tmp_path / 'data')
  pixels = _correlated_folder(root)
  config = _config(root, tmp_path)
  config.normalization.mean_image = False
  config.augment.lighting_from_data = True
  eigval, eigvec = input_pipeline.create_data(config).lighting
  # NumPy's eigen-decomposition of the 3x3 covariance of the train pixels.
  want_val, want_vec = np.linalg.eigh(np.cov(pixels.T, bias=True))
  np.testing.assert_allclose(eigval, want_val[::-1], rtol=1e-4)
  for k in range(3):  # Each eigenvector, up to its sign.
    assert abs(float(eigvec[:, k] @ want_vec[:, 2 - k])) == pytest.approx(
        1.0, abs=1e-4)
  # The paper's noise, I + [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T with
  # a ~ N(0, std^2): its covariance is std^2 P diag(l^2) P^T.
  pre = input_pipeline.DataOptions.from_config(config).preprocess
  lights = input_pipeline.draw_augmentation(pre, 200_000, 0, 0,
                                            (eigval, eigvec)).lights / 255.0
  want = (config.augment.lighting_std ** 2 * eigvec @ np.diag(eigval ** 2)
          @ eigvec.T)
  np.testing.assert_allclose(np.cov(lights.T), want, atol=0.02 * want.max())
  # A second read is the cached measurement.
  again = input_pipeline.create_data(config).lighting
  np.testing.assert_array_equal(again[0], eigval)
