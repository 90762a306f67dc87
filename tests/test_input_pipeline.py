"""The input pipeline: TFDS datasets end to end (mocked), the paper's
augmentation, evaluation that counts every example once, resumable order."""

import collections
import hashlib
import itertools
import os

import jax
import numpy as np
from PIL import Image
import pytest

tf = pytest.importorskip('tensorflow')
tfds = pytest.importorskip('tensorflow_datasets')

from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
from alexnet_jax import input_pipeline
from alexnet_jax import steps
from alexnet_jax import train
from conftest import tiny_config
from test_image_folder import folder_config
from test_image_folder import write_image

Preprocess = input_pipeline.Preprocess


# ---------------------------------------------------------------------------
# TFDS datasets, one training step end to end under tfds.testing.mock_data.
# ---------------------------------------------------------------------------


def _manual_dir(path, files=('ILSVRC2012_img_train.tar',
                             'ILSVRC2012_img_val.tar')):
  os.makedirs(path, exist_ok=True)
  for f in files:
    open(os.path.join(path, f), 'w').close()
  return str(path)


@pytest.mark.slow
def test_imagenet2012_trains_one_step_under_mock_data(tmp_path):
  config = tiny_config(dataset='imagenet2012', num_train_steps=1, cache=False,
                       **{'model.num_classes': 1000})
  config.manual_dir = _manual_dir(tmp_path / 'manual')
  config.data_dir = str(tmp_path / 'tfds')
  # Mock images are JPEGs of random sizes (5-50 pixels a side).
  with tfds.testing.mock_data(num_examples=10):
    last = train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert last['step'] == 1 and np.isfinite(last['train_loss'])
  assert last['eval_examples'] == 10 and np.isfinite(last['eval_loss'])


@pytest.mark.slow
def test_oxford_flowers102_trains_one_step_under_mock_data(tmp_path):
  config = tiny_config(dataset='oxford_flowers102', num_train_steps=1,
                       train_split='train+validation', eval_split='test',
                       **{'model.num_classes': 102})
  config.data_dir = str(tmp_path / 'tfds')
  with tfds.testing.mock_data(num_examples=12):  # PNGs of random sizes.
    last = train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert last['step'] == 1 and np.isfinite(last['train_loss'])
  assert last['eval_examples'] == 12  # One full and one padded batch of 8.


def test_imagenet2012_without_its_tar_files_says_which_go_where(tmp_path):
  config = tiny_config(dataset='imagenet2012')
  config.data_dir = str(tmp_path / 'tfds')
  config.manual_dir = _manual_dir(tmp_path / 'manual',
                                  files=('ILSVRC2012_img_val.tar',))
  with pytest.raises(input_pipeline.DataError) as error:
    input_pipeline.create_data(config)
  message = str(error.value)
  assert (f'put ILSVRC2012_img_train.tar into {config.manual_dir} '
          '(config.manual_dir)') in message
  assert '\n' not in message
  assert 'ILSVRC2012_img_val.tar' not in message  # It is there.


def test_unknown_dataset_suggests_close_names():
  with pytest.raises(config_lib.ConfigError, match='imagenet2012'):
    input_pipeline.create_data(tiny_config(dataset='imagenet2021'))


# ---------------------------------------------------------------------------
# Augmentation.
# ---------------------------------------------------------------------------


def _coordinates(size):
  """uint8 [size, size, 3]: (y * size + x, x, y) at pixel (y, x)."""
  y, x = np.mgrid[:size, :size]
  return tf.constant(np.stack([y * size + x, x, y], -1).astype(np.uint8))


# fb.resnet.torch's ImageNet RGB eigenvalues and eigenvectors (pixels in
# [0, 1]), which the paper's PCA lighting uses.
EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]])


def test_augmentation_draws_cover_every_crop_and_flip_half():
  pre = Preprocess(image_size=5, resize_size=8, resize_mode='crop',
                   random_crop=True, flip=True, lighting_std=0.1)
  draws = input_pipeline.draw_augmentation(pre, 4000, epoch=3, seed=7)
  assert draws.offsets.shape == (4000, 2) and draws.lights.shape == (4000, 3)
  assert set(draws.offsets.ravel()) == {0, 1, 2, 3}  # All inside, all used.
  assert 1800 < draws.flips.sum() < 2200
  again = input_pipeline.draw_augmentation(pre, 4000, epoch=3, seed=7)
  np.testing.assert_array_equal(draws.offsets, again.offsets)
  np.testing.assert_array_equal(draws.lights, again.lights)
  other = input_pipeline.draw_augmentation(pre, 4000, epoch=4, seed=7)
  assert (other.offsets != draws.offsets).any()
  # A switch turned off leaves the other draws as they were.
  fixed = input_pipeline.draw_augmentation(
      Preprocess(image_size=5, resize_size=8, resize_mode='crop',
                 random_crop=False, flip=False, lighting_std=0.1),
      4000, epoch=3, seed=7)
  assert (fixed.offsets == 1).all() and not fixed.flips.any()
  np.testing.assert_array_equal(fixed.lights, draws.lights)


def test_lighting_noise_follows_the_papers_pca_constants():
  np.testing.assert_array_equal(input_pipeline.LIGHTING_EIGVAL,
                                np.float32(EIGVAL))
  np.testing.assert_array_equal(input_pipeline.LIGHTING_EIGVEC,
                                np.float32(EIGVEC))
  std = 0.1
  pre = Preprocess(image_size=5, resize_size=8, resize_mode='crop',
                   random_crop=True, flip=True, lighting_std=std)
  offsets = input_pipeline.draw_augmentation(pre, 4000, 0, 3).lights
  # In the eigenvector basis the noise is independent, with the standard
  # deviations 255 * std * eigval; the dominant direction is brightness.
  components = offsets @ EIGVEC / 255.0
  np.testing.assert_allclose(components.std(axis=0), std * EIGVAL, rtol=0.06)
  np.testing.assert_allclose(components.mean(axis=0), 0.0, atol=0.002)
  corr = np.corrcoef(components.T)
  assert np.abs(corr - np.eye(3)).max() < 0.06
  principal = np.linalg.eigh(np.cov(offsets.T))[1][:, -1]
  assert np.abs(np.abs(principal) - 3 ** -0.5).max() < 0.02  # ~(1, 1, 1).


def test_flip_and_lighting_are_applied_in_float_on_the_accelerator():
  # The paper's formula, I_xy + [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T, with
  # pixels on the 0-255 scale, then the mean subtracted and the std divided.
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (4, 3, 5, 3), dtype=np.uint8)
  alpha = rng.normal(0.0, 0.1, (4, 3))
  alpha[:, 1:] = np.abs(alpha[:, 1:]) + 0.05  # Components 2, 3 >= ~0.1 level.
  offsets = 255.0 * (alpha * EIGVAL) @ EIGVEC.T
  flips = np.array([True, False, True, False])
  config = tiny_config()
  mean = np.array(config.normalization.mean)
  std = np.array(config.normalization.std)
  batch = {'image': images, 'flip': flips,
           'light': offsets.astype(np.float32)}
  got = np.asarray(steps.training_images(
      batch, steps.Normalization.from_config(config.normalization)))
  lit = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  lit = lit + offsets[:, None, None, :]
  np.testing.assert_allclose(got, (lit - mean) / std, atol=1e-4)
  # Back in the eigenvector basis, all three components are there.
  components = (got * std + mean - np.where(
      flips[:, None, None, None], images[:, :, ::-1], images)) @ EIGVEC
  np.testing.assert_allclose(
      components / (255.0 * EIGVAL),
      np.broadcast_to(alpha[:, None, None, :], components.shape),
      rtol=2e-3, atol=2e-3)


def test_resize_modes_keep_the_centre_or_the_whole_image():
  # Channel 0 holds 3 * column: a 40x80 image, resized to a 20x20 square.
  x = np.broadcast_to((np.arange(80) * 3)[None, :, None], (40, 80, 3))
  image = tf.constant(x.astype(np.uint8))
  # Crop: resized to 20x40, columns 10-29 kept: original columns 20.5-58.5.
  # Squash: to 20x20, all columns: original columns 1.5-77.5.
  for mode, low, high in (('crop', 61.5, 175.5), ('squash', 4.5, 232.5)):
    pre = Preprocess(image_size=16, resize_size=20, resize_mode=mode,
                     random_crop=True, flip=True, lighting_std=0.0)
    square = pre.resize_square(image).numpy().astype(int)
    assert square.shape == (20, 20, 3)
    assert abs(square[:, 0, 0].mean() - low) <= 3, mode
    assert abs(square[:, -1, 0].mean() - high) <= 3, mode
    assert np.all(np.diff(square[0, :, 0]) > 0)  # Not mirrored.


def _encode(pixels, fmt):
  return (tf.io.encode_png(pixels) if fmt == 'PNG' else
          tf.io.encode_jpeg(pixels, quality=95)).numpy()


def _smooth(h, w):
  y, x = np.mgrid[:h, :w]
  return tf.constant(np.stack([x * 200 // w, y * 200 // h,
                               100 + 60 * np.sin(x / 9.0 + y / 13.0)],
                              -1).astype(np.uint8))


@pytest.mark.parametrize('shape,fmt,mode,exact', [
    ((72, 72), 'JPEG', 'crop', True),  # Shorter side == resize_size.
    ((72, 90), 'JPEG', 'crop', True),
    ((100, 150), 'JPEG', 'crop', False),
    ((150, 100), 'PNG', 'crop', False),
    ((60, 90), 'PNG', 'squash', False),
])
def test_windowed_decoding_equals_resize_then_crop(shape, fmt, mode, exact):
  pre = Preprocess(image_size=67, resize_size=72, resize_mode=mode,
                   random_crop=True, flip=True, lighting_std=0.0)
  data = _encode(_smooth(*shape), fmt)
  square = pre.decode_and_resize(data)
  offsets = np.array([(0, 0), (5, 2), (3, 5), (2, 2)], np.int32)
  crops = pre.crops_from_bytes([data] * 4, tf.constant(offsets)).numpy()
  if fmt == 'JPEG':  # The path for datasets of JPEGs only: the same crops.
    np.testing.assert_array_equal(
        pre.crops_from_bytes([data] * 4, tf.constant(offsets), jpeg_only=True),
        crops)
    # Known sizes: planned ahead, the same crops.
    (windows, where), resize = pre.plan_jpeg_crops(
        np.array([shape] * 4), offsets)
    assert resize == (shape[0] != 72)
    np.testing.assert_array_equal(
        pre.crops_from_planned_jpegs([data] * 4, tf.constant(windows),
                                     tf.constant(where), resize), crops)
  for offset, got in zip(offsets, crops.astype(int)):
    want = pre.crop_from_square(square, offset).numpy().astype(int)
    assert got.shape == want.shape == (67, 67, 3)
    if exact:
      np.testing.assert_array_equal(got, want)
    else:
      assert np.abs(got - want).mean() < 1.5, offset
    wrong = pre.crop_from_square(square, (offset[0], 5 - offset[1])).numpy()
    assert np.abs(got - wrong.astype(int)).mean() > 2.0  # Sensitive to place.


def _bilinear(image, height, width):
  """Bilinear resampling with pixel centres at half-integers and edges
  clamped (TensorFlow's half_pixel_centers, PyTorch's align_corners=False,
  OpenCV's INTER_LINEAR), no antialiasing, in float64."""
  def axis(n_in, n_out):
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(x).astype(int)
    return low, np.minimum(low + 1, n_in - 1), x - low
  (y0, y1, fy), (x0, x1, fx) = axis(image.shape[0], height), axis(
      image.shape[1], width)
  image = image.astype(np.float64)
  rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
  return rows[:, x0] * (1 - fx)[:, None] + rows[:, x1] * fx[:, None]


def test_crops_are_resized_by_half_pixel_bilinear_within_one_level():
  # Several images of different shapes in one call, each with its own box.
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, shape, np.uint8)
            for shape in ((40, 50, 3), (30, 20, 3), (40, 50, 3), (23, 30, 3))]
  boxes = np.array([(3, 4, 31, 37), (5, 2, 15, 12), (0, 0, 40, 50),
                    (0, 7, 23, 23)], np.int32)
  got = input_pipeline.preprocess.resize_crops(
      [tf.constant(i) for i in images], tf.constant(boxes), 23).numpy()
  assert got.shape == (4, 23, 23, 3)
  for image, (top, left, h, w), crop in zip(images, boxes, got.astype(int)):
    window = image[top:top + h, left:left + w]
    if (h, w) == (23, 23):  # Already the size: copied as it is.
      np.testing.assert_array_equal(crop, window)
      continue
    want = _bilinear(window, 23, 23)
    assert np.abs(crop - want).max() <= 1.0  # Fixed-point weights.
    assert np.abs(crop - want).mean() < 0.3


@pytest.mark.parametrize('mode,shape,offset,want', [
    # 100x150 -> 72x108; the square's crop at (5, 2 + 18) scaled by 100/72.
    ('crop', (100, 150), (5, 2), (7, 28, 93, 93)),
    # 60x90 squashed to 72x72: scaled by 60/72 down and 90/72 across.
    ('squash', (60, 90), (4, 3), (3, 4, 56, 84)),
])
def test_crop_windows_by_hand_one_or_many_at_once(mode, shape, offset, want):
  pre = Preprocess(image_size=67, resize_size=72, resize_mode=mode,
                   random_crop=True, flip=True, lighting_std=0.0)
  got = pre.crop_window(tf.constant(shape, tf.int32),
                        tf.constant(offset, tf.int32))
  np.testing.assert_array_equal(got, want)
  # Many at once (as the epoch's windows are planned): each as on its own.
  rng = np.random.default_rng(1)
  shapes = np.concatenate([rng.integers(30, 600, (30, 2)), [[72, 72]] * 2,
                           [shape]]).astype(np.int32)
  offsets = rng.integers(0, 6, (len(shapes), 2)).astype(np.int32)
  windows = pre.crop_window(shapes, offsets).numpy()
  for shape, offset, window in zip(shapes, offsets, windows):
    np.testing.assert_array_equal(window, pre.crop_window(
        tf.constant(shape), tf.constant(offset)))


def test_ten_crops_are_corners_centre_and_mirrors_all_distinct():
  pre = Preprocess(image_size=5, resize_size=8, resize_mode='crop',
                   random_crop=True, flip=True, lighting_std=0.1)
  square = _coordinates(8)
  crops = pre.ten_crops(square).numpy()
  assert crops.shape == (10, 5, 5, 3)
  s = square.numpy()
  for i, (y, x) in enumerate(((0, 0), (0, 3), (3, 0), (3, 3), (1, 1))):
    np.testing.assert_array_equal(crops[i], s[y:y + 5, x:x + 5])
    np.testing.assert_array_equal(crops[i + 5], s[y:y + 5, x:x + 5][:, ::-1])
  np.testing.assert_array_equal(crops[4], pre.center_crop(square))
  assert len({c.tobytes() for c in crops}) == 10


# ---------------------------------------------------------------------------
# Evaluation and training order, on an image folder.
# ---------------------------------------------------------------------------


def _split_folder(root, train_per_class=9, validation=(4, 3)):
  """root/{train,validation}/{a,b}/*.jpg; 7 validation images by default."""
  for split, counts in (('train', (train_per_class,) * 2),
                        ('validation', validation)):
    for c, n in zip('ab', counts):
      for i in range(n):
        write_image(os.path.join(root, split, c, f'{i}.jpg'),
                    (60 + 3 * i, 80 - 2 * i), 100 * len(split) + 10 * ord(c) + i)
  return root


def _fingerprint(image):
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _expected_eval(root, pre):
  want = collections.Counter()
  for c, label in (('a', 0), ('b', 1)):
    folder = os.path.join(root, 'validation', c)
    for f in os.listdir(folder):
      data = open(os.path.join(folder, f), 'rb').read()
      crop = pre.center_crop(pre.decode_and_resize(data)).numpy()
      want[(_fingerprint(crop), label)] += 1
  return want


@pytest.mark.parametrize('ten_crop', [False, True])
def test_evaluation_counts_every_example_once(tmp_path, ten_crop):
  root = _split_folder(str(tmp_path / 'data'))
  config = folder_config(root, tmp_path, cache=False)
  config.model.num_classes = 2
  config.ten_crop = ten_crop
  data = input_pipeline.create_data(config)
  assert data.num_eval_examples == 7 and data.eval_steps == 2
  data.eval_steps = 3  # As beside a process with a longer shard.
  got = collections.Counter()
  batches = list(data.eval_batches())
  assert len(batches) == 3 and not batches[-1]['mask'].any()
  for batch in batches:
    crops = (10,) if ten_crop else ()
    assert batch['image'].shape == (1, 4) + crops + (67, 67, 3)
    assert batch['image'].dtype == np.uint8
    assert batch['mask'].shape == batch['label'].shape == (1, 4)
    for image, label, m in zip(batch['image'][0], batch['label'][0],
                               batch['mask'][0]):
      if m:
        got[(_fingerprint(image[4] if ten_crop else image), int(label))] += 1
  assert got == _expected_eval(root, data.preprocess)


def test_each_process_reads_its_own_share(tmp_path, monkeypatch):
  root = _split_folder(str(tmp_path / 'data'))
  config = folder_config(root, tmp_path, cache=True)
  config.model.num_classes = 2
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  got, train_images, steps = collections.Counter(), [], set()
  for pid in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda pid=pid: pid)
    data = input_pipeline.create_data(config)
    assert data.per_process_batch == 2 and data.eval_steps == 2
    assert data.num_train_examples == 18 and data.num_eval_examples == 7
    steps.add(data.steps_per_epoch)
    batches = list(data.eval_batches())
    assert len(batches) == data.eval_steps  # Lockstep, 3 and 4 examples.
    for batch in batches:
      for image, label, m in zip(batch['image'][0], batch['label'][0],
                                 batch['mask'][0]):
        if m:
          got[(_fingerprint(image), int(label))] += 1
    epoch = data.train_batches(0)
    train_images.append({_fingerprint(next(epoch)['image'][0, i])
                         for _ in range(data.steps_per_epoch)
                         for i in range(2)})
  assert steps == {4}  # 9 examples a process, batches of 2.
  assert got == _expected_eval(root, data.preprocess)
  assert len(train_images[0]) == len(train_images[1]) == 8
  assert not train_images[0] & train_images[1]


@pytest.mark.parametrize('cache', [True, False])
def test_training_resumes_at_any_step_with_the_same_batches(tmp_path, cache):
  root = _split_folder(str(tmp_path / 'data'))
  config = folder_config(root, tmp_path, cache=cache)
  config.model.num_classes = 2
  data = input_pipeline.create_data(config)
  per_epoch = data.steps_per_epoch
  assert per_epoch == 4  # 18 images, batches of 4: 2 dropped each epoch.
  stream = data.train_batches(0)
  reference = [next(stream) for _ in range(2 * per_epoch + 2)]
  assert not np.array_equal(reference[0]['image'],
                            reference[per_epoch]['image'])  # New epoch.
  fresh = input_pipeline.create_data(config)
  for start in (1, per_epoch - 1, per_epoch + 3):  # Across epoch ends too.
    resumed = fresh.train_batches(start)
    for want in reference[start:start + 3]:
      got = next(resumed)
      np.testing.assert_array_equal(got['image'], want['image'])
      np.testing.assert_array_equal(got['label'], want['label'])


def test_a_folder_is_jpeg_only_unless_a_file_is_not_a_jpeg(tmp_path):
  root = _split_folder(str(tmp_path / 'data'))
  config = folder_config(root, tmp_path, cache=False)
  config.model.num_classes = 2
  assert input_pipeline.create_data(config).source.jpeg_only
  # A PNG under a .jpg name decodes, but takes the checked path.
  write_image(os.path.join(root, 'train', 'a', '9.jpg'), (70, 70), 5, 'PNG')
  data = input_pipeline.create_data(config)
  assert not data.source.jpeg_only
  batches = data.train_batches(0)
  for _ in range(data.steps_per_epoch):
    assert next(batches)['image'].shape[-3:] == (67, 67, 3)


def test_training_batches_match_a_straightforward_reference(tmp_path):
  # Shorter sides equal resize_size (72): the windowed decoding is exact.
  root = str(tmp_path / 'data')
  for c in 'ab':
    for i in range(5):
      write_image(os.path.join(root, 'train', c, f'{i}.jpg'),
                  (72 + 7 * i, 72) if i % 2 else (72, 72 + 9 * i), 10 * i)
    write_image(os.path.join(root, 'validation', c, '0.jpg'), (72, 72), 99)
  config = folder_config(root, tmp_path, cache=False)
  config.model.num_classes = 2
  data = input_pipeline.create_data(config)
  files = sorted(os.path.join(root, 'train', c, f'{i}.jpg')
                 for c in 'ab' for i in range(5))  # The folder's order.
  n, b, size, seed = len(files), config.batch_size, config.image_size, 0
  assert (n, b, data.steps_per_epoch) == (10, 4, 2)
  stream = data.train_batches(0)
  for step in range(3):  # Epoch 0's two batches, then epoch 1's first.
    batch = next(stream)
    epoch, k = divmod(step, 2)
    # The documented recipe: a permutation seeded by (seed, epoch); the
    # augmentation drawn by global position from (seed, epoch, 1).
    order = np.random.default_rng([seed, epoch]).permutation(n)
    rng = np.random.default_rng([seed, epoch, 1])
    offsets = rng.integers(0, 72 - size + 1, (n, 2))
    flips = rng.random(n) < 0.5
    alphas = rng.normal(0.0, 1.0, (n, 3)) * config.augment.lighting_std
    lights = 255.0 * (alphas * EIGVAL) @ EIGVEC.T
    positions = np.arange(k * b, (k + 1) * b)
    want_images, want_lit = [], []
    for p in positions:
      path = files[order[p]]
      full = tf.io.decode_jpeg(open(path, 'rb').read(), channels=3).numpy()
      h, w = full.shape[:2]
      top, left = (h - 72) // 2, (w - 72) // 2
      y, x = offsets[p] + (top, left)
      crop = full[y:y + size, x:x + size]
      want_images.append(crop)
      lit = (crop[:, ::-1] if flips[p] else crop) + lights[p]
      want_lit.append((lit - np.array(config.normalization.mean)) /
                      np.array(config.normalization.std))
      assert batch['label'][0][list(positions).index(p)] == int(
          os.sep + 'b' + os.sep in path)
    np.testing.assert_array_equal(batch['image'][0], np.stack(want_images))
    np.testing.assert_array_equal(batch['flip'][0], flips[positions])
    np.testing.assert_allclose(batch['light'][0], lights[positions],
                               rtol=1e-5)
    got = steps.training_images(
        jax.tree_util.tree_map(lambda a: a[0], batch),
        steps.Normalization.from_config(config.normalization))
    np.testing.assert_allclose(np.asarray(got), np.stack(want_lit),
                               atol=1e-4)


def test_training_crops_of_larger_images_match_resize_then_crop(tmp_path):
  # Shorter sides above resize_size (72): the reference resizes the whole
  # image (PIL's decoder, bilinear as documented), keeps the central square
  # and crops it; the pipeline resamples only the crop's window, on a grid
  # a fraction of a pixel apart.
  root = str(tmp_path / 'data')
  shapes = {'a': [(100, 130), (95, 120)], 'b': [(140, 110), (120, 120)]}
  for c, sizes in shapes.items():
    for i, size in enumerate(sizes):
      path = os.path.join(root, 'train', c, f'{i}.jpg')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'wb') as f:
        f.write(_encode(_smooth(*size), 'JPEG'))
    write_image(os.path.join(root, 'validation', c, '0.jpg'), (72, 72), 9)
  config = folder_config(root, tmp_path, cache=False)
  config.model.num_classes = 2
  data = input_pipeline.create_data(config)
  files = sorted(os.path.join(root, 'train', c, f'{i}.jpg')
                 for c in 'ab' for i in range(2))
  size, b = config.image_size, config.batch_size
  batch = next(data.train_batches(0))
  order = np.random.default_rng([0, 0]).permutation(len(files))
  offsets = np.random.default_rng([0, 0, 1]).integers(0, 72 - size + 1,
                                                      (len(files), 2))
  for p in range(b):
    full = np.asarray(Image.open(files[order[p]]).convert('RGB'))
    h, w = full.shape[:2]
    th, tw = (72, round(72 * w / h)) if h < w else (round(72 * h / w), 72)
    square = _bilinear(full, th, tw)[(th - 72) // 2:, (tw - 72) // 2:]
    y, x = offsets[p]
    want = square[y:y + size, x:x + size]
    got = batch['image'][0][p].astype(float)
    assert np.abs(got - want).mean() < 1.5, p
    wrong = square[y:y + size, 5 - x:5 - x + size]
    assert np.abs(got - wrong).mean() > 2.0  # Sensitive to place.


def test_cached_and_streamed_training_agree_when_no_resize_is_needed(tmp_path):
  root = str(tmp_path / 'data')
  for c in 'ab':
    for i in range(4):  # Shorter side 72 == resize_size.
      write_image(os.path.join(root, c, f'{i}.jpg'), (72, 72 + 9 * i), i)
  batches = {}
  for cache in (True, False):
    config = folder_config(root, tmp_path, cache=cache)
    config.model.num_classes = 2
    config.validation_fraction = 0.25
    stream = input_pipeline.create_data(config).train_batches(0)
    batches[cache] = [next(stream) for _ in range(3)]
  for a, b in zip(batches[True], batches[False]):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


@pytest.mark.parametrize('batch,cache,png', [(3, False, True), (6, True, False),
                                             (16, False, False)])
def test_batches_do_not_depend_on_the_crops_made_per_call(tmp_path, batch,
                                                          cache, png,
                                                          monkeypatch):
  # Groups of 3, 6 and 8 against one crop per call: each batch the same,
  # in the same order, also at a resumed step. A PNG takes the path that
  # works each window out per image.
  root = str(tmp_path / 'data')
  for c in 'ab':
    for i in range(12):
      fmt = 'PNG' if png and i == 5 else 'JPEG'
      write_image(os.path.join(root, c, f'{i}.{fmt.lower()}'),
                  (80 + 3 * i, 100 - 2 * i), 10 * ord(c) + i, fmt=fmt)
  config = folder_config(root, tmp_path, cache=cache, batch_size=batch)
  config.model.num_classes = 2
  data = input_pipeline.create_data(config)

  batching = input_pipeline.batching
  groups = []  # The group sizes the pipelines were built with.
  real_group_size = batching.group_size
  monkeypatch.setattr(batching, 'group_size', lambda *a: groups.append(
      real_group_size(*a)) or groups[-1])

  def batches(crops_per_call):
    monkeypatch.setattr(batching, 'CROPS_PER_CALL', crops_per_call)
    return (list(itertools.islice(data.train_batches(0), 4)) +
            list(itertools.islice(data.train_batches(3), 2)))

  grouped = batches(batching.CROPS_PER_CALL)
  one = batches(1)
  assert set(groups) == {min(batch, 8), 1}  # 3, 6, 8 against 1.
  for a, b in zip(one, grouped, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  with pytest.raises(ValueError, match='skip_examples=1 is not a multiple'):
    data.train_dataset(0, skip_examples=1)


def test_group_size_is_the_largest_divisor_of_the_batch_up_to_the_limit():
  group_size = input_pipeline.batching.group_size
  assert [group_size(b, 8) for b in (1, 7, 12, 13, 16, 100, 125)] == [
      1, 7, 6, 1, 8, 5, 5]
  with pytest.raises(ValueError, match='at least 1, not 0'):
    group_size(32, 0)
