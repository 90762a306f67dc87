"""Checkpoints as orbax offers them: asynchronous saves, the best by eval."""

import logging
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import steps
from alexnet_jax import train
from conftest import ROOT


def test_asynchronous_saves_restore_the_state(tmp_path):
  state = {'w': np.arange(6, dtype=np.float32).reshape(2, 3),
           'step': np.int32(7)}
  saver = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2,
                                     asynchronous=True)
  saver.save(1, jax.tree_util.tree_map(lambda x: x * 0, state))
  saver.save(7, state)
  saver.close()  # Waits for the background writes.
  loader = checkpointing.Checkpointer(str(tmp_path), asynchronous=False)
  assert loader.latest_step() == 7
  restored = loader.restore_latest(jax.tree_util.tree_map(np.zeros_like,
                                                          state))
  np.testing.assert_array_equal(restored['w'], state['w'])
  loader.close()


def test_a_checkpoint_of_another_optimizer_state_says_so(tmp_path):
  # Same parameters, another optimizer state layout (an earlier version of
  # the code, or another optimizer): the message must not blame the model.
  params = {'conv1': {'kernel': np.ones((3, 3), np.float32)}}
  saver = checkpointing.Checkpointer(str(tmp_path), asynchronous=False)
  saver.save(2, {'params': params, 'opt_state': {'count': np.int32(2)}})
  saver.close()
  loader = checkpointing.Checkpointer(str(tmp_path), asynchronous=False)
  target = {'params': params, 'opt_state': {'count': np.int32(0),
                                            'scale': np.float32(1)}}
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r'same model.*optimizer state.*opt_state/scale'):
    loader.restore_latest(target)
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match='holds a different model'):
    loader.restore_latest({'params': {'conv1': {'kernel': np.ones(
        (5, 3), np.float32)}}, 'opt_state': {'count': np.int32(0)}})
  loader.close()


def test_the_best_evaluation_is_kept_apart_from_the_newest(tmp_path, tiny,
                                                           monkeypatch):
  scores = iter([0.5, 0.8, 0.3])  # Evaluations at steps 2, 4, 6.

  def fake_evaluate(*args):
    del args
    return {'eval_loss': 1.0, 'eval_top1': next(scores), 'eval_top5': 1.0,
            'eval_examples': 8}

  monkeypatch.setattr(steps, 'evaluate_batches', fake_evaluate)
  config = tiny(dataset='fake', num_train_steps=6, eval_every_steps=2,
                checkpoint_every_steps=2, keep_checkpoints=1,
                keep_best_checkpoint=True)
  train.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / 'checkpoints_best') == ['4']  # 0.8.
  assert os.listdir(tmp_path / 'checkpoints') == ['6']  # Resume reads this.


# A checkpoint of many arrays: a failed restore abandons many reads at once.
_CORRUPT_RESTORE = '''
import sys
import numpy as np
from alexnet_jax import checkpointing
from conftest import corrupt_checkpoint
state = {f'a{i}': np.arange(20000 + i, dtype=np.float32) for i in range(200)}
saver = checkpointing.Checkpointer(sys.argv[1])
for step in range(1, 7):  # Whether the reads race varies: six tries.
  saver.save(step, state)
  saver._manager.wait_until_finished()
  corrupt_checkpoint(f'{sys.argv[1]}/{step}')
  try:
    saver.restore_latest(state)
  except checkpointing.UnreadableCheckpointError:
    print('refused', file=sys.stderr)
'''


@pytest.mark.slow
def test_a_failed_restore_leaves_no_traceback_on_the_console(tmp_path):
  # A fresh process: the abandoned reads report until it exits.
  out = subprocess.run(
      [sys.executable, '-c', _CORRUPT_RESTORE, str(tmp_path / 'ckpt')],
      cwd=os.path.join(ROOT, 'tests'), capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count('refused') == 6, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]


def test_orbax_noise_is_dropped_and_nothing_else(monkeypatch):
  absl_logger = logging.getLogger('absl')
  asyncio_logger = logging.getLogger('asyncio')
  for logger in (absl_logger, asyncio_logger):
    monkeypatch.setattr(logger, 'filters', [])
  shown = []
  monkeypatch.setattr(sys, 'unraisablehook', shown.append)
  checkpointing.quiet_orbax()
  checkpointing.quiet_orbax()  # Once: one filter, one hook.
  assert len(absl_logger.filters) == len(asyncio_logger.filters) == 1

  def unraisable(error):
    return types.SimpleNamespace(exc_type=type(error), exc_value=error,
                                 exc_traceback=None, err_msg=None, object=None)

  sys.unraisablehook(unraisable(RuntimeError('Event loop is closed')))
  assert not shown
  sys.unraisablehook(unraisable(RuntimeError('something else')))
  assert [str(u.exc_value) for u in shown] == ['something else']

  def record(path, message, error=None):
    return logging.LogRecord('absl', logging.ERROR, path, 1, message, (),
                             error and (type(error), error, None))

  thread_error = 'Thread.run() raised an exception: disk full'
  assert not absl_logger.filter(record('/x/orbax/checkpoint/f.py',
                                       thread_error))
  assert absl_logger.filter(record('/x/orbax/checkpoint/f.py', 'other'))
  assert absl_logger.filter(record('/x/alexnet_jax/train.py', thread_error))
  # asyncio's report of a read abandoned after a corrupt one, and no other.
  unretrieved = 'Task exception was never retrieved'
  assert not asyncio_logger.filter(record(
      '/x/asyncio/base_events.py', unretrieved, ValueError('DATA_LOSS: x')))
  assert asyncio_logger.filter(record(
      '/x/asyncio/base_events.py', unretrieved, ValueError('other')))
