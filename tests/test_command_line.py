"""What a user who mistypes or is unlucky sees from the commands: one line
naming the cause, no traceback; and exit statuses a scheduler can trust.
Each runs the command as a user does, in a fresh process."""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from alexnet_jax import preemption
from alexnet_jax.tools import convert
from conftest import ROOT
from test_convert import _model
from test_convert import _random_params

pytestmark = pytest.mark.slow  # Each test starts commands.


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(extra)
  return env


def _run(module, *args, timeout=300, **env):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                        env=_env(**env), capture_output=True, text=True,
                        timeout=timeout)


def _one_line_error(out, *expected):
  assert out.returncode == 1, (out.returncode, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  for text in expected:
    assert text in last, (text, out.stderr[-3000:])
  return last


def test_a_missing_config_file_with_overrides_is_one_line(tmp_path):
  out = _run('alexnet_jax.main', '--config=configs/nope.py',
             f'--workdir={tmp_path}', '--config.batch_size=4')
  _one_line_error(out, 'configs/nope.py', 'cannot load the config file')
  assert len(out.stderr.strip().splitlines()) == 1


def test_a_config_file_that_does_not_parse_names_its_line(tmp_path):
  bad = tmp_path / 'bad_config.py'
  bad.write_text('def get_config():\n  return dict(a=1\n\n')
  out = _run('alexnet_jax.main', f'--config={bad}', f'--workdir={tmp_path}')
  _one_line_error(out, f'{bad}:2', 'does not parse')
  assert len(out.stderr.strip().splitlines()) == 1


def test_prepare_dataset_without_the_imagenet_tars_says_which_go_where(
    tmp_path):
  tars = tmp_path / 'tars'
  tars.mkdir()
  out = _run('alexnet_jax.tools.prepare_dataset',
             '--config=configs/imagenet_paper.py',
             f'--output_dir={tmp_path / "out"}', f'--config.manual_dir={tars}',
             HOME=str(tmp_path), TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  _one_line_error(out, 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar',
                  str(tars))


def _owt_state_dict(torch):
  params = _random_params(_model('owt', width=0.1, num_classes=5), 224)
  state = convert.flax_to_torch(params, 'owt')
  return params, {k: torch.from_numpy(v) for k, v in state.items()}


@pytest.mark.parametrize('key', convert.STATE_DICT_KEYS)
def test_convert_takes_a_training_checkpoint_wrapping_the_state_dict(
    tmp_path, key):
  torch = pytest.importorskip('torch')
  params, state = _owt_state_dict(torch)
  src, dst = str(tmp_path / 'ckpt.pth'), str(tmp_path / 'params.npz')
  torch.save({key: state, 'optimizer': {'lr': 0.1}, 'epoch': 3}, src)
  out = _run('alexnet_jax.tools.convert', '--variant=owt', f'--input={src}',
             f'--output={dst}')
  assert out.returncode == 0, out.stderr[-3000:]
  jax.tree_util.tree_map(np.testing.assert_array_equal, convert.load_npz(dst),
                         params)


def test_convert_says_what_a_file_holds_when_it_is_no_state_dict(tmp_path):
  torch = pytest.importorskip('torch')
  src = str(tmp_path / 'other.pth')
  torch.save({'a': [1, 2, 3]}, src)
  out = _run('alexnet_jax.tools.convert', '--variant=owt', f'--input={src}',
             f'--output={tmp_path / "o.npz"}')
  _one_line_error(out, src, "'a' (list)", 'not a state_dict')


def test_convert_refuses_an_output_it_cannot_write_before_converting(
    tmp_path):
  params = _random_params(_model('owt', width=0.1, num_classes=5), 224)
  src = str(tmp_path / 'params.npz')
  convert.save_npz(params, src)
  unknown = tmp_path / 'params.onnx'
  out = _run('alexnet_jax.tools.convert', '--variant=owt', f'--input={src}',
             f'--output={unknown}')
  _one_line_error(out, '--output', '.npz or .pth')
  assert not unknown.exists()
  blocked = tmp_path / 'a_file'
  blocked.write_text('')
  out = _run('alexnet_jax.tools.convert', '--variant=owt', f'--input={src}',
             f'--output={blocked / "params.npz"}')
  _one_line_error(out, 'cannot be written', 'Not a directory')


@pytest.fixture
def small_disk(tmp_path):
  """A 3 MiB tmpfs: the run's first checkpoint does not fit."""
  mount = tmp_path / 'small'
  mount.mkdir()
  made = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3M', 'tmpfs',
                         str(mount)], capture_output=True, text=True)
  if made.returncode:
    pytest.skip(f'cannot mount a small tmpfs here: {made.stderr.strip()}')
  yield mount
  subprocess.run(['umount', '-l', str(mount)], check=False)


def test_a_full_disk_ends_with_its_cause_and_no_tracebacks(small_disk):
  out = _run('alexnet_jax.main', '--config=configs/fake_benchmark.py',
             f'--workdir={small_disk / "run"}', '--config.model.width=0.25',
             '--config.image_size=67', '--config.model.num_classes=10',
             '--config.batch_size=4', '--config.num_train_steps=4',
             '--config.checkpoint_every_steps=2', timeout=600)
  last = _one_line_error(out, 'Cannot write the checkpoint of step 2',
                         'No space left on device')
  assert 'Event loop is closed' not in out.stderr
  assert len(out.stderr.strip().splitlines()) < 12, out.stderr[-3000:]
  assert last.startswith('error: ')


def test_ablate_stopped_by_sigterm_exits_75_and_resumes(tmp_path):
  args = ['--config=configs/fake_benchmark.py', f'--workdir={tmp_path}',
          '--variants=baseline', '--config.model.width=0.05',
          '--config.image_size=67', '--config.model.num_classes=10',
          '--config.batch_size=8', '--config.log_every_steps=2',
          '--config.checkpoint_every_steps=0']
  proc = subprocess.Popen(
      [sys.executable, '-m', 'experiments.ablate', *args,
       '--config.num_train_steps=100000'], cwd=ROOT, env=_env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  rows = tmp_path / 'baseline' / 'seed0' / 'metrics.jsonl'
  start = time.time()
  while not (rows.exists() and rows.read_text()):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - start < 300, 'no metrics row appeared'
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == preemption.EXIT_STOPPED, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert 'run the same command again' in last
  stopped = int(re.search(r'stopped at step (\d+)', last).group(1))
  # Run again (to a reachable end): the sweep resumes the stopped run.
  out = _run('experiments.ablate', *args,
             f'--config.num_train_steps={stopped + 2}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Resumed from the checkpoint at step {stopped}' in out.stderr


def test_hybrid_width_hint_names_widths_that_fit_the_device_count(tmp_path):
  out = _run('alexnet_jax.main', '--config=configs/fake_benchmark.py',
             f'--workdir={tmp_path}', '--config.parallelism=hybrid',
             '--config.model.width=0.25', '--config.batch_size=6',
             '--config.eval_batch_size=6',
             XLA_FLAGS='--xla_force_host_platform_device_count=3')
  last = _one_line_error(out, 'model.width', 'over 3 devices')
  hinted = [float(w) for w in re.findall(
      r'(\d+\.\d+)', last.split('e.g. width')[1])]
  assert hinted
  for width in hinted:  # Each hinted width gives fc6 a multiple of 3.
    assert round(4096 * width) % 3 == 0, (width, last)


def test_profile_steps_says_where_the_trace_went(tmp_path):
  out = _run('alexnet_jax.main', '--config=configs/fake_benchmark.py',
             f'--workdir={tmp_path}', '--config.model.width=0.05',
             '--config.image_size=67', '--config.model.num_classes=10',
             '--config.batch_size=4', '--config.num_train_steps=6',
             '--config.log_every_steps=2', '--config.profile_steps=2')
  assert out.returncode == 0, out.stderr[-3000:]
  profile = str(tmp_path / 'profile')
  assert f'Wrote a jax.profiler trace of steps 3-4 to {profile}' in out.stderr
  traces = [f for _, _, files in os.walk(profile) for f in files
            if f.endswith('.xplane.pb')]
  assert traces
