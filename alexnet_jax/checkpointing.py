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
    self._manager.save(step, args=ocp.args.StandardSave(state))
    logging.info('Saved the checkpoint of step %d to %s.', step, self.directory)

  def restore_latest(self, state: Any) -> Any:
    """The newest checkpoint restored into `state`'s structure, or `state`."""
    step = self._manager.latest_step()
    if step is None:
      return state
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax raises several types for a mismatch.
      saved = {}
      try:
        metadata = self._manager.item_metadata(step)
        saved = _shapes(metadata)
      except Exception:  # pylint: disable=broad-except
        pass
      wanted = _shapes(abstract)
      diff = sorted(k for k in set(saved) | set(wanted)
                    if saved.get(k) != wanted.get(k))[:6]
      raise IncompatibleCheckpointError(
          f'The checkpoint at step {step} in {self.directory} does not fit this '
          f'config (a different model or optimizer?). Differing entries: '
          f'{diff or "see below"}. Use a new --workdir, or the config the '
          f'checkpoint was trained with ({type(e).__name__}: '
          f'{str(e).splitlines()[0][:300] if str(e) else ""}).') from None

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
