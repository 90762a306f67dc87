"""Orbax checkpoints of the training state, with automatic resume.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save never leaves a checkpoint that would be loaded.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model or optimizer."""


def _shapes(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(getattr(leaf, 'shape', ()))
          for path, leaf in flat}


class Checkpointer:
  """Saves every `save` call; keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    if step in self._manager.all_steps():
      return
    # Saved from host memory: with several processes each holds the whole
    # (replicated) state and only the primary process writes it.
    host_state = jax.device_get(state)
    self._manager.save(step, args=ocp.args.StandardSave(host_state))
    logging.info('Saved the checkpoint of step %d to %s.', step, self.directory)

  def restore_latest(self, state: Any) -> Any:
    """The newest checkpoint restored into `state`'s structure, or `state`."""
    step = self._manager.latest_step()
    if step is None:
      return state
    target = jax.device_get(state)  # Restored as host (NumPy) arrays.
    try:
      restored = self._manager.restore(step,
                                       args=ocp.args.StandardRestore(target))
    except Exception as e:  # Orbax raises several types for a mismatch.
      raise IncompatibleCheckpointError(
          f'The checkpoint at step {step} in {self.directory} does not fit '
          f'this config (a different model or optimizer?): '
          f'{type(e).__name__}: {str(e).splitlines()[0][:300]}. Use a new '
          f'--workdir, or the config the checkpoint was trained with.') from None
    wanted, got = _shapes(target), _shapes(restored)
    diff = [f'{k}: checkpoint {got.get(k)} vs config {wanted[k]}'
            for k in wanted if got.get(k) != wanted[k]]
    if diff:
      raise IncompatibleCheckpointError(
          f'The checkpoint at step {step} in {self.directory} holds a different '
          f'model than this config builds ({len(diff)} arrays differ, e.g. '
          f'{"; ".join(diff[:3])}). Use a new --workdir, or the config the '
          f'checkpoint was trained with (see config.json there).')
    return restored

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
