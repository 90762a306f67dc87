"""The model outside training: the prediction CLI and eval-only runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import metrics_writer
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import steps
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.datasets import shapes
from alexnet_jax.input_pipeline import DataOptions
from alexnet_jax.input_pipeline.preprocess import Preprocess
from alexnet_jax.tools import convert
from alexnet_jax.tools import evaluate
from alexnet_jax.tools import predict
from conftest import ROOT
from conftest import tiny_config

STEP = 3


def _write_workdir(workdir: str, config) -> dict:
  """A training workdir: config.json and a checkpoint at STEP; returns params.

  The params are the initial ones scaled by 1.1, so that a restore of anything
  but this checkpoint's params would be noticed, with fc8 scaled down for
  probabilities that are not all 0 or 1.
  """
  model = models.model_from_config(config.model)
  tx = optim.create_optimizer(config.optimizer)
  state = steps.create_train_state(model, tx, config.image_size, config.seed)
  params = jax.tree_util.tree_map(lambda x: x * 1.1, state.params)
  params['fc8']['kernel'] = params['fc8']['kernel'] * 0.02
  state = state.replace(step=state.step + STEP, params=params)
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'))
  ckpt.save(STEP, state)
  ckpt.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  return jax.device_get(params)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A workdir of the default job (the shapes dataset), tiny width."""
  workdir = str(tmp_path_factory.mktemp('predict') / 'workdir')
  # He initialization: outputs that depend on the image (the paper's init
  # gives a near-constant output before training).
  config = tiny_config(**{'model.initialization': 'he'})
  params = _write_workdir(workdir, config)
  return workdir, config, params


def _image_file(path, size=(150, 110), fmt='JPEG', seed=0) -> str:
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (size[1] // 10 + 1, size[0] // 10 + 1, 3),
                        dtype=np.uint8)
  image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
  image.save(path, fmt)
  return str(path)


def _pre(config) -> Preprocess:
  return DataOptions.from_config(config).preprocess


# Expected values in NumPy, independently of steps.normalize and
# steps.cross_entropy (float64 softmax and log-sum-exp).
def _normalize(images, mean, std) -> np.ndarray:
  return ((np.asarray(images, np.float32) - np.asarray(mean, np.float32))
          / np.asarray(std, np.float32))


def _softmax(logits) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _cross_entropy(logits, labels) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  m = z.max(axis=-1)
  lse = m + np.log(np.exp(z - m[:, None]).sum(axis=-1))
  return lse - z[np.arange(len(labels)), labels]


def _parse(output: str) -> dict[str, list[tuple[str, float]]]:
  """{image: [(class, probability)]} from predict's output."""
  result, current = {}, None
  for line in output.splitlines():
    match = re.fullmatch(r'\s+(\d+)\. (.+?)\s+([0-9.]+)', line)
    if match:
      assert int(match.group(1)) == len(result[current]) + 1
      result[current].append((match.group(2), float(match.group(3))))
    else:
      current = line
      result[current] = []
  return result


def test_predict_prints_top5(trained, tmp_path, capsys):
  workdir, config, params = trained
  paths = [_image_file(tmp_path / 'a.jpg'),
           _image_file(tmp_path / 'b.png', size=(80, 200), fmt='PNG', seed=1)]
  predict.main(['--workdir', workdir] + paths)
  printed = _parse(capsys.readouterr().out)
  assert list(printed) == paths
  model = models.model_from_config(config.model)
  for path in paths:
    top = printed[path]
    assert len(top) == 5
    names = [n for n, _ in top]
    probs = [p for _, p in top]
    assert set(names) <= set(shapes.CLASS_NAMES)
    assert len(set(names)) == 5
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1.0 + 1e-3
    # The printed classes are the top 5 of the checkpoint's model.
    crop = predict.preprocess(predict.load_image(path), _pre(config))
    logits = model.apply({'params': params},
                         _normalize(crop, config.normalization.mean,
                                    config.normalization.std))
    want = _softmax(logits[0])
    # Each printed probability is its class's, and they are the 5 largest
    # (near-ties may print in either order).
    index = [shapes.CLASS_NAMES.index(n) for n in names]
    np.testing.assert_allclose(probs, want[index], atol=6e-5)
    np.testing.assert_allclose(probs, np.sort(want)[::-1][:5], atol=6e-5)


@pytest.mark.slow
def test_predict_ten_crop_and_checkpoint_flag(trained, tmp_path, capsys):
  workdir, config, params = trained
  path = _image_file(tmp_path / 'a.jpg')
  step_dir = os.path.join(workdir, 'checkpoints', str(STEP))
  predict.main(['--checkpoint', step_dir, path])  # config.json found above.
  centre = _parse(capsys.readouterr().out)[path]
  predict.main(['--workdir', workdir, '--ten_crop', '--top_k', '3', path])
  ten = _parse(capsys.readouterr().out)[path]
  assert len(centre) == 5 and len(ten) == 3
  # The printed probabilities are the mean softmax over the ten crops.
  crops = predict.preprocess(predict.load_image(path), _pre(config),
                              ten_crop=True)
  assert crops.shape[0] == 10
  model = models.model_from_config(config.model)
  logits = model.apply({'params': params}, _normalize(
      crops, config.normalization.mean, config.normalization.std))
  want = _softmax(logits).mean(axis=0)
  index = [shapes.CLASS_NAMES.index(n) for n, _ in ten]
  np.testing.assert_allclose([p for _, p in ten], want[index], atol=6e-5)
  np.testing.assert_allclose([p for _, p in ten], np.sort(want)[::-1][:3],
                             atol=6e-5)


def test_ten_crops_geometry():
  square = np.arange(8 * 8 * 3).reshape(8, 8, 3)
  pre = Preprocess(image_size=5, resize_size=8, resize_mode='crop')
  crops = pre.ten_crops(square)
  assert crops.shape == (10, 5, 5, 3)
  np.testing.assert_array_equal(crops[0], square[:5, :5])
  np.testing.assert_array_equal(crops[1], square[:5, 3:])
  np.testing.assert_array_equal(crops[2], square[3:, :5])
  np.testing.assert_array_equal(crops[3], square[3:, 3:])
  np.testing.assert_array_equal(crops[4], square[1:6, 1:6])
  np.testing.assert_array_equal(crops[4], pre.center_crop(square))
  np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


def test_resize_to_square_geometry():
  # A 100x300 image: the shorter side becomes 112, the width 336; the central
  # 112 columns are kept.
  image = np.zeros((100, 300, 3), np.uint8)
  image[:, 150:] = 255
  square = predict.resize_to_square(image, Preprocess(100, 112, 'crop'))
  assert square.shape == (112, 112, 3)
  assert (square[:, :50] == 0).all() and (square[:, 62:] == 255).all()
  squashed = predict.resize_to_square(image, Preprocess(100, 112, 'squash'))
  assert (squashed[:, :50] == 0).all() and (squashed[:, 62:] == 255).all()


def test_predict_errors_are_messages(trained, tmp_path):
  workdir, _, _ = trained
  good = _image_file(tmp_path / 'good.jpg')
  bad = tmp_path / 'bad.jpg'
  bad.write_text('not an image')
  with pytest.raises(SystemExit, match=r'predict: .*bad\.jpg: cannot read it as an image'):
    predict.main(['--workdir', workdir, good, str(bad)])
  with pytest.raises(SystemExit, match=r'missing\.jpg: no such file'):
    predict.main(['--workdir', workdir, str(tmp_path / 'missing.jpg')])

  empty = tmp_path / 'empty_workdir'
  empty.mkdir()
  with pytest.raises(SystemExit, match='No config.json'):
    predict.main(['--workdir', str(empty), good])
  with open(empty / 'config.json', 'w') as f:
    f.write(tiny_config().to_json_best_effort())
  with pytest.raises(SystemExit, match='No checkpoint in'):
    predict.main(['--workdir', str(empty), good])
  with pytest.raises(SystemExit, match='No config.json found above'):
    predict.main(['--checkpoint', str(tmp_path), good])


@pytest.mark.slow
def test_predict_cli_error_has_no_traceback(trained, tmp_path):
  workdir, _, _ = trained
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'\x89PNG truncated')
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.predict',
       f'--workdir={workdir}', str(bad)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert f'predict: {bad}: cannot read it as an image' in out.stderr
  assert 'Traceback' not in out.stderr


def test_class_names_sources(tmp_path):
  shapes_data = DataOptions.from_config(tiny_config())
  assert predict.class_names(10, shapes_data) == list(shapes.CLASS_NAMES)
  fake = DataOptions.from_config(tiny_config(dataset='fake'))
  assert predict.class_names(10, fake) == [str(i) for i in range(10)]
  names = tmp_path / 'names.txt'
  names.write_text('\n'.join(f'class {i}' for i in range(10)) + '\n')
  assert predict.class_names(10, fake, None, str(names))[9] == 'class 9'
  (tmp_path / workdir_lib.CLASS_NAMES_FILE).write_text(names.read_text())
  assert predict.class_names(10, fake, str(tmp_path))[0] == 'class 0'
  names.write_text('a\nb\n')
  with pytest.raises(predict.PredictError, match='has 2 names'):
    predict.class_names(10, fake, None, str(names))


@pytest.mark.parametrize('resize_mode', ['crop', 'squash'])
def test_center_crop_matches_input_pipeline(tmp_path, resize_mode):
  """predict's NumPy/Pillow preprocessing against the TensorFlow pipeline's.

  Lossless images: equal to +-1 level (rounding of the float resize). JPEGs:
  TensorFlow decodes with libjpeg's fast integer DCT, Pillow with the accurate
  one, so pixels differ by a few levels, about 1 on average.
  """
  pytest.importorskip('tensorflow', reason='the input pipeline needs '
                      'TensorFlow to compare against')
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = tiny_config(resize_mode=resize_mode)
  pre = input_pipeline.DataOptions.from_config(config).preprocess
  for i, (size, fmt, max_diff, mean_diff) in enumerate([
      ((150, 110), 'PNG', 1, 0.01),  # Downscaled, landscape.
      ((60, 90), 'PNG', 1, 0.01),  # Upscaled, portrait.
      ((300, 301), 'PNG', 1, 0.01),
      ((150, 110), 'JPEG', 12, 1.5)]):
    path = _image_file(tmp_path / f'{i}.{fmt.lower()}', size, fmt, seed=i)
    with open(path, 'rb') as f:
      data = f.read()
    want = pre.center_crop(pre.decode_and_resize(data)).numpy().astype(int)
    got = predict.preprocess(predict.load_image(path), pre)[0].astype(int)
    assert got.shape == want.shape == (67, 67, 3)
    diff = np.abs(got - want)
    assert diff.max() <= max_diff, (size, fmt, diff.max())
    assert diff.mean() <= mean_diff, (size, fmt, diff.mean())


def _fake_eval_config(checkpoint: str | None):
  config = tiny_config(dataset='fake', eval_batch_size=4)
  config.fake_data.eval_steps = 3
  config.checkpoint = checkpoint
  return config


@pytest.mark.slow
def test_evaluate_cli_on_a_training_checkpoint(trained, tmp_path):
  """`python -m alexnet_jax.tools.evaluate --config=configs/imagenet_eval.py`
  with the overrides its docstring gives for the paper's net, on fake data."""
  workdir, config, params = trained
  out_dir = str(tmp_path / 'eval')
  overrides = {
      'checkpoint': workdir, 'dataset': 'fake', 'model.variant': 'paper',
      'model.width': 0.05,
      'model.num_classes': 10, 'image_size': 67, 'eval_batch_size': 4,
      'fake_data.eval_steps': 3}
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.evaluate',
       '--config=configs/imagenet_eval.py', f'--workdir={out_dir}'] +
      [f'--config.{k}={v}' for k, v in overrides.items()],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='true'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'eval_examples=12' in out.stdout

  rows = metrics_writer.read_metrics(out_dir)
  assert len(rows) == 1
  assert rows[0]['step'] == STEP
  assert set(rows[0]) == {'step', 'eval_loss', 'eval_top1', 'eval_top5',
                          'eval_examples'}
  assert rows[0]['eval_examples'] == 12  # 3 batches of 4: the whole split.
  with open(os.path.join(out_dir, 'config.json')) as f:
    saved = json.load(f)
  assert saved['checkpoint'] == workdir
  with open(os.path.join(out_dir, workdir_lib.CLASS_NAMES_FILE)) as f:
    assert f.read().split('\n')[:2] == ['0', '1']
  # The loss is that of the checkpoint's params on the fake eval batch (with
  # imagenet_eval's torchvision normalization).
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  eval_config = _fake_eval_config(workdir)
  batch = next(input_pipeline.create_data(eval_config).eval_batches())
  images = np.asarray(batch['image']).reshape((-1,) + batch['image'].shape[2:])
  labels = np.asarray(batch['label']).reshape(-1)
  mean, std = saved['normalization']['mean'], saved['normalization']['std']
  assert mean != list(config.normalization.mean)
  logits = models.model_from_config(config.model).apply(
      {'params': params}, _normalize(images, mean, std))
  want = float(np.mean(_cross_entropy(logits, labels)))
  assert abs(rows[0]['eval_loss'] - want) < 1e-4 * max(1.0, abs(want))


def test_evaluate_errors_and_params_files(trained, tmp_path):
  workdir, _, params = trained
  with pytest.raises(ValueError, match='config.checkpoint is not set'):
    evaluate.evaluate(_fake_eval_config(None), str(tmp_path / 'a'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    evaluate.evaluate(_fake_eval_config(str(tmp_path / 'x.npz')),
                      str(tmp_path / 'b'))
  with pytest.raises(FileNotFoundError, match='No checkpoint in'):
    evaluate.evaluate(_fake_eval_config(str(tmp_path)), str(tmp_path / 'c'))
  # Every way of naming the checkpoint restores the same params.
  step_dir = os.path.join(workdir, 'checkpoints', str(STEP))
  for path in (workdir, os.path.join(workdir, 'checkpoints'), step_dir,
               os.path.join(step_dir, 'default')):
    restored, step = evaluate.load_params(path, None)
    assert step == STEP
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
  npz = str(tmp_path / 'params.npz')
  convert.save_npz(params, npz)
  restored, step = evaluate.load_params(npz, None)
  assert step is None
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
  wider = _fake_eval_config(npz)
  wider.model.width = 0.1
  with pytest.raises(convert.ConversionError,
                     match=r"do not fit config.model.*\['conv1'\]\['bias'\]"):
    evaluate.evaluate(wider, str(tmp_path / 'd'))


def _printed_by(script: str) -> str:
  """What `python -c script` prints, in a fresh process."""
  out = subprocess.run([sys.executable, '-c', script], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip()


@pytest.mark.slow
def test_predict_and_evaluate_do_not_import_the_trainer():
  assert _printed_by('import sys; from alexnet_jax import steps; '
                     'from alexnet_jax.tools import evaluate, predict; '
                     'print(sorted(m for m in sys.modules if m in '
                     '("alexnet_jax.train", "alexnet_jax.parallelism")))'
                     ) == '[]'


def test_preprocessing_an_image_for_predict_needs_no_tensorflow():
  # predict resizes with Pillow; TensorFlow's start-up is not its cost.
  assert _printed_by(
      'import sys; import numpy as np; '
      'from alexnet_jax.tools import predict; '
      'from alexnet_jax.input_pipeline.preprocess import Preprocess; '
      'crops = predict.preprocess(np.zeros((100, 300, 3), np.uint8), '
      'Preprocess(100, 112, "crop"), ten_crop=True); '
      'print(crops.shape, "tensorflow" in sys.modules)'
  ) == '(10, 100, 100, 3) False'


@pytest.mark.parametrize('resize_mode', ['crop', 'squash'])
def test_resized_shape_is_the_pipelines(resize_mode):
  pre = Preprocess(57, 64, resize_mode)
  shapes = np.random.default_rng(0).integers(20, 900, (300, 2))
  expected = pre.resized_shape(shapes.astype(np.int32)).numpy()
  got = [predict.resized_shape(h, w, pre) for h, w in shapes]
  np.testing.assert_array_equal(np.array(got), expected)
