"""Preemption (SIGKILL, SIGTERM), several processes, bad workdirs."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from alexnet_jax import metrics_writer
from alexnet_jax import preemption
from conftest import ROOT

pytestmark = pytest.mark.slow  # Each test starts commands.

# A tiny paper net on device-generated data, dropout on (its keys must resume).
_ARGS = ['--config=configs/fake_benchmark.py', '--config.model.width=0.05',
         '--config.image_size=67', '--config.model.num_classes=10',
         '--config.batch_size=8', '--config.eval_batch_size=8',
         '--config.log_every_steps=2']


def _env(devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return env


def _main(workdir, *extra, devices=1, **kwargs):
  cmd = [sys.executable, '-m', 'alexnet_jax.main', f'--workdir={workdir}',
         *_ARGS, *extra]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kwargs)


def _finish(proc, timeout=600, code=0):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == code, err[-3000:]
  return err


def _last(workdir):
  return metrics_writer.read_metrics(str(workdir))[-1]


def _wait_for_checkpoint(workdir, timeout=300):
  ckpt = os.path.join(workdir, 'checkpoints')
  start = time.time()
  while time.time() - start < timeout:
    if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
      return
    time.sleep(0.05)
  raise AssertionError('no checkpoint appeared')


def test_sigkill_then_restart_ends_like_an_uninterrupted_run(tmp_path):
  steps = ['--config.num_train_steps=16', '--config.checkpoint_every_steps=4']
  straight = tmp_path / 'straight'
  uninterrupted = _main(straight, *steps)  # Side by side with the other.

  killed = tmp_path / 'killed'
  proc = _main(killed, *steps)
  _wait_for_checkpoint(str(killed))
  time.sleep(0.3)  # Somewhere after the first checkpoint, maybe mid-save.
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  _finish(uninterrupted)
  err = _finish(_main(killed, *steps))
  assert 'Resumed from the checkpoint at step' in err
  a, b = _last(straight), _last(killed)
  assert b['step'] == 16
  for key in ('train_loss', 'param_norm', 'eval_loss', 'eval_top1'):
    assert a[key] == b[key], key  # Bitwise on CPU.


def test_sigterm_saves_a_checkpoint_and_exits_with_the_stopped_status(
    tmp_path):
  proc = _main(tmp_path, '--config.num_train_steps=100000',
               '--config.checkpoint_every_steps=0')
  rows = tmp_path / 'metrics.jsonl'
  start = time.time()
  while not (rows.exists() and rows.read_text()) and time.time() - start < 300:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  # Not 0: a scheduler must not take a preempted run for a finished one.
  err = _finish(proc, code=preemption.EXIT_STOPPED)
  assert 'SIGTERM' in err and err.strip().endswith('again to resume.')
  steps = [int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]
  assert len(steps) == 1 and 2 <= steps[0] < 100000


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Width 0.0625: fc6/fc7 of 256 neurons, split over the hybrid's 4 devices.
@pytest.mark.parametrize('mode', [
    [], ['--config.parallelism=hybrid', '--config.model.width=0.0625']],
                         ids=['data', 'hybrid'])
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(
    tmp_path, mode):
  port = _free_port()
  procs = [_main(tmp_path, '--config.num_train_steps=100000',
                 '--config.checkpoint_every_steps=0',
                 '--config.model.dropout_rate=0.0', *mode,
                 f'--coordinator_address=127.0.0.1:{port}',
                 '--num_processes=2', f'--process_id={i}', devices=2)
           for i in range(2)]
  try:
    rows = tmp_path / 'metrics.jsonl'
    start = time.time()
    while not (rows.exists() and rows.read_text()):
      assert time.time() - start < 300, 'no metrics row appeared'
      assert all(p.poll() is None for p in procs), procs[0].stderr.read()
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # One process only.
    errs = [_finish(p, timeout=180, code=preemption.EXIT_STOPPED)
            for p in procs]
  finally:
    for p in procs:
      p.kill()
      p.wait()
  saved = [re.findall(r'saved the checkpoint at step (\d+)', e) for e in errs]
  assert saved[0] and saved[0] == saved[1], saved
  steps = [d for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]
  assert steps == saved[0]
