"""The training workdir's records: the lock and the configs each run used.

* `WorkdirLock`: one training run per workdir. `workdir/.lock` is held with
  `fcntl.flock` for the run's lifetime; the kernel releases it when the
  process dies (even by SIGKILL), so a crashed run never blocks the next. The
  file names the holder (host, pid, start time) for the error message.
* `record_config`: the first run writes `config.json`; a resume compares its
  config with the newest record and refuses a change to the data, the model or
  the batch size (naming the fields) unless `config.allow_config_change`; any
  accepted change is written to `config.<step>.json` (the step it applies
  from), so `config.json` always stays what the first steps used.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import socket
from typing import Any, Iterable

from absl import logging

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'
CLASS_NAMES_FILE = 'class_names.txt'  # One class name per line, by label.
# config.normalization.mean_image: the mean image a run subtracted.
MEAN_IMAGE_FILE = 'mean_image.npy'
_STEP_RECORD = re.compile(r'^(config|class_names)\.(\d+)\.(json|txt)$')

# Fields whose change on resume makes the run no longer one experiment (the
# data it sees, the function it learns, the steps per epoch): refused unless
# allow_config_change. The execution choices (config.execution, and the
# model.*_impl fields of records written before that section existed) change
# neither the function nor the parameters and are free.
_GUARDED = ('dataset', 'dataset_dir', 'train_split', 'eval_split',
            'validation_fraction', 'image_size', 'resize_size', 'resize_mode',
            'augment.', 'fake_data.', 'model.', 'batch_size', 'seed',
            'ten_crop')
_FREE = ('allow_config_change',)
# Fields added after runs were first recorded, with the value the code before
# them had: a record without one describes a run made that way.
_ADDED_FIELDS = {('model', 'lrn_across_towers'): True}
_SCHEDULE = ('num_train_steps', 'num_epochs')


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir."""


class ConfigChangedError(ValueError):
  """A resume whose config differs from the recorded run's."""


class WorkdirLock:
  """An exclusive `fcntl.flock` on `workdir/.lock` while the run lasts."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read(fd)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise WorkdirBusyError(
          f'{os.path.dirname(self.path)} is in use by another run '
          f'({holder or "holder unknown"}; lock {self.path}). Wait for it to '
          f'end, or use another --workdir.') from None
    os.ftruncate(fd, 0)
    start = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    os.write(fd, f'host {socket.gethostname()} pid {os.getpid()} since '
                 f'{start}\n'.encode())
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def _read(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  return os.read(fd, 1000).decode(errors='replace').strip()


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = list(value) if isinstance(value, tuple) else value
  return flat


def _records(workdir: str, kind: str) -> list[tuple[int, str]]:
  """(step, path) of the records of `kind` ('config' or 'class_names'),
  oldest first; the undated file counts as step 0."""
  base = CONFIG_FILE if kind == 'config' else CLASS_NAMES_FILE
  found = []
  if os.path.exists(os.path.join(workdir, base)):
    found.append((0, os.path.join(workdir, base)))
  for name in os.listdir(workdir) if os.path.isdir(workdir) else ():
    m = _STEP_RECORD.match(name)
    if m and m.group(1) == kind:
      found.append((int(m.group(2)), os.path.join(workdir, name)))
  return sorted(found)


def record_path(workdir: str, kind: str, step: int | None = None) -> str | None:
  """The record of `kind` in force at `step` (None: the newest), or None."""
  found = [p for s, p in _records(workdir, kind) if step is None or s <= step]
  return found[-1] if found else None


def read_config(path: str) -> dict[str, Any]:
  """A config record as a dict, with the fields added since it was written
  set to what the code that wrote it did."""
  with open(path) as f:
    record = json.load(f)
  for (section, field), before in _ADDED_FIELDS.items():
    if isinstance(record.get(section), dict):
      record[section].setdefault(field, before)
  return record


def config_changes(old: dict[str, Any], new: dict[str, Any]
                   ) -> list[tuple[str, Any, Any]]:
  """(dotted field, old, new) for every field that differs."""
  a, b = _flatten(old), _flatten(new)
  return [(k, a.get(k, '<absent>'), b.get(k, '<absent>'))
          for k in sorted(set(a) | set(b))
          if a.get(k, '<absent>') != b.get(k, '<absent>')
          and not k.startswith(_FREE)]


def is_execution_field(field: str) -> bool:
  """Whether dotted `field` is an execution choice: config.execution's, or
  where records from before that section kept them."""
  return (field.startswith('execution.') or field == 'xla_cpu_conv_library'
          or (field.startswith('model.') and field.endswith('_impl')))


def _is_guarded(field: str) -> bool:
  return any(field == g or (g.endswith('.') and field.startswith(g))
             for g in _GUARDED) and not is_execution_field(field)


def _describe(changes: Iterable[tuple[str, Any, Any]]) -> str:
  return ', '.join(f'{k} {a!r} -> {b!r}' for k, a, b in changes)


def _write(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def record_config(workdir: str, config, class_names: list[str],
                  step: int) -> None:
  """Writes the run's config and class names, refusing a changed resume.

  `step`: the step training starts from (0 for a new run, whose records
  replace those of a run that saved no checkpoint).
  """
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  names = ''.join(f'{name}\n' for name in class_names)
  last = record_path(workdir, 'config')
  if step == 0 or last is None:
    for _, path in _records(workdir, 'config') + _records(workdir,
                                                          'class_names'):
      os.remove(path)  # No checkpoint survives from the steps they describe.
    _write(os.path.join(workdir, CONFIG_FILE), text)
    _write(os.path.join(workdir, CLASS_NAMES_FILE), names)
    return
  check_resume(workdir, config, step)
  with open(last) as f:
    changed = json.load(f) != json.loads(text)
  if changed:
    _write(os.path.join(workdir, f'config.{step}.json'), text)
  names_path = record_path(workdir, 'class_names')
  old_names = open(names_path).read() if names_path else None
  if old_names != names:
    _write(os.path.join(workdir, f'class_names.{step}.txt'), names)


def check_resume(workdir: str, config, step: int,
                 log_changes: bool = True) -> None:
  """Raises ConfigChangedError if `config` changes a guarded field of the
  newest config record (unless config.allow_config_change); logs the
  changes it accepts if `log_changes`."""
  path = record_path(workdir, 'config')
  if path is None:
    return
  try:
    old = read_config(path)
  except (OSError, ValueError) as e:
    raise ConfigChangedError(f'Cannot read {path} to check the resumed '
                             f'config against it: {e}') from None
  new = json.loads(config.to_json_best_effort())
  changes = config_changes(old, new)
  guarded = [c for c in changes if _is_guarded(c[0])]
  if guarded and not config.get('allow_config_change', False):
    raise ConfigChangedError(
        f'{workdir} holds a run (resumed here at step {step}) whose data, '
        f'model or batch differ from this config: {_describe(guarded)} (as '
        f'recorded in {os.path.basename(path)}). Use a new --workdir, the '
        f'recorded values, or --config.allow_config_change=True to continue '
        f'with the change (recorded in config.{step}.json).')
  if changes and log_changes:
    logging.warning('Resuming at step %d with a changed config: %s%s. Recorded '
                    'in config.%d.json.', step, _describe(changes),
                    ' (the run length, so the learning-rate schedule, '
                    'changes)' if any(k in _SCHEDULE for k, _, _ in changes)
                    else '', step)
