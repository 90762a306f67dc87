"""A run's identity: declared once per field, recorded resolved, carried by
the checkpoint, guarded on every resume; records never replaced by a fresh
start; the numbers of the first row and of a resumed schedule."""

import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import config_lib
from alexnet_jax import metrics_writer
from alexnet_jax import models
from alexnet_jax import train
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.tools import checkpoint_params
from alexnet_jax.tools import predict
from conftest import ROOT
from conftest import corrupt_checkpoint
from conftest import tiny_config

# The trained run: tiny_config on fake data, its own defaults for groups and
# lrn (None), no lrn_across_towers field (the model's default applies).
_RUN = {'dataset': 'fake', 'num_train_steps': 2, 'log_every_steps': 1,
        'checkpoint_every_steps': 1}


def _config(**overrides):
  config = tiny_config(**{**_RUN, **overrides})
  del config.model['lrn_across_towers']
  return config


def _flags(**changes):
  """The command line of `_config()`, with `changes` (dotted field: text)."""
  fields = {'dataset': 'fake', 'model.width': 0.05, 'image_size': 67,
            'resize_size': 72, 'batch_size': 8, 'eval_batch_size': 8,
            'fake_data.eval_steps': 1, 'num_train_steps': 2,
            'log_every_steps': 1, 'eval_every_steps': 0,
            'checkpoint_every_steps': 1, **changes}
  return ['--config=configs/default.py',
          *[f'--config.{k}={v}' for k, v in fields.items()]]


def _main(workdir, *flags, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             JAX_DISABLE_MOST_OPTIMIZATIONS='true')
  return subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', f'--workdir={workdir}',
       *flags], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=timeout)


def _refusal(out) -> str:
  assert out.returncode != 0, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0]


def _digest(path) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('identity') / 'run'
  train.train_and_evaluate(_config(), str(workdir))
  return workdir


@pytest.fixture
def run(trained, tmp_path):
  dest = tmp_path / 'run'
  shutil.copytree(trained, dest)
  return dest


# One declaration of every field's role.


def _config_files():
  names = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, 'configs'))
                 if n.endswith('.py') and n != '__init__.py')
  return [importlib.import_module(f'configs.{n}').get_config() for n in names]


def test_every_config_field_has_a_declared_role():
  from alexnet_jax import config_fields  # pylint: disable=g-import-not-at-top
  fields = set()
  for config in _config_files():
    fields |= set(config_fields.flatten(train.resolve(config)))
  fields |= {f'model.{f}' for f in models.MODEL_FIELDS}
  assert not config_fields.undeclared(dict.fromkeys(fields)), (
      'declare each in alexnet_jax/config_fields (IDENTITY, ADDED or FREE)')
  # What the declaration says, against the kinds the roles stand for.
  for field in ('seed', 'batch_size', 'augment.lighting_std',
                'normalization.std', 'optimizer.learning_rate',
                'model.lrn_depth', 'dataset'):
    assert config_fields.is_identity(field), field
  for field in ('num_epochs', 'log_every_steps', 'execution.lrn_impl',
                'model.lrn_impl', 'execution.xla_cpu_conv_library',
                'data_dir', 'eval_batch_size', 'keep_checkpoints'):
    assert not config_fields.is_identity(field), field
  assert config_fields.is_identity('model.a_field_nobody_declared')


def test_config_json_records_resolved_values_and_predict_reads_them(run):
  record = json.loads((run / 'config.json').read_text())
  assert record['model']['groups'] == 2 and record['model']['lrn'] is True
  # Written by today's code, which normalizes within each tower.
  assert record['model']['lrn_across_towers'] is False
  assert predict.load_config(str(run)).model.lrn_across_towers is False


def test_a_record_older_than_a_field_reads_as_the_code_before_it(tmp_path):
  record = json.loads(tiny_config().to_json_best_effort())
  del record['model']['lrn_across_towers']
  del record['optimizer']['decay_biases']
  (tmp_path / 'config.json').write_text(json.dumps(record))
  read = workdir_lib.read_config(str(tmp_path / 'config.json'))
  assert read['model']['lrn_across_towers'] is True
  assert read['optimizer']['decay_biases'] is True


@pytest.mark.slow
def test_restating_the_variants_defaults_resumes(run):
  out = _main(run, *_flags(**{'model.groups': 2, 'model.lrn': True,
                              'model.lrn_across_towers': False}))
  assert out.returncode == 0, out.stderr[-3000:]
  assert not any(n.startswith('config.') and n != 'config.json'
                 for n in os.listdir(run))


@pytest.mark.slow
@pytest.mark.parametrize('field,value', [
    ('normalization.std', '(1.0,1.0,1.0)'),
    ('seed', 3),
    ('augment.lighting_std', 0.3),
])
def test_a_resume_that_changes_the_identity_is_refused(run, field, value):
  before = _digest(run / 'metrics.jsonl')
  line = _refusal(_main(run, *_flags(**{field: value})))
  assert f'{field} ' in line and 'allow_config_change' in line, line
  assert _digest(run / 'metrics.jsonl') == before


def test_the_checkpoint_guards_a_resume_without_config_json(run):
  os.remove(run / 'config.json')
  with pytest.raises(workdir_lib.ConfigChangedError) as e:
    train.train_and_evaluate(
        _config(batch_size=16, num_train_steps=4,
                **{'model.lrn': False}), str(run))
  assert 'batch_size 8 -> 16' in str(e.value)
  assert 'model.lrn True -> False' in str(e.value)


def test_an_edited_config_json_does_not_hide_a_change(run):
  record = json.loads((run / 'config.json').read_text())
  record['seed'] = 5
  (run / 'config.json').write_text(json.dumps(record))
  with pytest.raises(workdir_lib.ConfigChangedError, match='seed 0 -> 5'):
    train.train_and_evaluate(_config(seed=5, num_train_steps=4), str(run))


def _folder(root, classes):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c in classes:
    os.makedirs(root / c)
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (80, 80, 3), np.uint8)).save(
          root / c / f'{i}.png')


@pytest.mark.slow
def test_a_renamed_class_folder_is_refused_naming_the_classes(tmp_path):
  images, workdir = tmp_path / 'images', tmp_path / 'run'
  _folder(images, ['class0', 'class1'])
  fields = {'dataset': 'image_folder', 'dataset_dir': images,
            'data_dir': tmp_path / 'tfds', 'model.num_classes': 2,
            'validation_fraction': 0.5, 'batch_size': 4,
            'eval_batch_size': 4}
  out = _main(workdir, *_flags(**fields, num_train_steps=1))
  assert out.returncode == 0, out.stderr[-3000:]
  os.rename(images / 'class0', images / 'zclass0')
  line = _refusal(_main(workdir, *_flags(**fields, num_train_steps=2)))
  assert "['class0', 'class1'] -> ['class1', 'zclass0']" in line, line
  assert not os.path.exists(workdir / 'class_names.1.txt')


@pytest.mark.slow
def test_allowed_change_continues_in_images_seen(tmp_path, caplog,
                                                 monkeypatch):
  base = {'fake_data.num_train_examples': 64, 'num_train_steps': -1,
          'num_epochs': 1.0, 'optimizer.warmup_epochs': 1.0,
          'log_every_steps': 2, 'checkpoint_every_steps': 2}
  # 2 steps of 8 images (64 per epoch), stopped there by a SIGTERM's save.
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(**{**base, 'num_train_steps': 2}), workdir)
  starts = []
  real = train.create_data

  def spy(config):
    data = real(config)
    batches = data.train_batches
    data.train_batches = lambda start=0: (starts.append(start),
                                          batches(start))[1]
    return data

  monkeypatch.setattr(train, 'create_data', spy)
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(
        _config(**{**base, 'batch_size': 16, 'allow_config_change': True,
                   'optimizer.learning_rate': 0.02}), workdir)
  warning = ' '.join(r.getMessage() for r in caplog.records)
  for change in ('batch_size 8 -> 16', 'num_train_steps 2 -> -1',
                 'optimizer.learning_rate 0.01 -> 0.02'):
    assert change in warning, warning
  rows = metrics_writer.read_metrics(workdir)
  # 16 images seen at step 2; then 16 per step to one epoch (64 images).
  assert [r['step'] for r in rows] == [2, 4, 5]
  assert [r['epoch'] for r in rows] == [16 / 64, 48 / 64, 64 / 64]
  # The batches go on from image 16: the second batch of 16, no replay.
  assert starts == [1]
  # Warmup over 64 images: step 4 (from image 32) uses 0.02 * 32 / 64.
  assert rows[1]['learning_rate'] == pytest.approx(0.02 * 32 / 64)


# Records are never replaced by a fresh start.


@pytest.mark.slow
def test_unreadable_checkpoints_refuse_every_relaunch(run):
  for step in os.listdir(run / 'checkpoints'):
    corrupt_checkpoint(run / 'checkpoints' / step)
  before = {n: _digest(run / n) for n in ('metrics.jsonl', 'config.json')}
  for _ in range(2):  # The first launch, and a scheduler's requeue.
    line = _refusal(_main(run, *_flags()))
    assert 'start_over=True' in line, line
    assert {n: _digest(run / n) for n in before} == before


def test_start_over_keeps_the_old_records_aside(run):
  shutil.rmtree(run / 'checkpoints')
  old = (run / 'metrics.jsonl').read_text()
  with pytest.raises(workdir_lib.RecordsError, match='start_over=True'):
    train.train_and_evaluate(_config(), str(run))
  train.train_and_evaluate(_config(start_over=True), str(run))
  aside = [n for n in os.listdir(run) if n.startswith('old_records.')]
  assert len(aside) == 1
  assert (run / aside[0] / 'metrics.jsonl').read_text() == old
  assert sorted(os.listdir(run / 'checkpoints')) == ['1', '2']


def test_an_error_that_proves_no_corruption_moves_no_checkpoint(
    run, monkeypatch):
  from alexnet_jax import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(str(run / 'checkpoints'))

  def fail(*args, **kwargs):
    raise MemoryError('out of host memory')

  monkeypatch.setattr(ckpt._manager, 'restore', fail)
  state = train.steps.create_train_state(
      models.model_from_config(_config().model),
      train.optim.create_optimizer(_config().optimizer), 67, 0)
  with pytest.raises(MemoryError):
    ckpt.restore_latest(state)
  assert sorted(os.listdir(run / 'checkpoints')) == ['1', '2']
  assert not os.path.exists(run / 'checkpoints.unreadable')


def test_predict_rereads_the_list_when_the_newest_goes(run, monkeypatch):
  real = checkpoint_params._restore_params
  calls = []

  def training_saves_and_deletes(step_dir):
    calls.append(os.path.basename(step_dir))
    if len(calls) == 1:  # Training saves step 3, deleting this one.
      shutil.copytree(step_dir, os.path.join(os.path.dirname(step_dir), '3'))
      shutil.rmtree(step_dir)
    return real(step_dir)

  shutil.rmtree(run / 'checkpoints' / '1')  # keep_checkpoints=1.
  monkeypatch.setattr(checkpoint_params, '_restore_params',
                      training_saves_and_deletes)
  params, step = checkpoint_params.restore_orbax_params(str(run))
  assert step == 3 and calls == ['2', '3'] and 'fc8' in params


# The metrics file, LRN's depth, the first row's rate.


def test_a_corrupt_middle_metrics_line_is_refused_before_any_record(run):
  lines = (run / 'metrics.jsonl').read_text().splitlines(True)
  (run / 'metrics.jsonl').write_text('{"step": 1, "tr\n' + ''.join(lines[1:]))
  before = {n: _digest(run / n) for n in os.listdir(run)
            if os.path.isfile(run / n) and n != '.lock'}
  with pytest.raises(workdir_lib.RecordsError, match=r'metrics.jsonl, line 1'):
    train.train_and_evaluate(_config(num_train_steps=4), str(run))
  after = {n: _digest(run / n) for n in os.listdir(run)
           if os.path.isfile(run / n) and n != '.lock'}
  assert after == before


def test_an_even_lrn_depth_is_refused_naming_the_field():
  with pytest.raises(config_lib.ConfigError, match=r'config\.model\.lrn_depth=4'):
    train.validate(_config(**{'model.lrn_depth': 4}))
  train.validate(_config(**{'model.lrn_depth': 11}))  # TF's window.
  from alexnet_jax import ops  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='depth=4'):
    ops.lrn(np.ones((1, 2, 2, 8), np.float32), depth=4)


def test_the_first_row_after_a_start_has_a_real_rate(trained):
  first = metrics_writer.read_metrics(str(trained))[0]
  assert first['step'] == 1
  assert first['images_per_sec'] > 0 and first['elapsed_s'] > 0
  # The rate of the real elapsed time: 8 images in at most elapsed_s.
  assert first['images_per_sec'] >= 8 / first['elapsed_s']


# Mutations the suite did not see.


def test_eval_sums_leave_out_the_masked_examples():
  from alexnet_jax import steps  # pylint: disable=g-import-not-at-top
  # Example 1, masked out, would be a hit too.
  logits = np.array([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                     [4.0, 3.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
  batch = {'image': np.zeros((2, 4, 4, 3), np.float32),
           'label': np.array([0, 0]), 'mask': np.array([1.0, 0.0])}
  sums = steps.eval_sums(lambda images: logits, batch,
                        steps.Normalization.from_config(
                            tiny_config().normalization))
  # Example 0 alone: -log(e^2 / (e^2 + 5)), and a top-1 hit.
  assert float(sums['loss']) == pytest.approx(-np.log(np.e**2 / (np.e**2 + 5)),
                                              rel=1e-5)
  assert float(sums['top1']) == 1.0 and float(sums['top5']) == 1.0
  assert float(sums['count']) == 1.0


def test_lighting_noise_scales_with_its_std():
  from alexnet_jax.input_pipeline import augmentation  # pylint: disable=g-import-not-at-top
  import dataclasses  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass
  class Pre:
    resize_size: int = 72
    image_size: int = 67
    random_crop: bool = True
    flip: bool = True
    lighting_std: float = 0.1

  lights = {std: augmentation.draw_augmentation(Pre(lighting_std=std), 50,
                                                0, 0).lights
            for std in (0.1, 0.3)}
  # alpha ~ N(0, std) (the paper, section 4.1): the noise is linear in std.
  np.testing.assert_allclose(lights[0.3], 3 * lights[0.1], rtol=1e-5)


def test_parallel_dropout_scales_what_it_keeps():
  x = np.ones((1000,), np.float32)
  y = np.asarray(models.dropout(x, 0.75, jax.random.key(0)))
  # Inverted dropout (flax.linen.Dropout): kept units times 1 / (1 - rate).
  assert set(np.unique(y)) == {0.0, 4.0}
