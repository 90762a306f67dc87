"""A run's records are never lost or silently wrong: evaluation beside a
training run, changed resumes, corrupt checkpoints, concurrent runs, torn
metrics files, diverged runs, one-line errors."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import config_fields
from alexnet_jax import metrics_writer
from alexnet_jax import train
from alexnet_jax import workdir as workdir_lib
from conftest import ROOT
from conftest import corrupt_checkpoint
from conftest import tiny_config


def _env(devices=1):
  return dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
              JAX_DISABLE_MOST_OPTIMIZATIONS='true',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def _fake(**overrides):
  overrides.setdefault('dataset', 'fake')
  return tiny_config(**overrides)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished training workdir: checkpoints at 2 and 4, rows at 2 and 4."""
  workdir = tmp_path_factory.mktemp('trained')
  train.train_and_evaluate(_fake(checkpoint_every_steps=2), str(workdir))
  return workdir


def _copy(trained, tmp_path):
  dest = tmp_path / 'run'
  shutil.copytree(trained, dest)
  return dest


def _digests(root):
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _run(module, *args, devices=1, timeout=300):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                        env=_env(devices), capture_output=True, text=True,
                        timeout=timeout)


# Evaluation pointed at a training workdir.


@pytest.mark.slow
def test_evaluate_on_a_training_workdir_leaves_every_file_as_it_was(
    trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _digests(workdir)
  out = _run('alexnet_jax.tools.evaluate', '--config=configs/imagenet_eval.py',
             f'--workdir={workdir}', f'--config.checkpoint={workdir}',
             '--config.dataset=fake', '--config.model.variant=paper',
             '--config.model.groups=2', '--config.model.lrn=True',
             '--config.model.width=0.05', '--config.model.num_classes=10',
             '--config.image_size=67', '--config.eval_batch_size=8',
             '--config.fake_data.eval_steps=1')
  assert out.returncode == 0, out.stderr[-2000:]
  after = _digests(workdir)
  assert {k: after.get(k) for k in before} == before
  # The evaluation's own records are in one new subdirectory.
  new = sorted({k.split(os.sep)[0] for k in set(after) - set(before)})
  assert len(new) == 1 and new[0].startswith('eval_step4_'), new
  rows = metrics_writer.read_metrics(str(workdir / new[0]))
  assert [r['step'] for r in rows] == [4] and rows[0]['eval_examples'] == 8


def test_metrics_writer_keeps_rows_without_a_resume_step(tmp_path):
  rows = [{'step': 2, 'a': 1.0}, {'step': 4, 'a': 2.0}]
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))
  metrics_writer.MetricsWriter(str(tmp_path)).close()
  assert metrics_writer.read_metrics(str(tmp_path)) == rows
  metrics_writer.MetricsWriter(str(tmp_path), resume_step=2).close()
  assert metrics_writer.read_metrics(str(tmp_path)) == rows[:1]


def test_a_resume_ends_a_last_row_that_lacks_its_newline(tmp_path):
  rows = [{'step': 2, 'a': 1.0}, {'step': 4, 'a': 2.0}]
  (tmp_path / 'metrics.jsonl').write_text(
      json.dumps(rows[0]) + '\n' + json.dumps(rows[1]))  # Cut before '\n'.
  writer = metrics_writer.MetricsWriter(str(tmp_path), resume_step=4)
  writer.write(6, {'a': 3.0})
  writer.close()
  assert metrics_writer.read_metrics(str(tmp_path)) == rows + [
      {'step': 6, 'a': 3.0}]


# Resuming with another config.


def test_resume_with_another_batch_size_or_dataset_is_refused(
    trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _digests(workdir)
  with pytest.raises(ValueError, match=r'batch_size 8 -> 16') as e:
    train.train_and_evaluate(_fake(batch_size=16, num_train_steps=6),
                             str(workdir))
  assert 'allow_config_change' in str(e.value)
  with pytest.raises(ValueError, match=r"dataset 'fake' -> 'alexnet_shapes'"):
    train.train_and_evaluate(tiny_config(num_train_steps=6), str(workdir))
  after = _digests(workdir)
  assert {k: after.get(k) for k in before} == before


def test_allowed_model_change_is_refused_by_the_checkpoint_shapes(
    trained, tmp_path):
  from alexnet_jax import checkpointing  # pylint: disable=g-import-not-at-top
  workdir = _copy(trained, tmp_path)
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match='holds a different model than this config builds'):
    train.train_and_evaluate(
        _fake(num_train_steps=6, allow_config_change=True,
              **{'model.width': 0.1}), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  assert not os.path.exists(workdir / 'checkpoints.unreadable')


def test_allowed_config_change_keeps_the_first_config_record(
    trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  first = (workdir / 'config.json').read_text()
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(
        _fake(batch_size=16, num_train_steps=6, allow_config_change=True),
        str(workdir))
  assert (workdir / 'config.json').read_text() == first
  assert json.loads(first)['batch_size'] == 8
  resumed = json.loads((workdir / 'config.4.json').read_text())
  assert resumed['batch_size'] == 16 and resumed['num_train_steps'] == 6
  # The accepted changes are logged, the longer run among them.
  assert any('batch_size 8 -> 16' in r.getMessage() and
             'num_train_steps 4 -> 6' in r.getMessage()
             for r in caplog.records)


@pytest.mark.slow
def test_changed_model_resume_is_refused_in_one_line(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  # The trained workdir's config (tiny_config, fake data) but a wider net.
  fields = {'dataset': 'fake', 'model.width': 0.1, 'image_size': 67,
            'resize_size': 72, 'batch_size': 8, 'eval_batch_size': 8,
            'fake_data.eval_steps': 1, 'num_train_steps': 6,
            'log_every_steps': 2, 'eval_every_steps': 0,
            'checkpoint_every_steps': 2}
  out = _run('alexnet_jax.main', '--config=configs/default.py',
             f'--workdir={workdir}',
             *[f'--config.{k}={v}' for k, v in fields.items()])
  assert out.returncode != 0
  # Refused from the recorded config, before anything is built (with the
  # change allowed, the checkpoint's shapes refuse it: above).
  assert 'model.width 0.05 -> 0.1' in out.stderr, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']


# Leftovers of a crash: a torn metrics line, a corrupt newest checkpoint.


def test_resume_after_a_torn_metrics_line_and_a_corrupt_checkpoint(
    trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  corrupt_checkpoint(workdir / 'checkpoints' / '4')
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 6, "train_lo')  # A crash mid-write.
  with caplog.at_level(logging.WARNING):
    last = train.train_and_evaluate(_fake(checkpoint_every_steps=2),
                                    str(workdir))
  assert last['step'] == 4
  messages = ' '.join(r.getMessage() for r in caplog.records)
  assert str(workdir / 'metrics.jsonl') in messages  # The torn line, named.
  assert 'step 4 cannot be read' in messages
  assert 'Resuming from step 2' in messages
  # Kept aside, out of the checkpoint manager's cleanup; step 4 saved anew.
  assert os.listdir(workdir / 'checkpoints.unreadable') == ['4']
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  rows = metrics_writer.read_metrics(str(workdir))
  assert [r['step'] for r in rows] == [2, 4]


@pytest.mark.slow
def test_predict_on_a_corrupt_checkpoint_is_one_line(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  corrupt_checkpoint(workdir / 'checkpoints' / '4')
  image = tmp_path / 'x.png'
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(image)
  out = _run('alexnet_jax.tools.predict', '--checkpoint',
             str(workdir / 'checkpoints' / '4'), str(image))
  assert out.returncode != 0
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('predict:')]
  assert len(errors) == 1 and 'cannot be read' in errors[0]
  assert str(workdir / 'checkpoints' / '4') in errors[0]


# Two runs in one workdir.


@pytest.mark.slow
def test_second_run_on_a_workdir_in_use_is_refused(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _digests(workdir)
  holder = subprocess.Popen(
      [sys.executable, '-c',
       'import fcntl, os, sys, time\n'
       f'fd = os.open({str(workdir / ".lock")!r}, os.O_RDWR | os.O_CREAT)\n'
       'fcntl.flock(fd, fcntl.LOCK_EX)\n'
       'os.write(fd, b"host h pid %d" % os.getpid())\n'
       'print("locked", flush=True)\n'
       'time.sleep(120)\n'], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(Exception,
                       match=rf'in use by another run.*pid {holder.pid}'):
      train.train_and_evaluate(_fake(num_train_steps=6), str(workdir))
    after = _digests(workdir)
    assert {k: after.get(k) for k in before if k != '.lock'} == {
        k: v for k, v in before.items() if k != '.lock'}
    holder.send_signal(signal.SIGKILL)  # The kernel releases its lock...
    holder.wait(timeout=30)
    # ...so the next run gets past it (to the resume check, which refuses
    # this batch size: no training needed to show it).
    with pytest.raises(ValueError, match='batch_size 8 -> 16'):
      train.train_and_evaluate(_fake(batch_size=16), str(workdir))
  finally:
    holder.kill()
    holder.wait(timeout=30)


# A diverged run under nonfinite='skip'.


def test_skip_stops_a_diverged_run_and_never_logs_a_zero_loss(tmp_path):
  # Pixels divided by 1e-38 overflow float32: every step is non-finite.
  config = _fake(num_train_steps=8, nonfinite='skip', max_consecutive_skips=3,
                 **{'normalization.std': (1e-38, 1e-38, 1e-38)})
  with pytest.raises(train.NonFiniteLossError,
                     match=r'3 consecutive steps.*last at step 3.*No checkpoint'):
    train.train_and_evaluate(config, str(tmp_path))
  # The window before the stop: its steps counted as skipped, no loss logged.
  rows = metrics_writer.read_metrics(str(tmp_path))
  assert [r['step'] for r in rows] == [2]
  assert 'train_loss' not in rows[0] and 'train_top1' not in rows[0]
  assert rows[0]['skipped_steps'] == 2


def test_max_consecutive_skips_is_validated():
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError,
                     match='max_consecutive_skips=0'):
    config_lib.validate(_fake(max_consecutive_skips=0))


# One-line errors from every command line that takes --config.


@pytest.mark.slow
@pytest.mark.parametrize('module,args,expected', [
    ('alexnet_jax.main', ['--config.model.lrm=False'],
     "--config.model.lrm: config.model has no field 'lrm'; did you mean lrn?"),
    ('alexnet_jax.tools.evaluate', ['--config.modle.lrn=False'],
     "the config has no field 'modle'; did you mean model?"),
    ('experiments.figure1', ['--config.model.lrm=False'], 'did you mean lrn?'),
    ('experiments.ablate', ['--config=does_not_exist.py'],
     'does_not_exist.py: cannot load the config file'),
    ('alexnet_jax.main', ['--config=does_not_exist.py'],
     'does_not_exist.py: cannot load the config file'),
])
def test_config_flag_errors_are_one_line(tmp_path, module, args, expected):
  argv = ['--config=configs/default.py', f'--workdir={tmp_path}', *args]
  out = _run(module, *argv, timeout=120)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and expected in lines[0], out.stderr[-2000:]


class Pickled:
  """A Python object in a .pth: torch.load(weights_only=True) refuses it."""


@pytest.mark.slow
def test_convert_refuses_a_pickled_object_in_one_line(tmp_path):
  torch = pytest.importorskip('torch')
  path = str(tmp_path / 'model.pth')
  torch.save({'model': Pickled()}, path)  # Not tensors by name.
  out = _run('alexnet_jax.tools.convert', '--variant=owt', f'--input={path}',
             f'--output={tmp_path / "o.npz"}', timeout=120)
  assert out.returncode != 0
  message = out.stderr.strip()
  assert len(message.splitlines()) == 1, message
  assert path in message and 'not a PyTorch state_dict' in message
  assert 'weights_only' not in message


def test_a_record_older_than_lrn_across_towers_means_across(tmp_path):
  """Runs recorded before model.lrn_across_towers existed normalised across
  the towers: resuming one with the present default is a model change."""
  config = tiny_config()
  record = json.loads(config.to_json_best_effort())
  del record['model']['lrn_across_towers']
  (tmp_path / 'config.json').write_text(json.dumps(record))
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match='model.lrn_across_towers True -> False'):
    workdir_lib.check_resume(str(tmp_path), config_fields.as_record(config),
                             step=4)
  config.model.lrn_across_towers = True
  workdir_lib.check_resume(str(tmp_path), config_fields.as_record(config),
                             step=4)  # The same model.
