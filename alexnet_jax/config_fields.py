"""The role of every config field, declared once: part of the run's identity
(the experiment) or free to change between the resumes of one run. The
resume guard, the identity a checkpoint carries, the sweeps' same-experiment
check, the reader of older records and TensorBoard's flattening read it;
tests/test_identity.py fails for a config field no list below declares.
Nothing here imports JAX: commands read records before they start it."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

# The experiment: its data and their order, preprocessing, architecture
# (models.AlexNet's fields), optimizer and schedule (in epochs), seed, batch.
IDENTITY = (
    'dataset', 'dataset_dir', 'train_split', 'eval_split',
    'validation_fraction', 'fake_data.num_train_examples',
    'fake_data.eval_steps', 'image_size', 'resize_size', 'resize_mode',
    'ten_crop', 'augment.random_crop', 'augment.flip', 'augment.lighting_std',
    'normalization.mean', 'normalization.std', 'normalization.mean_from_data',
    'model.num_classes', 'model.variant', 'model.groups', 'model.lrn',
    'model.overlap_pool', 'model.dropout_rate', 'model.activation',
    'model.width', 'model.dtype', 'model.initialization', 'model.lrn_depth',
    'model.lrn_bias', 'model.lrn_alpha', 'model.lrn_beta', 'optimizer.rule',
    'optimizer.learning_rate', 'optimizer.momentum', 'optimizer.weight_decay',
    'optimizer.schedule', 'optimizer.warmup_epochs', 'optimizer.lr_drop_epochs',
    'optimizer.lr_drop_factor', 'optimizer.plateau_patience',
    'optimizer.plateau_min_delta', 'optimizer.plateau_max_drops', 'seed',
    'batch_size')

# Identity fields added after runs were recorded without them: the value that
# reproduces what the code did before (the hybrid's: docs/parallelism.md).
ADDED = {
    'augment.lighting_from_data': False,
    'normalization.mean_image': False,
    'model.lrn_across_towers': True,
    'model.lrn_convention': 'paper',
    'optimizer.decay_biases': True,
    'hybrid_fc_batch': 'global',
    'hybrid_conv_lr_scaling': 'none',
}

# How it runs (the same function either way: docs/parallelism.md), how long,
# what it logs and keeps, where its files are; then older records' fields
# (forms of the operations, XLA's option at the top, the shuffle buffer).
FREE = (
    'parallelism', 'execution.xla_cpu_conv_library', 'cache', 'bad_images',
    'eval_batch_size', 'nonfinite', 'max_consecutive_skips', 'num_epochs',
    'num_train_steps', 'log_every_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'keep_best_checkpoint',
    'final_ten_crop', 'profile_steps', 'data_dir', 'manual_dir', 'checkpoint',
    'allow_config_change', 'start_over',
    'execution.conv1_impl', 'execution.lrn_impl', 'execution.pool_impl',
    'execution.conv_impl', 'model.conv1_impl', 'model.lrn_impl',
    'model.pool_impl', 'model.conv_impl', 'xla_cpu_conv_library',
    'shuffle_buffer')

SCHEDULE = ('num_train_steps', 'num_epochs')  # They set the run's length.


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{dotted field: value} of a config or record; tuples as lists (JSON's)."""
  flat = {}
  for key, value in tree.items():
    if hasattr(value, 'items'):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = list(value) if isinstance(value, tuple) else value
  return flat


def as_record(config) -> dict[str, Any]:
  """A ConfigDict as the JSON config.json holds."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def set_absent(record, field: str, value: Any) -> None:
  """Sets dotted `field` of a dict or ConfigDict where it is absent."""
  *parents, leaf = field.split('.')
  for part in parents:
    record = record.get(part)
    if not hasattr(record, 'get'):
      return  # A record without the section: nothing to complete.
  if leaf not in record:
    record[leaf] = value


def is_identity(field: str) -> bool:
  """Undeclared fields count as identity: a change of one is refused."""
  return field not in FREE


def undeclared(flat: Mapping[str, Any]) -> list[str]:
  return sorted(k for k in flat if k not in IDENTITY + FREE + tuple(ADDED))


def with_older_values(flat: Mapping[str, Any]) -> dict[str, Any]:
  """A flat record, fields added since set as the code before them did."""
  return {**ADDED, **flat}


def identity_of(flat: Mapping[str, Any]) -> dict[str, Any]:
  """The identity fields of a flat config."""
  return {k: v for k, v in flat.items() if is_identity(k)}


def digest(fields: Mapping[str, Any], class_names) -> str:
  """A short digest of the identity fields and the class list."""
  text = json.dumps({'fields': dict(fields), 'classes': list(class_names)},
                    sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes(old: Mapping[str, Any], new: Mapping[str, Any]
            ) -> list[tuple[str, Any, Any]]:
  """(field, old, new) for each field of two flat records that differs,
  other than allow_config_change and start_over (the choices to go on)."""
  absent = '<absent>'
  return [(k, old.get(k, absent), new.get(k, absent))
          for k in sorted(set(old) | set(new))
          if old.get(k, absent) != new.get(k, absent)
          and k not in ('allow_config_change', 'start_over')]


def describe(found: list[tuple[str, Any, Any]]) -> str:
  return ', '.join(f'{k} {a!r} -> {b!r}' for k, a, b in found)
