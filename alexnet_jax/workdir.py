"""The training workdir's records: the lock (one run per workdir), the refusal
of a launch that would replace a run's records, and the config each start or
resume used (`config.json`, then `config.<step>.json` for an accepted change; a
resume that changes the run's identity is refused). Functions take the config
as the JSON record config.json holds (config_fields.as_record)."""

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
import numpy as np

from alexnet_jax import config_fields
from alexnet_jax import metrics_writer
from alexnet_jax import provenance

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'
CLASS_NAMES_FILE = 'class_names.txt'  # One class name per line, by label.
MEAN_IMAGE_FILE = 'mean_image.npy'  # config.normalization.mean_image's.
OLD_RECORDS = 'old_records.'  # + the UTC time a start over set them aside.


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir."""


class RecordsError(ValueError):
  """The workdir's records forbid this launch as it is."""


class ConfigChangedError(RecordsError):
  """A resume that changes the recorded run's identity."""


class WorkdirLock:
  """An exclusive `fcntl.flock` on `workdir/.lock` while the run lasts: the
  kernel releases it when the process dies, even by SIGKILL. The file names
  the holder for the error message."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)

  def __enter__(self) -> 'WorkdirLock':
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.lseek(fd, 0, os.SEEK_SET)
      holder = os.read(fd, 1000).decode(errors='replace').strip()
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
    os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)


def _records(workdir: str, kind: str) -> list[tuple[int, str]]:
  """(step, path) of the records of `kind` ('config' or 'class_names'),
  oldest first; the undated file counts as step 0."""
  pattern = re.compile(kind + r'(?:\.(\d+))?\.' +
                       ('json' if kind == 'config' else 'txt'))
  names = os.listdir(workdir) if os.path.isdir(workdir) else []
  return sorted((int(m.group(1) or 0), os.path.join(workdir, name))
                for name in names if (m := pattern.fullmatch(name)))


def record_path(workdir: str, kind: str, step: int | None = None) -> str | None:
  """The record of `kind` in force at `step` (None: the newest), or None."""
  found = [p for s, p in _records(workdir, kind) if step is None or s <= step]
  return found[-1] if found else None


def read_config(path: str) -> dict[str, Any]:
  """A config record, fields added since set as the code before them did."""
  record = json.loads(_read(path))
  for field, value in config_fields.ADDED.items():
    config_fields.set_absent(record, field, value)
  return record


def resolved_flat(record: dict[str, Any]) -> dict[str, Any]:
  """A record's fields by dotted name, groups and lrn resolved (records
  before config.json held resolved values kept None for the variant's)."""
  flat = config_fields.flatten(record)
  if flat.get('model.groups') is None or flat.get('model.lrn') is None:
    from alexnet_jax import models  # pylint: disable=g-import-not-at-top
    if flat.get('model.variant') in models.VARIANTS:
      flat.update({f'model.{k}': v for k, v in models.resolve_variant_defaults(
          flat['model.variant'], flat.get('model.groups'),
          flat.get('model.lrn')).items()})
  return flat


def run_identity(record: dict[str, Any], class_names: Iterable[str]
                 ) -> dict[str, Any]:
  """What a checkpoint carries: identity fields, classes and their digest."""
  fields = config_fields.identity_of(config_fields.flatten(record))
  classes = list(class_names)
  return {'fields': fields, 'classes': classes,
          'digest': config_fields.digest(fields, classes)}


def check_records(workdir: str, has_checkpoint: bool, start_over: bool,
                  move: bool) -> None:
  """Refuses a launch on a workdir whose records no checkpoint continues (a
  fresh start would replace them), or with `start_over` moves them to
  old_records.<time>/ (where `move`: one process does); refuses a corrupt
  metrics file on any launch, before anything is written."""
  found = []
  if os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    try:
      rows = metrics_writer.read_metrics(workdir)
    except ValueError as e:
      raise RecordsError(
          f'{e}. Repair or remove that line (the rows are the run\'s '
          f'record), then launch again.') from None
    if rows:
      found.append('metrics.jsonl')
  aside = os.path.join(workdir, 'checkpoints.unreadable')
  if os.path.isdir(aside) and os.listdir(aside):
    found.append('checkpoints.unreadable')
  found += [os.path.basename(p) for s, p in _records(workdir, 'config') if s]
  if has_checkpoint or not found:
    return
  if not start_over:
    raise RecordsError(
        f'{workdir} holds the records of a run ({", ".join(found)}) but no '
        f'checkpoint that can be read, so it cannot resume; a fresh start '
        f'would replace them. Use a new --workdir, restore the checkpoints '
        f'from a backup, or pass --config.start_over=True to train anew '
        f'there (the old records are moved to {OLD_RECORDS}<time>/).')
  if not move:
    return
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y%m%dT%H%M%S.%fZ')
  aside = os.path.join(workdir, OLD_RECORDS + stamp)
  os.makedirs(aside)
  for name in sorted(os.listdir(workdir)):
    if name not in (LOCK_FILE, 'checkpoints') and not name.startswith(
        (OLD_RECORDS, '.write_test')):
      os.replace(os.path.join(workdir, name), os.path.join(aside, name))
  logging.warning('start_over: the records of the earlier run are kept in %s.',
                  aside)


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _write(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def start_records(workdir: str, record: dict[str, Any], data, start_step: int,
                  carried: dict[str, Any] | None, is_writer: bool
                  ) -> metrics_writer.MetricsWriter:
  """Writes the run's records (where `is_writer`); returns the writer."""
  if is_writer:
    record_config(workdir, record, data.class_names, start_step, carried)
    if getattr(data, 'mean_image', None) is not None:  # For predict.
      np.save(os.path.join(workdir, MEAN_IMAGE_FILE), data.mean_image)
    provenance.record(workdir, start_step)
  writer = metrics_writer.MetricsWriter(workdir, enabled=is_writer,
                                        resume_step=start_step)
  writer.write_config(record)
  return writer


def record_config(workdir: str, record: dict[str, Any],
                  class_names: list[str], step: int,
                  carried: dict[str, Any] | None = None) -> None:
  """Writes the run's config record and class names, refusing a changed
  resume. `step`: where training starts (0: a new run, whose records replace
  those of a run that left no results); `carried`: its checkpoint's identity.
  """
  names = ''.join(f'{name}\n' for name in class_names)
  if step == 0:
    for _, path in _records(workdir, 'config') + _records(workdir,
                                                          'class_names'):
      os.remove(path)  # No checkpoint survives from the steps they describe.
  else:
    check_resume(workdir, record, step, carried, class_names)
  suffix = f'.{step}' if step else ''  # config.json, else config.<step>.json.
  last = record_path(workdir, 'config')
  if last is None or json.loads(_read(last)) != record:
    _write(os.path.join(workdir, f'config{suffix}.json'),
           json.dumps(record, indent=2, sort_keys=True))
  last = record_path(workdir, 'class_names')
  if last is None or _read(last) != names:
    _write(os.path.join(workdir, f'class_names{suffix}.txt'), names)


def _recorded(workdir: str, step: int, carried: dict[str, Any] | None):
  """(flat config record or None, recorded identity fields or None,
  recorded classes or None, where they were read)."""
  path = record_path(workdir, 'config')
  old = None
  if path is not None:
    try:
      old = resolved_flat(read_config(path))
    except (OSError, ValueError) as e:
      raise ConfigChangedError(f'Cannot read {path} to check the resumed '
                               f'config against it: {e}') from None
  if carried and carried.get('fields') is not None:
    fields = config_fields.with_older_values(carried['fields'])
    return old, fields, carried.get('classes'), f'the checkpoint of step {step}'
  if old is None:
    return None, None, None, ''
  names = record_path(workdir, 'class_names')
  classes = _read(names).splitlines() if names else None
  return old, config_fields.identity_of(old), classes, os.path.basename(path)


def check_resume(workdir: str, record: dict[str, Any], step: int,
                 carried: dict[str, Any] | None = None,
                 class_names: list[str] | None = None,
                 log_changes: bool = True) -> None:
  """Raises ConfigChangedError if the config `record` (resolved) or
  `class_names` change the run's identity, as the checkpoint of `step`
  carries it (`carried`) or else as the newest config record says, unless
  allow_config_change; logs every change it accepts if `log_changes`."""
  old, fields, classes, where = _recorded(workdir, step, carried)
  if fields is None:
    return
  new = resolved_flat(record)
  found = config_fields.changes(fields, config_fields.identity_of(new))
  if class_names is not None and classes is not None and (
      list(classes) != list(class_names)):
    found.append(('classes', list(classes), list(class_names)))
  if found and not record.get('allow_config_change', False):
    raise ConfigChangedError(
        f'{workdir} holds a run (resumed here at step {step}) of another '
        f'experiment: {config_fields.describe(found)} (as recorded in '
        f'{where}). Use a new --workdir, the recorded values, or '
        f'--config.allow_config_change=True to continue with the change '
        f'(recorded in config.{step}.json).')
  if not log_changes:
    return
  # Every change, free fields' too; the identity's as `found` names them.
  logged = {change[0]: change for change in
            (config_fields.changes(old, new) if old else []) + found}
  if logged:
    described = config_fields.describe([logged[k] for k in sorted(logged)])
    logging.warning(
        'Resuming at step %d with a changed config: %s%s. Recorded in '
        'config.%d.json.', step, described,
        ' (the run length changes; the schedule and epochs go on in images '
        'seen)' if any(k in config_fields.SCHEDULE or k == 'batch_size'
                       for k in logged) else '', step)
