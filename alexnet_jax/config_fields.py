"""The role of every config field, declared once.

A field is part of the run's *identity* (the experiment: its architecture,
its data and their order, normalization, augmentation, optimizer, seed and
global batch) or *free* to change between the sessions of one run (how it
executes, what it logs, how long it runs, where files are). The resume guard
(alexnet_jax.workdir), the identity a checkpoint carries (alexnet_jax.train),
the sweeps' same-experiment check (experiments.common), the reader of older
records and the flattening for TensorBoard all read `FIELDS`.

Declaring a field is one line in `FIELDS`: `'section.name': IDENTITY,` or
`FREE,`; a field added after runs were recorded (so that older config.json
files lack it) names the value that reproduces what the code did before it,
`'section.name': identity(before=value),`. tests/test_identity.py fails for
a field of a config file or of `models.AlexNet` that is not declared.

Nothing here imports JAX: commands read records before they start it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

_NOTHING = object()


@dataclasses.dataclass(frozen=True)
class Role:
  identity: bool
  # The value a record without the field means (fields added later only).
  before: Any = _NOTHING


IDENTITY = Role(True)
FREE = Role(False)


def identity(before: Any) -> Role:
  """An identity field added after runs were recorded without it."""
  return Role(True, before)


FIELDS: dict[str, Role] = {
    # The data, their split, order and preprocessing.
    'dataset': IDENTITY,
    'dataset_dir': IDENTITY,
    'train_split': IDENTITY,
    'eval_split': IDENTITY,
    'validation_fraction': IDENTITY,
    'fake_data.num_train_examples': IDENTITY,
    'fake_data.eval_steps': IDENTITY,
    'image_size': IDENTITY,
    'resize_size': IDENTITY,
    'resize_mode': IDENTITY,
    'ten_crop': IDENTITY,
    'augment.random_crop': IDENTITY,
    'augment.flip': IDENTITY,
    'augment.lighting_std': IDENTITY,
    'augment.lighting_from_data': identity(before=False),
    'normalization.mean': IDENTITY,
    'normalization.std': IDENTITY,
    'normalization.mean_from_data': IDENTITY,
    'normalization.mean_image': identity(before=False),
    # The architecture (models.AlexNet's fields).
    'model.num_classes': IDENTITY,
    'model.variant': IDENTITY,
    'model.groups': IDENTITY,
    'model.lrn': IDENTITY,
    'model.lrn_across_towers': identity(before=True),
    'model.overlap_pool': IDENTITY,
    'model.dropout_rate': IDENTITY,
    'model.activation': IDENTITY,
    'model.width': IDENTITY,
    'model.dtype': IDENTITY,
    'model.initialization': IDENTITY,
    'model.lrn_depth': IDENTITY,
    'model.lrn_bias': IDENTITY,
    'model.lrn_alpha': IDENTITY,
    'model.lrn_beta': IDENTITY,
    'model.lrn_convention': identity(before='paper'),
    # The optimizer and its schedule (in epochs: free of the run's length).
    'optimizer.rule': IDENTITY,
    'optimizer.learning_rate': IDENTITY,
    'optimizer.momentum': IDENTITY,
    'optimizer.weight_decay': IDENTITY,
    'optimizer.decay_biases': identity(before=True),
    'optimizer.schedule': IDENTITY,
    'optimizer.warmup_epochs': IDENTITY,
    'optimizer.lr_drop_epochs': IDENTITY,
    'optimizer.lr_drop_factor': IDENTITY,
    'optimizer.plateau_patience': IDENTITY,
    'optimizer.plateau_min_delta': IDENTITY,
    'optimizer.plateau_max_drops': IDENTITY,
    # The randomness and the global batch.
    'seed': IDENTITY,
    'batch_size': IDENTITY,
    # 'hybrid' only: one update per step, or fc6-fc8 per worker (owt.py).
    'hybrid_fc_batch': identity(before='global'),
    'hybrid_conv_lr_scaling': identity(before='none'),
    # How it runs: the same function and parameters either way (a step split
    # another way over the devices: docs/parallelism.md).
    'parallelism': FREE,
    'execution.xla_cpu_conv_library': FREE,
    'cache': FREE,
    'bad_images': FREE,
    'eval_batch_size': FREE,
    'nonfinite': FREE,
    'max_consecutive_skips': FREE,
    # How long it runs, what it logs and keeps, where its files are.
    'num_epochs': FREE,
    'num_train_steps': FREE,
    'log_every_steps': FREE,
    'eval_every_steps': FREE,
    'checkpoint_every_steps': FREE,
    'keep_checkpoints': FREE,
    'keep_best_checkpoint': FREE,
    'final_ten_crop': FREE,  # A ten-crop evaluation also logged at the end.
    'profile_steps': FREE,
    'data_dir': FREE,
    'manual_dir': FREE,
    'checkpoint': FREE,  # configs/imagenet_eval.py: the weights evaluated.
    'allow_config_change': FREE,
    'start_over': FREE,
    # Older records only: the forms of the operations they chose (in
    # config.execution, earlier in config.model: models.model_from_config
    # leaves them out), XLA's option at the top level, and the shuffle
    # buffer the present input pipeline no longer has.
    'execution.conv1_impl': FREE,
    'execution.lrn_impl': FREE,
    'execution.pool_impl': FREE,
    'execution.conv_impl': FREE,
    'model.conv1_impl': FREE,
    'model.lrn_impl': FREE,
    'model.pool_impl': FREE,
    'model.conv_impl': FREE,
    'xla_cpu_conv_library': FREE,
    'shuffle_buffer': FREE,
}

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


def is_identity(field: str) -> bool:
  """Undeclared fields count as identity: a change of one is refused."""
  return FIELDS.get(field, IDENTITY).identity


def undeclared(flat: Mapping[str, Any]) -> list[str]:
  return sorted(k for k in flat if k not in FIELDS)


def with_older_values(flat: Mapping[str, Any]) -> dict[str, Any]:
  """A flat record with the fields added since it was written set to what
  the code that wrote it did."""
  flat = dict(flat)
  for field, role in FIELDS.items():
    if role.before is not _NOTHING:
      flat.setdefault(field, role.before)
  return flat


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
