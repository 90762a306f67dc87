"""Validation of a training config, before anything is built or compiled.

Every message names the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Any, Iterable

import jax

from alexnet_jax import models
from alexnet_jax import optim

NONFINITE = ('stop', 'skip')
PARALLELISM = ('data', 'towers', 'hybrid')
# 'hybrid': fc6-fc8 updated once on the whole batch, or per worker in turn.
HYBRID_FC_BATCHES = ('global', 'per_worker')
RESIZE_MODES = ('crop', 'squash')
BAD_IMAGE_POLICIES = ('skip', 'error')
IMAGE_FOLDER = 'image_folder'  # config.dataset of a folder of images.
# The keys of startup.XLA_CPU_CONV_LIBRARIES (startup imports this module).
XLA_CPU_CONV_LIBRARIES = ('eigen', 'xla_default')


class ConfigError(ValueError):
  """A config field holds a value the code cannot run with."""


def _fail(field: str, value: Any, allowed: str) -> None:
  raise ConfigError(f'config.{field}={value!r} is invalid: {allowed}.')


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_of(config, field: str, choices: Iterable) -> None:
  value = _get(config, field)
  choices = tuple(choices)
  if value not in choices:
    _fail(field, value, f'expected one of {choices}')


def _get(config, field: str):
  value = config
  for part in field.split('.'):
    if part not in value:
      raise ConfigError(f'config.{field} is missing.')
    value = value[part]
  return value


def _bool(config, field: str) -> None:
  if not isinstance(_get(config, field), bool):
    _fail(field, _get(config, field), 'expected True or False')


def _int_at_least(config, field: str, low: int) -> None:
  value = _get(config, field)
  if not _is_int(value) or value < low:
    _fail(field, value, f'expected an integer >= {low}')


def _number_in(config, field: str, low: float, high: float,
               low_open: bool = False, high_open: bool = False) -> None:
  value = _get(config, field)
  ok = _is_number(value)
  if ok:
    ok = (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
  if not ok:
    lb = '(' if low_open else '['
    hb = ')' if high_open else ']'
    _fail(field, value, f'expected a number in {lb}{low}, {high}{hb}')


def validate(config) -> None:
  """Raises ConfigError naming the first invalid field."""
  _check_model(config)
  _check_optimizer(config)
  _check_loop(config)
  _check_execution(config)
  _check_parallelism(config)
  size = _get(config, 'image_size')
  if not _is_int(size):
    _fail('image_size', size, 'expected an integer')
  error = models.image_size_error(size, config.model.variant,
                                  config.model.overlap_pool)
  if error:
    _fail('image_size', size, f'model.{error}')
  validate_data(config)
  for field in ('normalization.mean', 'normalization.std'):
    value = _get(config, field)
    if len(value) != 3 or not all(_is_number(v) for v in value):
      _fail(field, value, 'expected three numbers (R, G, B, 0-255 scale)')
  if any(v <= 0 for v in config.normalization.std):
    _fail('normalization.std', config.normalization.std, 'expected > 0')


def _check_model(config) -> None:
  """config.model: the architecture (models.AlexNet's fields)."""
  m = 'model.'
  _one_of(config, m + 'variant', models.VARIANTS)
  # None: the variant's default (models.VARIANT_DEFAULTS).
  _one_of(config, m + 'groups', (None, 1, 2))
  if _get(config, m + 'lrn') is not None:
    _bool(config, m + 'lrn')
  _bool(config, m + 'overlap_pool')
  if 'lrn_across_towers' in config.model:  # Optional: the model's default.
    _bool(config, m + 'lrn_across_towers')
  _number_in(config, m + 'dropout_rate', 0.0, 1.0, high_open=True)
  _one_of(config, m + 'activation', models.ACTIVATIONS)
  _number_in(config, m + 'width', 0.0, 64.0, low_open=True)
  _one_of(config, m + 'dtype', models.DTYPES)
  _int_at_least(config, m + 'num_classes', 2)
  # Optional (the model's default), or None (the variant's).
  optional = {'initialization': lambda f: _one_of(config, f, models.INITS),
              'lrn_depth': lambda f: _odd_channels(config, f),
              'lrn_bias': lambda f: _number_in(config, f, 0.0, 1e6),
              'lrn_alpha': lambda f: _number_in(config, f, 0.0, 1e6),
              'lrn_beta': lambda f: _number_in(config, f, 0.0, 1e6),
              'lrn_convention': lambda f: _one_of(
                  config, f, models.LRN_CONVENTIONS)}
  for field, check in optional.items():
    if config.model.get(field) is not None:
      check(m + field)


def _odd_channels(config, field: str) -> None:
  _int_at_least(config, field, 1)
  if _get(config, field) % 2 == 0:  # The window is centred on a channel.
    _fail(field, _get(config, field),
          'expected an odd number of channels (the paper: 5)')


def _check_optimizer(config) -> None:
  o = 'optimizer.'
  _one_of(config, o + 'rule', optim.RULES)
  _one_of(config, o + 'schedule', optim.SCHEDULES)
  _number_in(config, o + 'learning_rate', 0.0, 100.0, low_open=True)
  _number_in(config, o + 'momentum', 0.0, 1.0, high_open=True)
  _number_in(config, o + 'weight_decay', 0.0, 1.0)
  _bool(config, o + 'decay_biases')
  _number_in(config, o + 'warmup_epochs', 0.0, 1e6)
  _number_in(config, o + 'lr_drop_factor', 0.0, 1.0, low_open=True)
  for e in _get(config, o + 'lr_drop_epochs'):
    if not _is_number(e) or e <= 0:
      _fail(o + 'lr_drop_epochs', _get(config, o + 'lr_drop_epochs'),
            'expected positive epoch numbers')
  if config.optimizer.schedule == 'plateau' and config.optimizer.warmup_epochs:
    _fail(o + 'warmup_epochs', config.optimizer.warmup_epochs,
          "warmup is not combined with schedule='plateau'; use 0")
  _int_at_least(config, o + 'plateau_patience', 1)
  _int_at_least(config, o + 'plateau_max_drops', 0)
  _number_in(config, o + 'plateau_min_delta', 0.0, 1.0)


def _check_loop(config) -> None:
  """The dataset's name, batch sizes, steps, logging and checkpoints."""
  dataset = _get(config, 'dataset')
  if not isinstance(dataset, str) or not dataset:
    _fail('dataset', dataset, "expected a TFDS name, 'alexnet_shapes' or 'fake'")
  _int_at_least(config, 'batch_size', 1)
  _int_at_least(config, 'eval_batch_size', 1)
  devices = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    value = _get(config, field)
    if value % devices:
      _fail(field, value,
            f'the global batch must be divisible by the device count '
            f'({devices} = {jax.process_count()} processes x '
            f'{jax.local_device_count()} local devices)')
  _int_at_least(config, 'num_train_steps', -1)
  if config.num_train_steps <= 0:
    _number_in(config, 'num_epochs', 0.0, 1e6, low_open=True)
  _int_at_least(config, 'seed', 0)
  _int_at_least(config, 'log_every_steps', 1)
  _int_at_least(config, 'eval_every_steps', 0)
  _int_at_least(config, 'checkpoint_every_steps', 0)
  _int_at_least(config, 'keep_checkpoints', 1)
  for field in ('keep_best_checkpoint', 'final_ten_crop'):
    if field in config:  # Optional: off.
      _bool(config, field)
  _int_at_least(config, 'profile_steps', 0)
  _one_of(config, 'nonfinite', NONFINITE)
  _int_at_least(config, 'max_consecutive_skips', 1)
  _bool(config, 'allow_config_change')
  if 'start_over' in config:
    _bool(config, 'start_over')


def validate_data(config) -> None:
  """The input pipeline's fields (checked here only; the pipeline calls this
  too, for callers that build data without `validate`)."""
  if _get(config, 'dataset') == 'fake':
    return
  size = _get(config, 'image_size')
  resize = _get(config, 'resize_size')
  if not _is_int(resize) or not _is_int(size) or resize < size:
    _fail('resize_size', resize, f'expected an integer >= image_size ({size})')
  _one_of(config, 'resize_mode', RESIZE_MODES)
  _number_in(config, 'augment.lighting_std', 0.0, 10.0)
  # 0: a folder without split folders is all 'train'.
  _number_in(config, 'validation_fraction', 0.0, 1.0, high_open=True)
  _one_of(config, 'bad_images', BAD_IMAGE_POLICIES)
  for field in ('ten_crop', 'cache', 'augment.random_crop', 'augment.flip',
                'normalization.mean_from_data'):
    if not isinstance(_get(config, field), bool):
      _fail(field, _get(config, field), 'expected True or False')
  if 'lighting_from_data' in config.augment:  # Optional: ImageNet's.
    _bool(config, 'augment.lighting_from_data')
  if 'mean_image' in config.normalization:
    _bool(config, 'normalization.mean_image')
    if config.normalization.mean_image and config.normalization.mean_from_data:
      _fail('normalization.mean_image', True, 'the mean image replaces the '
            'per-channel mean: set normalization.mean_from_data=False')


def _check_execution(config) -> None:
  """config.execution: how the steps run (XLA:CPU's convolution library).
  The operations have one form each (alexnet_jax/ops.py); the fields older
  configs had for others are refused here, and ignored in records."""
  _one_of(config, 'execution.xla_cpu_conv_library', XLA_CPU_CONV_LIBRARIES)
  unknown = sorted(set(_get(config, 'execution')) - {'xla_cpu_conv_library'})
  if unknown:
    _fail('execution.' + unknown[0], config.execution[unknown[0]],
          "unknown field; config.execution takes 'xla_cpu_conv_library' "
          '(other forms of the operations: experiments/op_variants.py)')


def model_axis_size(mode: str, devices: int) -> int:
  """Devices that share one model replica: a pair in 'towers', all in
  'hybrid', one in 'data'."""
  return {'data': 1, 'towers': 2, 'hybrid': devices}[mode]


def _check_parallelism(config) -> None:
  """config.parallelism against the devices and the model it splits."""
  if 'parallelism' not in config:
    return  # Configs that predate the field: data parallelism.
  _one_of(config, 'parallelism', PARALLELISM)
  mode = config.parallelism
  if config.get('hybrid_fc_batch', 'global') != 'global':  # Optional.
    _one_of(config, 'hybrid_fc_batch', HYBRID_FC_BATCHES)
    if mode != 'hybrid':
      _fail('hybrid_fc_batch', config.hybrid_fc_batch,
            f"the per-worker updates split the batch over the devices of "
            f"parallelism='hybrid', not {mode!r}")
  if mode == 'data':
    return
  devices = jax.device_count()
  size = model_axis_size(mode, devices)
  if devices % size:
    _fail('parallelism', mode, f'one tower per device needs an even device '
          f'count, got {devices}')
  if (mode == 'towers' and jax.process_count() > 1 and
      jax.local_device_count() % 2):
    # Both towers of a group read the group's images: one process's share.
    _fail('parallelism', mode, f'each process must hold whole pairs of '
          f'towers: expected an even count of devices per process, got '
          f'{jax.local_device_count()} ({jax.process_count()} processes)')
  check_model_split(models.model_from_config(config), mode, size)


def check_model_split(model, mode: str, size: int) -> None:
  """`model` (a models.AlexNet) split by parallelism=`mode` over `size`
  devices per replica: 'towers' needs its two towers, each normalizing its
  own maps; both modes split fc6/fc7's neurons evenly."""
  if mode == 'towers' and model.groups != 2:
    _fail('model.groups', model.groups,
          "parallelism='towers' puts each of the two towers on its own "
          f'device: expected 2 (variant {model.variant!r})')
  if mode == 'towers' and model.lrn and model.lrn_across_towers:
    _fail('model.lrn_across_towers', True,
          "parallelism='towers' normalizes each tower's maps on its own "
          'device: expected False')
  fc = models.scaled_width(models.FC_FEATURES, model.width, 1)
  if fc % size:
    fits = [w for w in (0.05, 0.0625, 0.1, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
            if models.scaled_width(models.FC_FEATURES, w, 1) % size == 0]
    hint = (f' (e.g. width {" or ".join(map(str, fits[:3]))})' if fits else '')
    _fail('model.width', model.width,
          f'it gives fc6/fc7 {fc} neurons, which parallelism={mode!r} splits '
          f'over {size} devices: expected a width whose fc6/fc7 neurons are a '
          f'multiple of {size}{hint}')


# What the code does for an optional field a config leaves out (the model's
# fields: models.AlexNet's defaults), recorded so that config.json says it.
_WHEN_ABSENT = {'parallelism': 'data', 'keep_best_checkpoint': False,
                'normalization.mean_image': False, 'start_over': False,
                'final_ten_crop': False, 'hybrid_fc_batch': 'global',
                'augment.lighting_from_data': False}


def resolve(config):
  """A copy of a training config with every value the run will use: the
  variant's fields where None, and the optional fields it lacks."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for field, value in _WHEN_ABSENT.items():
      section, _, leaf = field.rpartition('.')
      node = config.get(section) if section else config
      if node is not None and leaf not in node:
        node[leaf] = value
    if 'model' not in config:
      return config
    model = config.model
    for f in dataclasses.fields(models.AlexNet):
      if f.name in models.MODEL_FIELDS and f.name not in model:
        model[f.name] = f.default  # groups and lrn: resolved below.
    if model.get('variant') in models.VARIANTS:  # The fields left None.
      given = {k: model.get(k) for k in models.VARIANT_DEFAULTS[model.variant]}
      for field, value in models.resolve_variant_defaults(
          model.variant, **given).items():
        model[field] = value
  return config


def total_steps(config, steps_per_epoch: int, step_offset: int = 0) -> int:
  """The run's last step: num_train_steps, else num_epochs of
  `steps_per_epoch` less `step_offset` (the steps a run resumed with another
  batch size counts more than its images: alexnet_jax.train)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(math.ceil(config.num_epochs * steps_per_epoch)) - step_offset


def validate_against_data(config, data) -> None:
  """Checks the fields that depend on the dataset."""
  if config.model.num_classes != data.num_classes:
    _fail('model.num_classes', config.model.num_classes,
          f'dataset {config.dataset!r} has {data.num_classes} classes')


def check_workdir(workdir: str) -> None:
  """Creates `workdir`, failing at once if it cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
      pass
  except OSError as e:
    raise ConfigError(f'workdir {workdir!r} is not writable: {e}') from None
