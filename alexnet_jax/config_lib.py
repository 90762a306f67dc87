"""The checks of a training config, before anything is built or compiled;
each message names the field, the value and what is allowed. The model's and
optimizer's modules check their sections with `Fields`. This module imports
none of the others, so the input pipeline can use it without the model."""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Iterable

import jax

NONFINITE = ('stop', 'skip')
PARALLELISM = ('data', 'towers', 'hybrid')
# 'hybrid': fc6-fc8 updated once on the whole batch, or per worker in turn.
HYBRID_FC_BATCHES = ('global', 'per_worker')
# 'per_worker' only: the convolutional layers' rate times 1, K or sqrt(K).
HYBRID_CONV_LR_SCALINGS = ('none', 'linear', 'sqrt')
RESIZE_MODES = ('crop', 'squash')
BAD_IMAGE_POLICIES = ('skip', 'error')
IMAGE_FOLDER = 'image_folder'  # config.dataset of a folder of images.
# The keys of startup.XLA_CPU_CONV_LIBRARIES (startup imports this module).
XLA_CPU_CONV_LIBRARIES = ('eigen', 'xla_default')


class ConfigError(ValueError):
  """A config field holds a value the code cannot run with."""


def is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


class Fields:
  """Checks of the fields of `node`, the config's `section` ('' for all);
  errors name the field from the top (config.a.b)."""

  def __init__(self, node, section: str = ''):
    self.node = node
    self.prefix = section + '.' if section else ''

  def fail(self, field: str, value: Any, allowed: str) -> None:
    raise ConfigError(
        f'config.{self.prefix}{field}={value!r} is invalid: {allowed}.')

  def get(self, field: str):
    value = self.node
    for part in field.split('.'):
      if part not in value:
        raise ConfigError(f'config.{self.prefix}{field} is missing.')
      value = value[part]
    return value

  def one_of(self, field: str, choices: Iterable) -> None:
    choices = tuple(choices)
    if self.get(field) not in choices:
      self.fail(field, self.get(field), f'expected one of {choices}')

  def boolean(self, field: str) -> None:
    if not isinstance(self.get(field), bool):
      self.fail(field, self.get(field), 'expected True or False')

  def int_at_least(self, field: str, low: int) -> None:
    value = self.get(field)
    if not is_int(value) or value < low:
      self.fail(field, value, f'expected an integer >= {low}')

  def number_in(self, field: str, low: float, high: float,
                low_open: bool = False, high_open: bool = False) -> None:
    value = self.get(field)
    ok = is_number(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
      lb = '(' if low_open else '['
      hb = ')' if high_open else ']'
      self.fail(field, value, f'expected a number in {lb}{low}, {high}{hb}')


def validate(config) -> None:
  """Raises ConfigError naming the first invalid field (but the model's and
  the optimizer's: alexnet_jax.train.validate)."""
  _check_loop(config)
  _check_execution(config)
  _check_parallelism(config)
  c = Fields(config)
  if not is_int(c.get('image_size')):
    c.fail('image_size', c.get('image_size'), 'expected an integer')
  validate_data(config)
  for field in ('normalization.mean', 'normalization.std'):
    value = c.get(field)
    if len(value) != 3 or not all(is_number(v) for v in value):
      c.fail(field, value, 'expected three numbers (R, G, B, 0-255 scale)')
  if any(v <= 0 for v in config.normalization.std):
    c.fail('normalization.std', config.normalization.std, 'expected > 0')


def _check_loop(config) -> None:
  """The dataset's name, batch sizes, steps, logging and checkpoints."""
  c = Fields(config)
  dataset = c.get('dataset')
  if not isinstance(dataset, str) or not dataset:
    c.fail('dataset', dataset,
           "expected a TFDS name, 'alexnet_shapes' or 'fake'")
  devices = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    c.int_at_least(field, 1)
    if c.get(field) % devices:
      c.fail(field, c.get(field),
             f'the global batch must be divisible by the device count '
             f'({devices} = {jax.process_count()} processes x '
             f'{jax.local_device_count()} local devices)')
  c.int_at_least('num_train_steps', -1)
  if config.num_train_steps <= 0:
    c.number_in('num_epochs', 0.0, 1e6, low_open=True)
  for field in ('seed', 'eval_every_steps', 'checkpoint_every_steps',
                'profile_steps'):
    c.int_at_least(field, 0)
  for field in ('log_every_steps', 'keep_checkpoints', 'max_consecutive_skips'):
    c.int_at_least(field, 1)
  for field in ('keep_best_checkpoint', 'final_ten_crop', 'start_over'):
    if field in config:  # Optional: off.
      c.boolean(field)
  c.one_of('nonfinite', NONFINITE)
  c.boolean('allow_config_change')


def validate_data(config) -> None:
  """The input pipeline's fields (the pipeline calls this too)."""
  c = Fields(config)
  if c.get('dataset') == 'fake':
    return
  size, resize = c.get('image_size'), c.get('resize_size')
  if not is_int(resize) or not is_int(size) or resize < size:
    c.fail('resize_size', resize, f'expected an integer >= image_size ({size})')
  c.one_of('resize_mode', RESIZE_MODES)
  c.number_in('augment.lighting_std', 0.0, 10.0)
  # 0: a folder without split folders is all 'train'.
  c.number_in('validation_fraction', 0.0, 1.0, high_open=True)
  c.one_of('bad_images', BAD_IMAGE_POLICIES)
  for field in ('ten_crop', 'cache', 'augment.random_crop', 'augment.flip',
                'normalization.mean_from_data'):
    c.boolean(field)
  if 'lighting_from_data' in config.augment:  # Optional: ImageNet's.
    c.boolean('augment.lighting_from_data')
  if 'mean_image' in config.normalization:
    c.boolean('normalization.mean_image')
    if config.normalization.mean_image and config.normalization.mean_from_data:
      c.fail('normalization.mean_image', True, 'the mean image replaces the '
             'per-channel mean: set normalization.mean_from_data=False')


def _check_execution(config) -> None:
  """config.execution; the fields older configs had for other forms of the
  operations are refused here (and ignored in records)."""
  c = Fields(config)
  c.one_of('execution.xla_cpu_conv_library', XLA_CPU_CONV_LIBRARIES)
  unknown = sorted(set(c.get('execution')) - {'xla_cpu_conv_library'})
  if unknown:
    c.fail('execution.' + unknown[0], config.execution[unknown[0]],
           "unknown field; config.execution takes 'xla_cpu_conv_library' "
           '(other forms of the operations: experiments/op_variants.py)')


def model_axis_size(mode: str, devices: int) -> int:
  """Devices that share one model replica."""
  return {'data': 1, 'towers': 2, 'hybrid': devices}[mode]


def _check_parallelism(config) -> None:
  """config.parallelism against the devices (the model: parallelism's)."""
  if 'parallelism' not in config:
    return  # Configs that predate the field: data parallelism.
  c = Fields(config)
  c.one_of('parallelism', PARALLELISM)
  mode = config.parallelism
  if config.get('hybrid_fc_batch', 'global') != 'global':  # Optional.
    c.one_of('hybrid_fc_batch', HYBRID_FC_BATCHES)
    if mode != 'hybrid':
      c.fail('hybrid_fc_batch', config.hybrid_fc_batch,
             f"the per-worker updates split the batch over the devices of "
             f"parallelism='hybrid', not {mode!r}")
  if config.get('hybrid_conv_lr_scaling', 'none') != 'none':  # Optional.
    c.one_of('hybrid_conv_lr_scaling', HYBRID_CONV_LR_SCALINGS)
    if config.get('hybrid_fc_batch', 'global') != 'per_worker':
      c.fail('hybrid_conv_lr_scaling', config.hybrid_conv_lr_scaling,
             "a rate of their own for the convolutional layers needs "
             "hybrid_fc_batch='per_worker' (with 'global' every layer sees "
             "the same batch: set optimizer.learning_rate)")
  devices = jax.device_count()
  if devices % model_axis_size(mode, devices):
    c.fail('parallelism', mode, f'one tower per device needs an even device '
           f'count, got {devices}')
  if (mode == 'towers' and jax.process_count() > 1 and
      jax.local_device_count() % 2):
    # Both towers of a group read the group's images: one process's share.
    c.fail('parallelism', mode, f'each process must hold whole pairs of '
           f'towers: expected an even count of devices per process, got '
           f'{jax.local_device_count()} ({jax.process_count()} processes)')


def total_steps(config, steps_per_epoch: int, step_offset: int = 0) -> int:
  """num_train_steps, else num_epochs less `step_offset` (train's)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(math.ceil(config.num_epochs * steps_per_epoch)) - step_offset


def validate_against_data(config, data) -> None:
  if config.model.num_classes != data.num_classes:
    Fields(config).fail('model.num_classes', config.model.num_classes,
                        f'dataset {config.dataset!r} has {data.num_classes} '
                        f'classes')


def check_workdir(workdir: str) -> None:
  """Creates `workdir`, failing at once if it cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
      pass
  except OSError as e:
    raise ConfigError(f'workdir {workdir!r} is not writable: {e}') from None
