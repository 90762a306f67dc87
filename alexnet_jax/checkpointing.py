"""Orbax checkpoints of the training state, with automatic resume.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save never leaves a checkpoint that would be loaded.

A checkpoint whose structure or shapes (orbax's metadata) differ from the
config's state is a mismatch: an error, nothing is touched. One whose metadata
fits but whose arrays fail to read with an error that proves corruption (data
lost, truncated or missing in a finished checkpoint; undecodable metadata) is
corrupt: it is moved aside to
`<checkpoints>.unreadable/<step>` (kept on disk, out of orbax's reach, so
`max_to_keep` never deletes a good checkpoint in its favour and the step can
be saved again) and the next older checkpoint is tried. Any other error (an
I/O error, memory) is raised as it is: the checkpoint may be sound.

Each checkpoint carries what identifies its run (`save`'s `identity`: the
config's identity fields, the class list, the images seen) in orbax's step
metadata, read back by `carried`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging as logging_lib
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator

from absl import logging
import jax
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model or optimizer."""


class UnreadableCheckpointError(ValueError):
  """No checkpoint of the workdir could be read (all corrupt)."""


def _entry(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree) -> dict[str, tuple]:
  """Leaf shapes by path ('params/conv1/bias'), for a state or for orbax's
  metadata of one (dicts and lists where the state has dataclasses)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(_entry(k) for k in path): tuple(getattr(leaf, 'shape', ()))
          for path, leaf in flat}


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (a full disk, a lost mount)."""


def _cause(error: Exception) -> str:
  """The innermost useful words of an orbax/TensorStore error."""
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  match = re.search(r'[^:"]*\[os_error_code=\'\d+\'\]|No space left on device'
                    r'|Permission denied|Read-only file system', text)
  return match.group(0).strip() if match else text[:300]


class _DropOrbaxThreadErrors(logging_lib.Filter):
  """Orbax's background threads log their failure with its traceback; the
  save reports it once, as one line."""

  def filter(self, record):
    return 'raised an exception' not in record.getMessage()


@contextlib.contextmanager
def _without_orbax_thread_errors() -> Iterator[None]:
  quiet = _DropOrbaxThreadErrors()
  handler = logging.get_absl_handler()
  handler.addFilter(quiet)
  try:
    yield
  finally:
    handler.removeFilter(quiet)


# tensorstore's status codes for a finished checkpoint's data that are gone or
# garbled; orbax raises them as ValueError. Metadata that is not JSON too.
_CORRUPTION = re.compile(r'^(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND):')


def proves_corruption(error: Exception) -> bool:
  return isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)) or (
      isinstance(error, ValueError) and bool(_CORRUPTION.match(str(error))))


class _DropUnretrieved(logging_lib.Filter):
  def filter(self, record):
    return 'exception was never retrieved' not in record.getMessage()


# Console lines of the reads orbax abandons after a failed restore.
_ABANDONED = re.compile(
    r'Traceback \(most recent call last\)|asyncio|Event loop is closed|'
    r'_check_closed|call_soon_threadsafe|^\s*[~^]+\s*$|^\s*$')


def _ignore_closed_loop_callbacks() -> None:
  """Drops 'Event loop is closed' from sys.unraisablehook (once)."""
  previous = sys.unraisablehook
  if getattr(previous, 'ignores_closed_loop', False):
    return

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and
            str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  hook.ignores_closed_loop = True
  sys.unraisablehook = hook


@contextlib.contextmanager
def quiet_failed_reads() -> Iterator[None]:
  """Keeps the reads orbax abandons after a failed restore off the console:
  each prints a traceback (asyncio's 'exception was never retrieved', or
  'Event loop is closed' from C++ threads calling back into orbax's closed
  event loop, past Python's hooks); the caller reports the failure once.
  Standard error is captured while the restore runs and given back, less
  those lines if it failed."""
  asyncio_log = logging_lib.getLogger('asyncio')
  quiet = _DropUnretrieved()
  asyncio_log.addFilter(quiet)
  sys.stderr.flush()
  saved = os.dup(2)
  failed = False
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    except Exception:
      failed = True
      _ignore_closed_loop_callbacks()  # Late ones come through this hook.
      _until_quiet(capture.fileno())  # The abandoned reads finish meanwhile.
      raise
    finally:
      gc.collect()  # Abandoned futures report when collected: now.
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      asyncio_log.removeFilter(quiet)
      capture.seek(0)
      lines = capture.read().decode(errors='replace').splitlines(True)
      if failed:
        lines = [l for l in lines if not _ABANDONED.search(l)]
      sys.stderr.write(''.join(lines))
      sys.stderr.flush()


def _until_quiet(fd: int, still: float = 0.5, most: float = 10.0) -> None:
  """Waits until nothing has been written to `fd` for `still` seconds (at
  most `most`): the abandoned reads print as they end, later on a loaded
  machine."""
  start, size, since = time.monotonic(), -1, time.monotonic()
  while time.monotonic() - start < most:
    gc.collect()  # Abandoned futures report when collected.
    now = os.fstat(fd).st_size
    if now != size:
      size, since = now, time.monotonic()
    elif time.monotonic() - since >= still:
      return
    time.sleep(0.1)


def host_copy(tree: Any) -> Any:
  """`tree` as NumPy arrays, whole on every process: an array sharded over
  several processes' devices (towers, hybrid) is gathered first, so the
  checkpoint is the same whatever the run's mode and processes."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)
  return jax.tree_util.tree_map(fetch, tree)


class Checkpointer:
  """Saves every `save` call; keeps the newest `max_to_keep`.

  With `best_metric` (e.g. 'eval_top1') it keeps instead the `max_to_keep`
  checkpoints with the highest value of that metric (orbax's best_fn),
  which `save` then needs. Saving is asynchronous (orbax writes in the
  background while training goes on) where `asynchronous` says, by default
  on accelerators: the state is copied to host memory first either way.
  """

  def __init__(self, directory: str, max_to_keep: int = 3,
               best_metric: str | None = None,
               asynchronous: bool | None = None):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    if asynchronous is None:
      asynchronous = jax.default_backend() != 'cpu'
    best = {}
    if best_metric:
      best = dict(best_fn=lambda metrics: metrics[best_metric],
                  best_mode='max', keep_checkpoints_without_metrics=False)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=asynchronous, **best)
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
    # Saved from host memory: with several processes each holds the whole
    # state and only the primary process writes it.
    host_state = host_copy(state)
    with self._writing(f'the checkpoint of step {step}'):
      self._manager.save(step, args=ocp.args.StandardSave(host_state),
                         metrics=metrics, custom_metadata=identity or {})
    logging.info('Saved the checkpoint of step %d to %s.', step, self.directory)

  def restore_latest(self, state: Any) -> Any:
    """The newest readable checkpoint restored into `state`'s structure, or
    `state` if there is none."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return state
    target = jax.device_get(state)  # Restored as host (NumPy) arrays.
    skipped = []
    for step in steps:
      self._check_fits(step, target)
      try:
        with quiet_failed_reads():
          restored = self._manager.restore(
              step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-except
        if not proves_corruption(e):
          raise
        reason = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
        where = self._set_aside(step)
        logging.warning('The checkpoint at step %d cannot be read (%s); moved '
                        'it to %s and trying the next older one.', step,
                        reason, where)
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
    """The identity the checkpoint of `step` carries (None: a checkpoint
    from before they carried one, or unreadable metadata)."""
    try:
      with quiet_failed_reads():
        metadata = self._manager.metadata(step)
    except Exception:  # pylint: disable=broad-except
      return None  # Unreadable: the restore fails and says so.
    return dict(getattr(metadata, 'custom_metadata', None) or {}) or None

  @property
  def _aside_dir(self) -> str:
    return self.directory + '.unreadable'

  def _check_fits(self, step: int, target: Any) -> None:
    """Raises IncompatibleCheckpointError if orbax's metadata of `step` has
    other arrays or shapes than `target`."""
    try:
      with quiet_failed_reads():
        metadata = self._manager.item_metadata(step).tree
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: the restore fails and says so.
    wanted, got = _shapes(target), _shapes(metadata)
    diff = [f'{k}: checkpoint {got.get(k, "absent")} vs config '
            f'{wanted.get(k, "absent")}' for k in sorted(set(wanted) | set(got))
            if got.get(k) != wanted.get(k)]
    if diff:
      raise IncompatibleCheckpointError(
          f'The checkpoint at step {step} in {self.directory} holds a different '
          f'model than this config builds ({len(diff)} arrays differ, e.g. '
          f'{"; ".join(diff[:3])}). Use a new --workdir, or the config the '
          f'checkpoint was trained with (see config.json there).')

  def _set_aside(self, step: int) -> str:
    """Moves step's directory out of the manager's directory (process 0)."""
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
    """Raises a failed write (of this save or of a background one) as one
    CheckpointWriteError naming its cause, without orbax's tracebacks."""
    try:
      with quiet_failed_reads(), _without_orbax_thread_errors():
        yield
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointWriteError(f'Cannot write {what} to {self.directory}: '
                                 f'{_cause(e)}') from e
