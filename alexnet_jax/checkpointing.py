"""Orbax checkpoints of the training state, with automatic resume. Orbax
renames a step's directory when complete, so a run killed mid-save leaves
none to load. A checkpoint that proves corrupt is moved aside and the next
older one tried; other errors are raised as they are (it may be sound). Each
carries its run's identity in orbax's step metadata (`save`, `carried`)."""

from __future__ import annotations

import contextlib
import json
import logging as logging_lib
import os
import re
import shutil
import sys
from typing import Any, Iterator

from absl import logging
import jax
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model or optimizer."""


class UnreadableCheckpointError(ValueError):
  """No checkpoint of the workdir could be read (all corrupt)."""


def _shapes(tree) -> dict[str, tuple]:
  """Leaf shapes by path ('params/conv1/bias') of a state or its metadata."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'):
          tuple(getattr(leaf, 'shape', ())) for path, leaf in flat}


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (a full disk, a lost mount)."""


def _cause(error: Exception) -> str:
  """The innermost useful words of an orbax/TensorStore error."""
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  match = re.search(r'[^:"]*\[os_error_code=\'\d+\'\]|No space left on device'
                    r'|Permission denied|Read-only file system', text)
  return match.group(0).strip() if match else text[:300]


# tensorstore's status codes for a finished checkpoint's data that are gone or
# garbled; orbax raises them as ValueError. Metadata that is not JSON too.
_CORRUPTION = re.compile(r'^(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND):')


def proves_corruption(error: Exception) -> bool:
  return isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)) or (
      isinstance(error, ValueError) and bool(_CORRUPTION.match(str(error))))


class _OrbaxNoise(logging_lib.Filter):
  """Drops the tracebacks of failures the caller reports in one line: orbax's
  failed background saves, asyncio's of a failed restore's abandoned reads."""

  def filter(self, record):
    message = record.getMessage()
    if 'exception was never retrieved' in message:
      error = record.exc_info[1] if record.exc_info else None
      return not (isinstance(error, Exception) and proves_corruption(error))
    return not (f'{os.sep}orbax{os.sep}' in record.pathname and
                'raised an exception' in message)


def quiet_orbax() -> None:
  """Installs _OrbaxNoise (once per process) and drops one more such error."""
  absl_logger = logging_lib.getLogger('absl')
  if any(isinstance(f, _OrbaxNoise) for f in absl_logger.filters):
    return
  for name in ('absl', 'asyncio'):
    logging_lib.getLogger(name).addFilter(_OrbaxNoise())
  shown = sys.unraisablehook

  def hook(unraisable):
    # A restore that fails closes orbax's event loop while tensorstore's
    # other reads go on; each then reports this error from a C++ thread.
    if not (isinstance(unraisable.exc_value, RuntimeError) and
            str(unraisable.exc_value) == 'Event loop is closed'):
      shown(unraisable)

  sys.unraisablehook = hook


def host_copy(tree: Any) -> Any:
  """`tree` as NumPy arrays, whole on every process (gathered across them),
  so the checkpoint is the same whatever the run's mode and processes."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)
  return jax.tree_util.tree_map(fetch, tree)


class Checkpointer:
  """Keeps the newest `max_to_keep` checkpoints, or with `best_metric` those
  with its highest values (`save` then needs it). Saves in the background
  where `asynchronous` (default: on accelerators), from a host copy."""

  def __init__(self, directory: str, max_to_keep: int = 3,
               best_metric: str | None = None,
               asynchronous: bool | None = None):
    quiet_orbax()
    self.directory = os.path.abspath(directory)
    self._aside_dir = self.directory + '.unreadable'
    best = dict(best_fn=lambda metrics: metrics[best_metric], best_mode='max',
                keep_checkpoints_without_metrics=False) if best_metric else {}
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, **best,
        enable_async_checkpointing=(jax.default_backend() != 'cpu'
                                    if asynchronous is None else asynchronous))
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any,
           metrics: dict[str, float] | None = None,
           identity: dict[str, Any] | None = None) -> None:
    if step in self._manager.all_steps():
      return
    # Each process holds the whole state; the primary process writes it.
    with self._writing(f'the checkpoint of step {step}'):
      self._manager.save(step, args=ocp.args.StandardSave(host_copy(state)),
                         metrics=metrics, custom_metadata=identity or {})
    logging.info('Saved the checkpoint of step %d to %s.', step, self.directory)

  def restore_latest(self, state: Any) -> Any:
    """The newest readable checkpoint in `state`'s structure, or `state`."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return state
    target = jax.device_get(state)  # Restored as host (NumPy) arrays.
    skipped = []
    for step in steps:
      self._check_fits(step, target)
      try:
        restored = self._manager.restore(
            step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-except
        if not proves_corruption(e):
          raise
        logging.warning('The checkpoint at step %d cannot be read (%s: %s); '
                        'moved it to %s and trying the next older one.', step,
                        type(e).__name__, str(e).splitlines()[0][:200],
                        self._set_aside(step))
        skipped.append(step)
        continue
      if skipped:
        logging.warning('Resuming from step %d; the unreadable checkpoint(s) '
                        'of step(s) %s are kept in %s.', step, skipped,
                        self._aside_dir)
      return restored
    raise UnreadableCheckpointError(
        f'No checkpoint in {self.directory} could be read (steps {skipped}, '
        f'moved to {self._aside_dir}). Use a new --workdir, restore them '
        f'from a backup, or pass --config.start_over=True to train anew there '
        f'(the old records are kept aside).')

  def carried(self, step: int) -> dict[str, Any] | None:
    """The identity the checkpoint of `step` carries (None if it has none)."""
    try:
      metadata = self._manager.metadata(step)
    except Exception:  # pylint: disable=broad-except
      return None  # Unreadable: the restore fails and says so.
    return dict(getattr(metadata, 'custom_metadata', None) or {}) or None

  def _check_fits(self, step: int, target: Any) -> None:
    """Raises IncompatibleCheckpointError (touching nothing) if orbax's
    metadata of `step` has other arrays or shapes than `target`."""
    try:
      metadata = self._manager.item_metadata(step).tree
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: the restore fails and says so.
    wanted, got = _shapes(target), _shapes(metadata)
    diff = [f'{k}: checkpoint {got.get(k, "absent")} vs config '
            f'{wanted.get(k, "absent")}' for k in sorted(set(wanted) | set(got))
            if got.get(k) != wanted.get(k)]
    if not diff:
      return
    where = f'The checkpoint at step {step} in {self.directory} holds'
    arrays = f'({len(diff)} arrays differ, e.g. {"; ".join(diff[:3])})'
    if all(not d.startswith('params/') for d in diff):
      raise IncompatibleCheckpointError(
          f'{where} the same model but another optimizer state {arrays}: '
          f'written by an earlier version of this code or for another '
          f'optimizer, it cannot resume. Its parameters still evaluate and '
          f'predict; train anew with a new --workdir or '
          f'--config.start_over=True.')
    raise IncompatibleCheckpointError(
        f'{where} a different model than this config builds {arrays}. Use a '
        f'new --workdir, or the config the checkpoint was trained with (see '
        f'config.json there).')

  def _set_aside(self, step: int) -> str:
    """Moves step's directory to `<checkpoints>.unreadable/` (process 0): out
    of orbax's reach, so `max_to_keep` never deletes a good checkpoint in its
    favour and the step can be saved again."""
    source = os.path.join(self.directory, str(step))
    dest = os.path.join(self._aside_dir, str(step))
    n = 1
    while os.path.exists(dest):
      dest = os.path.join(self._aside_dir, f'{step}.{n}')
      n += 1
    if jax.process_index() == 0:
      os.makedirs(self._aside_dir, exist_ok=True)
      shutil.move(source, dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self._manager.reload()
    return dest

  def close(self) -> None:
    with self._writing('the checkpoints'):  # A background save's error.
      self._manager.wait_until_finished()
      self._manager.close()

  @contextlib.contextmanager
  def _writing(self, what: str) -> Iterator[None]:
    """A failed write (this save's or a background one's) as one line."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointWriteError(f'Cannot write {what} to {self.directory}: '
                                 f'{_cause(e)}') from e
