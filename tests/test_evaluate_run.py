"""`evaluate --workdir=RUN` evaluates a training run as the run recorded it:
the same metrics as the run's own last evaluation, through the command line."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from test_image_folder import write_image

pytestmark = pytest.mark.slow  # Each test starts commands.

pytest.importorskip('tensorflow')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.width=0.05', '--config.image_size=67',
        '--config.resize_size=72', '--config.batch_size=4',
        '--config.eval_batch_size=4', '--config.num_train_steps=3',
        '--config.log_every_steps=3', '--config.model.num_classes=2',
        '--config.cache=False']


def _command(module, *args, env_home):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['TFDS_DATA_DIR'] = os.path.join(env_home, 'tfds')
  out = subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _rows(directory):
  with open(os.path.join(directory, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def _folder(root):
  """Two classes of coloured images, far from ImageNet's mean."""
  for split, n in (('train', 4), ('validation', 3)):
    for c, colour in (('red', (230, 20, 20)), ('blue', (10, 20, 240))):
      for i in range(n):
        write_image(os.path.join(root, split, c, f'{i}.jpg'), (80, 90),
                    i + 10 * len(split))
        write_image(os.path.join(root, split, c, f's{i}.jpg'), (80, 90), i,
                    colour=colour)
  return root


def _evaluated(workdir, home, *extra):
  out = _command('alexnet_jax.tools.evaluate', f'--workdir={workdir}', *extra,
                 env_home=home)
  dirs = [d for d in os.listdir(workdir) if d.startswith('eval_step')]
  assert len(dirs) == 1, dirs
  return _rows(os.path.join(workdir, dirs[0]))[-1], out


@pytest.mark.parametrize('normalization', [
    ['--config.normalization.mean_from_data=True'],
    ['--config.normalization.mean_image=True',
     '--config.normalization.mean_from_data=False']],
    ids=['measured_channel_mean', 'mean_image'])
def test_evaluate_alone_reproduces_the_runs_last_evaluation(
    tmp_path, normalization):
  root = _folder(str(tmp_path / 'data'))
  workdir = str(tmp_path / 'run')
  home = str(tmp_path)
  _command('alexnet_jax.main', '--config=configs/flowers17.py',
           f'--workdir={workdir}', f'--config.dataset_dir={root}', *TINY,
           *normalization, env_home=home)
  trained = _rows(workdir)[-1]
  got, out = _evaluated(workdir, home)
  # TFDS's INFO lines stay off the console, as in training.
  assert not re.search(r'^I\d.* (dataset_info|dataset_builder|reader|'
                       r'read_only_builder|logging_logger)\.py:', out.stderr,
                       re.M), out.stderr[-3000:]
  assert got['step'] == trained['step'] == 3
  assert got['eval_examples'] == trained['eval_examples'] == 12
  np.testing.assert_allclose(got['eval_loss'], trained['eval_loss'],
                             rtol=1e-6)
  assert got['eval_top1'] == trained['eval_top1']
  assert got['eval_top5'] == trained['eval_top5']
  # The training records are untouched: the run's own metrics stay as they
  # were, and the evaluation's records went into their own directory.
  assert _rows(workdir)[-1] == trained


def test_a_step_without_checkpoint_names_the_steps_there(tmp_path):
  from alexnet_jax.tools import checkpoint_params
  from alexnet_jax.tools import evaluate
  for step in (2, 4):  # Finished orbax steps: <step>/default/.
    os.makedirs(tmp_path / 'checkpoints' / str(step) / 'default')
  with pytest.raises(checkpoint_params.CheckpointNotFoundError,
                     match=re.escape(f'--step=3: {tmp_path} has checkpoints '
                                     'at steps [4, 2].')):
    evaluate.run_config(str(tmp_path), 3)


def test_weights_of_another_layout_end_in_one_line(tmp_path):
  """convert's ConversionError, raised under evaluate, is a user's error."""
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.evaluate',
       '--config=configs/imagenet_eval.py', f'--workdir={tmp_path / "eval"}',
       f'--config.checkpoint={tmp_path / "other.npz"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 1, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert "unexpected entry 'x'" in out.stderr.strip().splitlines()[-1]
