"""What the experiments share: config overrides and resumable runs.

Nothing here imports TensorFlow or ml_collections at module level, so
`experiments.benchmark` can use the overrides on a machine with JAX alone; the
training loop (and with it the input pipeline) is imported only when a run
starts.

A run lives in `workdir/<variant>/seed<k>`: `train.train_and_evaluate` writes
`metrics.jsonl`, `config.json` and checkpoints there, and `run.json` here keeps
the wall time summed over every start of the run, so a re-run that skips a
finished run (or resumes an interrupted one) keeps it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging

from alexnet_jax import config_fields
from alexnet_jax import preemption
from alexnet_jax import workdir as workdir_lib


RUN_RECORD = 'run.json'
_NAME = re.compile(r'^[A-Za-z0-9_.+-]+$')


# ----------------------------------------------------------------------------
# Config overrides by dotted field name.
# ----------------------------------------------------------------------------


def _fields(node) -> list[str] | None:
  """The field names of a config node; None for a leaf value."""
  return sorted(node.keys()) if hasattr(node, 'keys') else None


def set_field(config, field: str, value: Any, where: str) -> None:
  """`config.<field> = value` for a dotted `field`, naming `where` on error.
  `config` is an ml_collections ConfigDict."""
  parts = field.split('.')
  node = config
  for i, part in enumerate(parts):
    known = _fields(node)
    if not known or part not in known:
      here = '.'.join(parts[:i + 1])
      raise ValueError(f'{where}: config.{here} does not exist'
                       + (f'; the fields there are {known}' if known else '')
                       + '.')
    if i < len(parts) - 1:
      node = node[part]
  try:
    node[parts[-1]] = value
  except (TypeError, ValueError) as e:
    raise ValueError(
        f'{where}: cannot set config.{field}={value!r}: {e}') from None


def with_overrides(config, overrides: Mapping[str, Any], where: str):
  """A copy of `config` with the dotted-field `overrides` applied."""
  config = copy.deepcopy(config)
  for field, value in overrides.items():
    set_field(config, field, value, where)
  return config


def check_name(name: str, what: str) -> str:
  if not isinstance(name, str) or not _NAME.match(name):
    raise ValueError(f'{what} {name!r} must be a non-empty name of letters, '
                     f'digits and "_.+-" (it names a directory).')
  return name


# ----------------------------------------------------------------------------
# Runs: one config trained in its own directory, resumable and skippable.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  variant: str
  seed_index: int  # k: the run's config.seed is the base seed + k.
  config: Any
  workdir: str


def run_dir(workdir: str, variant: str, seed_index: int) -> str:
  return os.path.join(workdir, variant, f'seed{seed_index}')


def plan_runs(base_config, workdir: str,
              variants: Mapping[str, Mapping[str, Any]], seeds: int,
              where: str) -> list[Run]:
  """One `Run` per variant and seed, each config validated before any trains.

  `variants` maps a name to dotted-field overrides applied on top of
  `base_config`; seed k sets `config.seed = base_config.seed + k`.
  """
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  if not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f'--seeds={seeds!r}: expected an integer >= 1.')
  runs = []
  for name, overrides in variants.items():
    check_name(name, 'Variant name')
    variant_config = with_overrides(base_config, overrides,
                                    f'variant {name!r} of {where}')
    _check_same_xla_options(variant_config, base_config, name, where)
    for k in range(seeds):
      config = copy.deepcopy(variant_config)
      config.seed = base_config.seed + k
      try:
        train.validate(config)
      except ValueError as e:
        raise ValueError(f'variant {name!r} of {where} (overrides '
                         f'{dict(overrides)}): {e}') from None
      runs.append(Run(name, k, config, run_dir(workdir, name, k)))
  return runs


def _check_same_xla_options(config, base_config, name: str, where: str):
  """XLA reads its options once per process, so every run of a sweep uses
  the base config's."""
  field = 'xla_cpu_conv_library'
  mine, base = config.execution.get(field), base_config.execution.get(field)
  if mine != base:
    raise ValueError(
        f'variant {name!r} of {where} sets config.execution.{field}={mine!r}, '
        f'but the runs of one sweep share one process and its XLA options '
        f'({base!r}): pass --config.execution.{field}={mine!r} instead.')


def read_record(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, RUN_RECORD)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _finite_or_none(obj: Any) -> Any:
  """`obj` with NaN and infinities as None (JSON has no NaN)."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, Mapping):
    return {k: _finite_or_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite_or_none(v) for v in obj]
  return obj


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` to `path` as JSON (NaN as null), replacing it atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(_finite_or_none(obj), f, indent=2, sort_keys=True,
              allow_nan=False)
    f.write('\n')
  os.replace(tmp, path)


def read_rows(directory: str) -> list[dict[str, Any]]:
  """The rows of `metrics.jsonl`, one per step, sorted; a step logged again
  after a resume replaces its earlier row."""
  path = os.path.join(directory, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  by_step: dict[int, dict] = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        by_step[int(row['step'])] = row
  return [by_step[s] for s in sorted(by_step)]


def check_same_experiment(run: Run) -> None:
  """Fails if `run.workdir` holds a run of another experiment: one whose
  identity fields (alexnet_jax.config_fields) differ."""
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  path = os.path.join(run.workdir, workdir_lib.CONFIG_FILE)
  if not os.path.exists(path):
    return
  saved = config_fields.identity_of(
      workdir_lib.resolved_flat(workdir_lib.read_config(path)))
  wanted = config_fields.identity_of(config_fields.flatten(
      config_fields.as_record(train.resolve(run.config))))
  differ = config_fields.changes(saved, wanted)
  if differ:
    raise ValueError(
        f'{run.workdir} holds a run of another config '
        f'({config_fields.describe(differ[:6])}). Use a new --workdir, or '
        f'delete that directory to retrain it.')


def total_steps(config, record: Mapping[str, Any]) -> int:
  """The run's last step, as `train.train_and_evaluate` computes it."""
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if (record.get('num_epochs') == config.num_epochs and
      record.get('batch_size') == config.batch_size and
      record.get('total_steps')):
    return int(record['total_steps'])
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return config_lib.total_steps(
      config, input_pipeline.create_data(config).steps_per_epoch)


def last_step(rows: Sequence[Mapping[str, Any]]) -> int:
  return int(rows[-1]['step']) if rows else 0


def is_finished(run: Run) -> bool:
  """True when `metrics.jsonl` holds the run's final step."""
  rows = read_rows(run.workdir)
  if not rows:
    return False
  return last_step(rows) >= total_steps(run.config, read_record(run.workdir))


class RunInterrupted(preemption.Stopped):
  """A run returned before its last step (SIGTERM): the sweep stops there."""


def execute(run: Run, train_fn: Callable | None = None) -> dict[str, Any]:
  """Trains `run` unless it is finished; returns its `run.json` record.

  An interrupted run resumes from its checkpoints (train_and_evaluate does
  that); the wall time of every start adds up in `run.json`.
  """
  os.makedirs(run.workdir, exist_ok=True)
  check_same_experiment(run)
  record = read_record(run.workdir)
  record.update(variant=run.variant, seed_index=run.seed_index,
                seed=int(run.config.seed))
  if is_finished(run):
    logging.info('%s: finished before; skipped.', run.workdir)
    return record
  if train_fn is None:
    from alexnet_jax import startup  # pylint: disable=g-import-not-at-top
    from alexnet_jax import train  # pylint: disable=g-import-not-at-top
    startup.set_xla_flags(  # In-process: before JAX's first step.
        run.config.execution.xla_cpu_conv_library)
    train_fn = train.train_and_evaluate
  steps = total_steps(run.config, record)
  record.update(total_steps=steps, num_epochs=run.config.num_epochs,
                batch_size=run.config.batch_size)
  record.setdefault('wall_time_s', 0.0)
  record.setdefault('sessions', 0)
  logging.info('%s: training to step %d.', run.workdir, steps)
  start = time.perf_counter()
  try:
    train_fn(run.config, run.workdir)
  finally:
    record['wall_time_s'] += time.perf_counter() - start
    record['sessions'] += 1
    record['last_step'] = last_step(read_rows(run.workdir))
    write_json(os.path.join(run.workdir, RUN_RECORD), record)
  if record['last_step'] < steps:
    raise RunInterrupted(
        f'{run.workdir} stopped at step {record["last_step"]} of {steps} '
        f'(SIGTERM?). Run the same command again to resume it.')
  return record


def execute_all(runs: Iterable[Run],
                train_fn: Callable | None = None) -> list[dict[str, Any]]:
  return [execute(run, train_fn) for run in runs]
