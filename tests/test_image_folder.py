"""Image folders: layouts, the stratified split, unreadable images, training."""

import logging
import os

import numpy as np
from PIL import Image
import pytest

from alexnet_jax import config_lib
from alexnet_jax import input_pipeline
from alexnet_jax import train
from conftest import tiny_config


def write_image(path, size, seed, fmt='JPEG', colour=None):
  """A random (or solid `colour`) RGB image of `size` (h, w) at `path`."""
  rng = np.random.default_rng(seed)
  if colour is None:
    pixels = rng.integers(0, 256, size + (3,), dtype=np.uint8)
  else:
    pixels = np.broadcast_to(np.array(colour, np.uint8), size + (3,))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.ascontiguousarray(pixels)).save(path, format=fmt)
  return path


def write_flowers_folder(root, classes=('bluebell', 'crocus', 'daisy'),
                         per_class=6, corrupt=True):
  """root/<class>/image_XXXX.jpg, the Oxford 17 Flowers layout, with random
  sizes, one PNG, a truncated JPEG and a text file named .jpg (if corrupt)."""
  seed = 0
  for c in classes:
    for i in range(per_class):
      seed += 1
      size = (int(40 + 7 * (seed % 5)), int(50 + 5 * (seed % 7)))
      fmt = 'PNG' if seed == 2 else 'JPEG'
      write_image(os.path.join(root, c, f'image_{seed:04d}.jpg'), size, seed,
                  fmt=fmt)
  bad = []
  if corrupt:
    good = os.path.join(root, classes[0], 'image_0001.jpg')
    data = open(good, 'rb').read()
    bad.append(os.path.join(classes[1], 'image_9998.jpg'))
    with open(os.path.join(root, bad[-1]), 'wb') as f:
      f.write(data[:len(data) // 2])  # Truncated JPEG.
    bad.append(os.path.join(classes[2], 'image_9999.jpg'))
    with open(os.path.join(root, bad[-1]), 'w') as f:
      f.write('not an image')
  return bad


def folder_config(root, tmp_path, **overrides):
  config = tiny_config(**{'dataset': 'image_folder', 'batch_size': 4,
                          'eval_batch_size': 4, **overrides})
  config.dataset_dir = str(root)
  config.data_dir = str(tmp_path / 'tfds')  # Caches go here.
  config.model.num_classes = 3
  return config


def test_flat_layout_split_is_stratified_deterministic_and_complete(tmp_path):
  root = tmp_path / 'flowers'
  write_flowers_folder(str(root), per_class=60, corrupt=False)
  splits, classes = input_pipeline.list_image_folder(str(root), 0.2)
  assert classes == ['bluebell', 'crocus', 'daisy']
  assert set(splits) == {'train', 'validation'}
  for label, name in enumerate(classes):
    val = [p for p, y in splits['validation'] if y == label]
    tr = [p for p, y in splits['train'] if y == label]
    assert 4 <= len(val) <= 20 and len(val) + len(tr) == 60  # ~20% (12).
    assert all(p.startswith(name + os.sep) for p in val + tr)
  every = sorted(p for s in splits.values() for p, _ in s)
  assert every == sorted(os.path.join(c, f) for c in classes
                         for f in os.listdir(root / c))
  assert len(set(every)) == 180
  assert input_pipeline.list_image_folder(str(root), 0.2) == (splits, classes)
  # The hash picks the held-out files, not the sort order.
  firsts = {sorted(os.listdir(root / c))[:12] == sorted(
      os.path.basename(p) for p, y in splits['validation'] if y == i)
            for i, c in enumerate(classes)}
  assert firsts != {True}
  no_val, _ = input_pipeline.list_image_folder(str(root), 0.0)
  assert set(no_val) == {'train'}


def test_adding_files_moves_no_file_across_the_split(tmp_path):
  root = tmp_path / 'flowers'
  write_flowers_folder(str(root), per_class=20, corrupt=False)
  before, _ = input_pipeline.list_image_folder(str(root), 0.3)
  for c in ('bluebell', 'daisy'):  # Names sorting before and after the rest.
    for i in range(15):
      write_image(str(root / c / f'a{i:03d}.jpg'), (30, 30), i)
      write_image(str(root / c / f'z{i:03d}.jpg'), (30, 30), i)
  after, _ = input_pipeline.list_image_folder(str(root), 0.3)
  for side in ('train', 'validation'):
    assert set(before[side]) <= set(after[side]), side
  assert len(after['validation']) > len(before['validation'])


def test_split_layout_matches_tfds_image_folder(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  root = tmp_path / 'split_layout'
  for split, n in (('train', 3), ('test', 2)):
    for c in ('cat', 'dog', 'emu'):
      if split == 'test' and c == 'emu':
        continue  # A class missing from a split keeps its number.
      for i in range(n):
        write_image(str(root / split / c / f'{i}.jpg'), (20, 24), i)
  splits, classes = input_pipeline.list_image_folder(str(root), 0.2)
  builder = tfds.folder_dataset.ImageFolder(str(root))
  assert classes == builder.info.features['label'].names
  assert {s: len(v) for s, v in splits.items()} == {
      s: builder.info.splits[s].num_examples for s in ('train', 'test')}
  assert sorted(splits['test'])[0] == (os.path.join('test', 'cat', '0.jpg'), 0)
  config = folder_config(root, tmp_path, eval_split='test', batch_size=2)
  data = input_pipeline.create_data(config)
  assert data.num_train_examples == 9 and data.num_eval_examples == 4
  with pytest.raises(config_lib.ConfigError, match="'validation'.*'test'"):
    input_pipeline.create_data(folder_config(root, tmp_path))


def test_corrupt_images_are_skipped_counted_and_named(tmp_path, caplog):
  root = tmp_path / 'flowers'
  bad = write_flowers_folder(str(root))
  config = folder_config(root, tmp_path, cache=False)
  with caplog.at_level(logging.WARNING):
    data = input_pipeline.create_data(config)
  assert sorted(data.bad_images) == sorted(bad)
  assert 'Skipping 2 of 20 images' in caplog.text
  assert all(os.path.join(str(root), p) in caplog.text for p in bad)
  assert data.num_train_examples + data.num_eval_examples == 18
  # Two epochs of training batches and the evaluation read without error.
  batches = data.train_batches(0)
  for _ in range(2 * data.steps_per_epoch + 1):
    batch = next(batches)
    assert batch['image'].shape == (1, 4, 67, 67, 3)
  seen = sum(int(b['mask'].sum()) for b in data.eval_batches())
  assert seen == data.num_eval_examples

  config.bad_images = 'error'
  with pytest.raises(input_pipeline.DataError) as error:
    input_pipeline.create_data(config)
  message = str(error.value)
  assert '2 of 20 images' in message
  assert all(os.path.join(str(root), p) in message for p in bad)
  assert 'bad_images="skip"' in message


def test_scan_is_cached_until_a_file_changes(tmp_path, monkeypatch):
  root = tmp_path / 'flowers'
  bad = write_flowers_folder(str(root))
  config = folder_config(root, tmp_path)
  input_pipeline.create_data(config)
  calls = []
  real_scan = input_pipeline.scan_images
  monkeypatch.setattr(input_pipeline.image_folder, 'scan_images',
                      lambda *a: calls.append(a) or real_scan(*a))
  assert sorted(input_pipeline.create_data(config).bad_images) == sorted(bad)
  assert not calls  # From the cache.
  write_image(str(root / bad[0]), (30, 40), 7)  # The file is repaired.
  data = input_pipeline.create_data(config)
  assert len(calls) == 1 and list(data.bad_images) == [bad[1]]


def test_dataset_mean_of_the_training_split(tmp_path):
  root = tmp_path / 'solid'
  colours = {'a': (200, 10, 40), 'b': (0, 100, 250)}
  for c, colour in colours.items():
    for i in range(4):
      write_image(str(root / c / f'{i}.png'), (30 + 3 * i, 50), i, 'PNG',
                  colour)
  config = folder_config(root, tmp_path, batch_size=2)
  config.model.num_classes = 2
  config.validation_fraction = 0.25
  config.normalization.mean_from_data = True
  data = input_pipeline.create_data(config)
  want = np.mean([colours['a'], colours['b']], axis=0)
  np.testing.assert_allclose(data.normalization_mean, want, atol=1e-3)
  config.normalization.mean_from_data = False
  assert input_pipeline.create_data(config).normalization_mean == (
      123.68, 116.78, 103.94)


def test_folder_errors_name_the_field(tmp_path):
  config = folder_config(tmp_path / 'missing', tmp_path)
  with pytest.raises(config_lib.ConfigError, match='config.dataset_dir'):
    input_pipeline.create_data(config)
  one = tmp_path / 'one'
  write_image(str(one / 'only' / 'a.jpg'), (10, 10), 0)
  with pytest.raises(config_lib.ConfigError, match='at least 2'):
    input_pipeline.create_data(folder_config(one, tmp_path))
  config = folder_config(one, tmp_path)
  config.bad_images = 'ignore'
  with pytest.raises(config_lib.ConfigError, match='config.bad_images'):
    input_pipeline.create_data(config)
  config = folder_config(one, tmp_path)
  config.dataset_dir = None
  with pytest.raises(config_lib.ConfigError, match='config.dataset_dir'):
    input_pipeline.create_data(config)


def test_flowers17_config_trains_on_a_folder_with_a_corrupt_image(tmp_path):
  from configs import flowers17  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'flowers17'
  bad = write_flowers_folder(str(root), per_class=10)
  splits, _ = input_pipeline.list_image_folder(str(root), 0.2)
  num_eval = len([p for p, _ in splits['validation'] if p not in bad])
  config = flowers17.get_config()
  config.dataset_dir = str(root)
  config.data_dir = str(tmp_path / 'tfds')
  config.model.num_classes = 3
  config.model.width = 0.05
  config.image_size = 67
  config.resize_size = 72
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 2
  config.log_every_steps = 1
  last = train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert last['step'] == 2 and np.isfinite(last['train_loss'])
  assert last['eval_examples'] == num_eval >= 2  # About 20% of 30.
  assert np.isfinite(last['eval_loss'])
