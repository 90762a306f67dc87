"""The training data's order: a function of (seed, epoch, global position)
only, the same for any number of processes, and resumed at the right place.

Runs on the embedded `alexnet_shapes` dataset, generated small (48 training
and 16 validation images) into a temporary TFDS data dir under the name the
pipeline loads, so the pipeline reads it as it reads the full one.
"""

import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from alexnet_jax import metrics_writer
from alexnet_jax import train
from alexnet_jax.datasets import shapes
from conftest import ROOT
from conftest import tiny_config


class _SmallShapes(shapes.AlexnetShapes, skip_registration=True):
  name = 'alexnet_shapes'  # Found by shapes.build(data_dir) as prepared.
  NUM_TRAIN_EXAMPLES = 48
  NUM_VALIDATION_EXAMPLES = 16


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  _SmallShapes(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


def _config(data_dir, **overrides):
  config = tiny_config(**overrides)
  config.data_dir = data_dir
  return config


def test_epoch_order_slices_one_global_order_by_process():
  n, batch = 23, 8  # 2 steps: 7 examples left out each epoch.
  ref, ref_pos = input_pipeline.epoch_order(n, batch, 3, 5, 1, 0)
  assert sorted(ref_pos) == list(range(16))
  assert len(set(ref)) == 16 and set(ref) <= set(range(n))
  for nproc in (2, 4):
    parts = [input_pipeline.epoch_order(n, batch, 3, 5, nproc, p)
             for p in range(nproc)]
    per = batch // nproc
    for step in range(2):  # Global batch = the processes' slices in order.
      got = np.concatenate([idx[step * per:(step + 1) * per]
                            for idx, _ in parts])
      np.testing.assert_array_equal(got, ref[step * batch:(step + 1) * batch])
  other, _ = input_pipeline.epoch_order(n, batch, 4, 5, 1, 0)
  assert not np.array_equal(other, ref)  # Each epoch is shuffled anew.


def test_two_processes_read_one_process_global_batches(shapes_dir,
                                                       monkeypatch):
  config = _config(shapes_dir)
  single = input_pipeline.create_data(config)
  want = single.train_batches(5)  # Steps 5-7 cross the end of epoch 0.
  want = [next(want) for _ in range(3)]
  assert want[0]['image'].dtype == np.uint8  # Lit on the accelerator.
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  got = []
  for pid in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda p=pid: p)
    data = input_pipeline.create_data(config)
    assert data.steps_per_epoch == single.steps_per_epoch == 6
    stream = data.train_batches(5)
    got.append([next(stream) for _ in range(3)])
  for step in range(3):
    for key in ('image', 'label', 'flip', 'light'):
      np.testing.assert_array_equal(
          np.concatenate([got[0][step][key], got[1][step][key]], axis=1),
          want[step][key])


def test_array_record_reads_the_records_that_tfrecord_holds(shapes_dir,
                                                            tmp_path):
  # Records read one by one (tfds.data_source) against the tfrecord split
  # held in memory: the same batches, decoded from bytes (cache=False).
  builder = _SmallShapes(data_dir=str(tmp_path), file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  config = _config(shapes_dir, cache=False)
  batches = []
  for b in (None, builder):
    stream = input_pipeline.create_data(config, builder=b).train_batches(4)
    batches.append([next(stream) for _ in range(3)])
  assert isinstance(input_pipeline.create_data(config, builder=builder).train_table(),
                    input_pipeline.DataSourceTable)
  for want, got in zip(*batches):
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
  # Evaluation reads array_record too, every example once.
  evaluation = list(input_pipeline.create_data(config, builder=builder).eval_batches())
  assert sum(int(b['mask'].sum()) for b in evaluation) == 16


def test_resumed_training_on_the_embedded_dataset_ends_like_a_straight_run(
    shapes_dir, tmp_path):
  def run(workdir, steps):
    config = _config(shapes_dir, num_train_steps=steps,
                     checkpoint_every_steps=2)
    return train.train_and_evaluate(config, str(workdir))

  straight = run(tmp_path / 'straight', 4)
  run(tmp_path / 'resumed', 2)
  resumed = run(tmp_path / 'resumed', 4)
  for key in ('train_loss', 'param_norm', 'eval_loss'):
    assert resumed[key] == straight[key], key  # Bitwise on CPU.
  # (Resuming one step late changes train_loss: the data position counts.)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _main(workdir, data_dir, steps, devices, *extra):
  cmd = [sys.executable, '-m', 'alexnet_jax.main', f'--workdir={workdir}',
         '--config=configs/default.py', f'--config.data_dir={data_dir}',
         '--config.model.width=0.05', '--config.resize_size=72',
         '--config.batch_size=8', '--config.eval_batch_size=8',
         '--config.model.dropout_rate=0.0', '--config.log_every_steps=2',
         f'--config.num_train_steps={steps}',
         '--config.checkpoint_every_steps=2', *extra]
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # Compiles faster.
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc):
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return err


def test_checkpoint_of_one_process_resumes_on_two_at_the_same_data(
    shapes_dir, tmp_path):
  # 1 process x 4 devices for 4 steps, against its checkpoint at step 2
  # resumed by 2 processes x 2 devices for steps 3 and 4 (the same global
  # devices): the same global batches, whose losses differ by the summation
  # order at most.
  straight = tmp_path / 'straight'
  _finish(_main(straight, shapes_dir, 4, 4))
  moved = tmp_path / 'moved'
  shutil.copytree(straight / 'checkpoints' / '2', moved / 'checkpoints' / '2')
  port = _free_port()
  procs = [_main(moved, shapes_dir, 4, 2,
                 f'--coordinator_address=127.0.0.1:{port}',
                 '--num_processes=2', f'--process_id={i}') for i in range(2)]
  errs = [_finish(p) for p in procs]
  assert 'Resumed from the checkpoint at step 2' in errs[0]
  a = metrics_writer.read_metrics(str(straight))[-1]
  b = metrics_writer.read_metrics(str(moved))[-1]
  assert a['step'] == b['step'] == 4
  for key in ('train_loss', 'eval_loss', 'param_norm'):
    assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), key
  # Only process 0 wrote the records: no row twice; both saved step 4.
  steps = [r['step'] for r in metrics_writer.read_metrics(str(moved))]
  assert len(steps) == len(set(steps)) and steps[-1] == 4
  assert sorted(os.listdir(moved / 'checkpoints')) == ['2', '4']
