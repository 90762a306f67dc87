"""alexnet_jax.tools.prepare_dataset: resized TFDS shards, resumable,
readable."""

import os

import numpy as np
from PIL import Image
import pytest

from alexnet_jax import config_lib
from alexnet_jax import input_pipeline
from alexnet_jax.input_pipeline import prepare
from conftest import tiny_config

SIZES = [(300, 200), (120, 160), (200, 200), (90, 250), (260, 130)]  # (w, h)


def _options(config):
  return input_pipeline.DataOptions.from_config(config)


def write_folder(root):
  """root/<split>/<class>/*: JPEGs and a PNG of several sizes, some smaller
  than the resize size. Returns {relative path: RGB array}."""
  rng = np.random.default_rng(0)
  images = {}
  for split, count in (('train', 5), ('validation', 2)):
    for label, name in enumerate(('circles', 'squares')):
      folder = os.path.join(root, split, name)
      os.makedirs(folder)
      for i in range(count):
        w, h = SIZES[(i + label) % len(SIZES)]
        # Smooth content, so JPEG and resampling errors stay small.
        y, x = np.mgrid[0:h, 0:w]
        array = np.stack([x * 255 // w, y * 255 // h,
                          np.full_like(x, 40 + 100 * label)], -1)
        array = np.clip(array + rng.integers(-3, 4, array.shape), 0, 255)
        array = array.astype(np.uint8)
        ext = 'png' if i == 0 else 'jpg'
        rel = os.path.join(split, name, f'{i}.{ext}')
        Image.fromarray(array).save(os.path.join(root, rel), quality=95)
        images[rel] = np.asarray(Image.open(os.path.join(root, rel)))
  return images


def folder_config(root, tmp_path):
  config = tiny_config(dataset='image_folder', batch_size=2,
                       eval_batch_size=2)
  config.dataset_dir = str(root)
  config.data_dir = str(tmp_path / 'tfds')
  config.model.num_classes = 2
  return config


def pil_square(array, size):
  """The paper's 256-style preparation done independently with Pillow: the
  shorter side to `size` (antialiased bilinear), then the central square."""
  h, w = array.shape[:2]
  scale = size / min(h, w)
  nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
  resized = np.asarray(Image.fromarray(array).resize(
      (nw, nh), Image.BILINEAR)).astype(np.float32)
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top:top + size, left:left + size]


def read_prepared(path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(path)
  return builder, {split: list(builder.as_data_source(split))
                   for split in builder.info.splits}


def test_prepared_images_are_the_resized_squares_in_source_order(tmp_path):
  images = write_folder(str(tmp_path / 'src'))
  config = folder_config(tmp_path / 'src', tmp_path)
  out = prepare.prepare(_options(config), str(tmp_path / 'out'),
                        examples_per_shard=3)
  builder, splits = read_prepared(out)
  assert builder.info.features['label'].names == ['circles', 'squares']
  assert {s: len(v) for s, v in splits.items()} == {'train': 10,
                                                    'validation': 4}
  assert builder.info.splits['train'].num_shards == 4  # 3 + 3 + 3 + 1.
  size = config.resize_size
  for split in ('train', 'validation'):
    names = sorted(p for p in images if p.startswith(split + os.sep))
    for rel, example in zip(names, splits[split]):
      assert example['label'] == int('squares' in rel)
      assert example['image'].shape == (size, size, 3)
      expected = pil_square(images[rel], size)
      error = np.abs(example['image'].astype(np.float32) - expected)
      assert error.mean() < 3.0, (rel, error.mean())


def test_an_interrupted_preparation_resumes_without_rewriting(tmp_path,
                                                               monkeypatch):
  write_folder(str(tmp_path / 'src'))
  config = folder_config(tmp_path / 'src', tmp_path)
  out = str(tmp_path / 'out')
  real = prepare._encoded_examples
  calls = []

  def dies_on_the_second_shard(*args):
    calls.append(args)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(*args)

  monkeypatch.setattr(prepare, '_encoded_examples',
                      dies_on_the_second_shard)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(_options(config), out, examples_per_shard=4)
  first = prepare._shard_path(out, 'train', 0, 3)
  assert sorted(os.listdir(out)) == [os.path.basename(first)]
  written = os.stat(first).st_mtime_ns
  stale = prepare._shard_path(out, 'train', 1, 3) + '.tmp999'
  open(stale, 'wb').close()  # As a run killed mid-shard leaves it.
  monkeypatch.setattr(prepare, '_encoded_examples', real)
  prepare.prepare(_options(config), out, examples_per_shard=4)
  assert os.stat(first).st_mtime_ns == written  # Not written again.
  _, splits = read_prepared(out)
  assert [len(splits['train']), len(splits['validation'])] == [10, 4]
  assert not [f for f in os.listdir(out) if '.tmp' in f]


def test_the_pipeline_trains_from_a_prepared_directory(tmp_path):
  write_folder(str(tmp_path / 'src'))
  config = folder_config(tmp_path / 'src', tmp_path)
  out = prepare.prepare(_options(config), str(tmp_path / 'out'),
                        examples_per_shard=8)
  config.dataset = input_pipeline.TFDS_DIRECTORY
  config.dataset_dir = out
  config.cache = False
  data = input_pipeline.create_data(config)
  assert data.class_names == ['circles', 'squares']
  assert (data.num_train_examples, data.num_eval_examples) == (10, 4)
  assert data.source.image_shape == (config.resize_size,) * 2  # Planned.
  batch = next(data.train_batches(0))
  # Each crop as the plain way makes it: the whole stored JPEG decoded, the
  # crop cut at the example's drawn corner.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  stored = tfds.builder_from_directory(out).as_data_source(
      'train', decoders={'image': tfds.decode.SkipDecoding()})
  order = np.random.default_rng([config.seed, 0]).permutation(10)
  corners = np.random.default_rng([config.seed, 0, 1]).integers(
      0, config.resize_size - config.image_size + 1, (10, 2))
  size = config.image_size
  for p, crop in enumerate(batch['image'][0]):
    full = tf.io.decode_jpeg(stored[int(order[p])]['image']).numpy()
    y, x = corners[p]
    np.testing.assert_array_equal(crop, full[y:y + size, x:x + size])


def test_a_directory_without_a_dataset_is_refused_naming_the_field(tmp_path):
  config = tiny_config(dataset=input_pipeline.TFDS_DIRECTORY)
  config.dataset_dir = str(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='dataset_dir'):
    input_pipeline.create_data(config)
