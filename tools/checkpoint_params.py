"""The params of a training checkpoint, read without the optimizer state (so
without its config or memory). A path is a workdir, its `checkpoints`
directory (the newest step that can be read) or one step directory; nothing
there is changed."""

from __future__ import annotations

import os

from absl import logging
from etils import epath
import jax
import numpy as np

from alexnet_jax import checkpointing

_ITEM = 'default'  # The item name orbax's CheckpointManager saves under.


class CheckpointNotFoundError(FileNotFoundError):
  """No checkpoint (or none with params) at the given path."""


class CheckpointUnreadableError(ValueError):
  """The checkpoint's arrays cannot be read (a corrupt or truncated file)."""


def find_checkpoints(path: str) -> list[tuple[str, int | None]]:
  """(step directory, step) of each finished checkpoint `path` names, newest
  first."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointNotFoundError(
        f'No checkpoint at {path!r}: not a directory.')
  if os.path.isdir(os.path.join(path, 'checkpoints')):  # A workdir.
    path = os.path.join(path, 'checkpoints')
  if os.path.basename(path) == _ITEM and os.path.exists(
      os.path.join(path, '_METADATA')):  # The item inside a step directory.
    path = os.path.dirname(path)
  if os.path.isdir(os.path.join(path, _ITEM)):  # A step directory.
    name = os.path.basename(path)
    return [(path, int(name) if name.isdigit() else None)]
  # Orbax renames a step's temporary directory to the bare number when the
  # save is complete, so only numeric names are finished checkpoints.
  steps = sorted(int(d) for d in os.listdir(path)
                 if d.isdigit() and os.path.isdir(os.path.join(path, d, _ITEM)))
  if not steps:
    raise CheckpointNotFoundError(
        f'No checkpoint in {path!r} (expected a workdir, its checkpoints '
        f'directory or a step directory written by training).')
  return [(os.path.join(path, str(s)), s) for s in reversed(steps)]


def restore_orbax_params(path: str) -> tuple[dict, int | None]:
  """The params (NumPy) and step of the newest checkpoint at `path` that can
  be read. One deleted while read (by a run beside this one) is not corrupt:
  the list is read again."""
  tried = set()
  while True:
    candidates = [c for c in find_checkpoints(path) if c[0] not in tried]
    if not candidates:
      raise CheckpointNotFoundError(f'No checkpoint left in {path!r}: the '
                                    f'ones listed were deleted while read.')
    step_dir, step = candidates[0]
    tried.add(step_dir)
    try:
      return _restore_params(step_dir), step
    except CheckpointUnreadableError as e:
      if not os.path.isdir(step_dir):
        logging.info('%s went while it was read; reading the list again.',
                     step_dir)
        continue
      if len(candidates) == 1:
        raise
      logging.warning('%s; trying the next older checkpoint.', e)


def _restore_params(step_dir: str) -> dict:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  item_dir = epath.Path(step_dir) / _ITEM
  checkpointing.quiet_orbax()
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(item_dir).tree
    if 'params' not in tree:
      raise CheckpointNotFoundError(
          f'The checkpoint {step_dir!r} has no params (it holds '
          f'{sorted(tree)}).')
    item = {'params': jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree['params'])}
    restore_args = jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    restored = handler.restore(item_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  except CheckpointNotFoundError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointUnreadableError(
        f'The checkpoint {step_dir} cannot be read (corrupt or truncated?): '
        f'{type(e).__name__}: {str(e).splitlines()[0][:200]}') from None
  finally:
    handler.close()
  logging.info('Restored the params of %s.', step_dir)
  return restored['params']
