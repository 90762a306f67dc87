"""Checkpoints as orbax offers them: asynchronous saves, the best by eval."""

import os

import jax
import numpy as np

from alexnet_jax import checkpointing
from alexnet_jax import steps
from alexnet_jax import train


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
