"""The towers and the hybrid over several processes (JAX's distributed
runtime on 127.0.0.1, simulated CPU devices): 2 processes x 2 devices train
as 1 process x 4 devices do, and take over its checkpoints."""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alexnet_jax import metrics_writer
from conftest import ROOT

# A tiny two-tower net on device-generated data (the same global batch for any
# split of the devices over processes); width 0.0625 gives fc6/fc7 256
# neurons, which both modes split over 4 devices. No dropout: its masks
# depend on the device layout.
_ARGS = ['--config=configs/fake_benchmark.py', '--config.model.width=0.0625',
         '--config.image_size=67', '--config.resize_size=67',
         '--config.model.num_classes=10', '--config.batch_size=8',
         '--config.eval_batch_size=8', '--config.model.dropout_rate=0.0',
         '--config.optimizer.learning_rate=0.01',
         '--config.log_every_steps=2', '--config.checkpoint_every_steps=2',
         '--config.eval_every_steps=2', '--config.num_train_steps=4']


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(workdir, mode, devices, *extra):
  cmd = [sys.executable, '-m', 'alexnet_jax.main', f'--workdir={workdir}',
         *_ARGS, *mode, *extra]
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # Compiles faster.
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _checkpoint(workdir, step):
  """The arrays of a checkpoint, read by orbax alone (NumPy, as saved)."""
  manager = ocp.CheckpointManager(
      workdir / 'checkpoints', item_handlers=ocp.StandardCheckpointHandler())
  return manager.restore(step)


def _finish(procs):
  errs = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=600)
      assert p.returncode == 0, err[-3000:]
      errs.append(err)
  finally:
    for p in procs:
      p.kill()
      p.wait()
  return errs


@pytest.mark.slow
@pytest.mark.parametrize('mode', [
    ['--config.parallelism=towers'], ['--config.parallelism=hybrid'],
    ['--config.parallelism=hybrid', '--config.hybrid_fc_batch=per_worker']],
                         ids=['towers', 'hybrid', 'hybrid_per_worker'])
def test_two_processes_resume_one_and_end_where_it_does(mode, tmp_path):
  # 1 process x 4 devices for 4 steps; its checkpoint at step 2 resumed by
  # 2 processes x 2 devices (the same global devices and batches) for steps
  # 3 and 4, whose logged train_loss is their mean.
  straight = tmp_path / 'straight'
  _finish([_start(straight, mode, 4)])
  moved = tmp_path / 'moved'
  shutil.copytree(straight / 'checkpoints' / '2', moved / 'checkpoints' / '2')
  port = _free_port()
  errs = _finish([_start(moved, mode, 2,
                         f'--coordinator_address=127.0.0.1:{port}',
                         '--num_processes=2', f'--process_id={i}')
                  for i in range(2)])
  assert 'Resumed from the checkpoint at step 2' in errs[0]
  a = metrics_writer.read_metrics(str(straight))
  b = metrics_writer.read_metrics(str(moved))
  assert a[-1]['step'] == b[-1]['step'] == 4
  assert abs(a[-1]['train_loss'] - a[0]['train_loss']) > 1e-2  # It trains.
  for key in ('train_loss', 'param_norm', 'eval_loss', 'eval_top1'):
    assert b[-1][key] == pytest.approx(a[-1][key], rel=1e-4, abs=1e-4), key
  # Every evaluation example counted once; one row per step (process 0).
  assert b[-1]['eval_examples'] == a[-1]['eval_examples'] == 8
  assert [r['step'] for r in b] == [4]
  # Step 4 saved once, whole: the same arrays as the 1 x 4 run's.
  assert sorted(os.listdir(moved / 'checkpoints')) == ['2', '4']
  want, got = _checkpoint(straight, 4), _checkpoint(moved, 4)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(
      want)
  for w, g in zip(jax.tree_util.tree_leaves(want),
                  jax.tree_util.tree_leaves(got)):
    w = np.asarray(w, np.float64)  # Within 1e-4 of the leaf's largest.
    scale = np.abs(w[np.isfinite(w)]).max(initial=0.0)
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale)
