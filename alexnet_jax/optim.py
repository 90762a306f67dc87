"""Momentum SGD with weight decay (docs/paper.md), the learning-rate schedules,
the plateau rule and the check of config.optimizer. The step sets the rate, an
injected hyperparameter, before each update (`set_learning_rate`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alexnet_jax import config_lib

RULES = ('paper', 'sgd')
SCHEDULES = ('constant', 'step', 'cosine', 'plateau')


def momentum_sgd(learning_rate, momentum: float, weight_decay: float,
                 rule: str, decay_biases: bool = True
                 ) -> optax.GradientTransformation:
  """'paper': the rate inside the velocity; 'sgd': outside (optax.sgd)."""
  # The paper decays every weight; Caffe's AlexNet leaves biases undecayed.
  not_bias = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) != 'bias', params)
  decay = optax.add_decayed_weights(
      weight_decay, mask=None if decay_biases else not_bias)
  if rule == 'paper':
    return optax.chain(decay, optax.scale_by_learning_rate(learning_rate),
                       optax.trace(decay=momentum))
  if rule == 'sgd':
    return optax.chain(decay, optax.trace(decay=momentum),
                       optax.scale_by_learning_rate(learning_rate))
  raise ValueError(f'optimizer.rule={rule!r}; expected one of {RULES}.')


def create_optimizer(opt_config) -> optax.GradientTransformation:
  """config.optimizer's rule (or a dict of its fields)."""
  return optax.inject_hyperparams(
      momentum_sgd, static_args=('rule', 'decay_biases'))(
          learning_rate=float(opt_config['learning_rate']),
          momentum=opt_config['momentum'],
          weight_decay=opt_config['weight_decay'], rule=opt_config['rule'],
          # Configs without the field decay biases, as the paper does.
          decay_biases=bool(opt_config.get('decay_biases', True)))


def set_learning_rate(opt_state, value):
  """`opt_state` with the learning rate of the next update set to `value`."""
  old = opt_state.hyperparams['learning_rate']
  return opt_state._replace(hyperparams={
      **opt_state.hyperparams,
      'learning_rate': jnp.asarray(value, jnp.asarray(old).dtype)})


def create_schedule(opt_config, steps_per_epoch: int, total_steps: int,
                    step_offset: int = 0) -> optax.Schedule:
  """Global step -> learning rate ('plateau': constant, scaled by the rule);
  `step_offset` (a resume with another batch size) is added to the step."""
  lr = opt_config.learning_rate
  name = opt_config.schedule
  warmup = int(round(opt_config.warmup_epochs * steps_per_epoch))
  total = total_steps + step_offset
  if name == 'cosine':  # Its warmup (none where warmup_steps=0) built in.
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(total, warmup + 1))
    warmup = 0
  elif name in ('constant', 'plateau'):
    schedule = optax.constant_schedule(lr)
  elif name == 'step':
    boundaries = {int(round(e * steps_per_epoch)): opt_config.lr_drop_factor
                  for e in opt_config.lr_drop_epochs}
    schedule = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    raise ValueError(
        f'optimizer.schedule={name!r}; expected one of {SCHEDULES}.')
  if warmup:  # Linear from 0, multiplying the schedule (its steps absolute).
    base = schedule
    schedule = lambda step: base(step) * jnp.minimum(1.0, step / warmup)
  return (lambda step: schedule(step + step_offset)) if step_offset else (
      schedule)


@dataclasses.dataclass
class Plateau:
  """The paper's rule, the learning rate times `factor` when validation error
  stops improving (at most `max_drops` times), as PyTorch's ReduceLROnPlateau
  (mode 'min', threshold `min_delta` 'abs'): only an error below best -
  min_delta moves `best`, so small gains add up; the drop comes after
  `patience` evaluations without one (PyTorch's patience + 1)."""
  patience: int
  factor: float
  min_delta: float
  max_drops: int

  @classmethod
  def from_config(cls, opt_config) -> 'Plateau':
    return cls(patience=opt_config.plateau_patience,
               factor=opt_config.lr_drop_factor,
               min_delta=opt_config.plateau_min_delta,
               max_drops=opt_config.plateau_max_drops)

  @staticmethod
  def initial_state(best=np.inf, bad=0, drops=0, scale=1.0) -> dict[str, Any]:
    return {'best_error': np.array(best, np.float32),
            'bad_evals': np.array(bad, np.int32),
            'drops': np.array(drops, np.int32),
            'lr_scale': np.array(scale, np.float32)}

  def update(self, state: dict[str, Any], error: float) -> dict[str, Any]:
    """The state after an evaluation of validation error `error`."""
    error = float(np.float32(error))  # The state stores float32 (as JAX does).
    best, bad = float(state['best_error']), int(state['bad_evals'])
    drops, scale = int(state['drops']), float(state['lr_scale'])
    # Only an improvement by more than min_delta moves `best`.
    best, bad = ((error, 0) if error < best - self.min_delta else
                 (best, bad + 1))
    if bad >= self.patience and drops < self.max_drops:
      scale, drops, bad = scale * self.factor, drops + 1, 0
    return self.initial_state(best, bad, drops, scale)


def check_config(opt_config) -> None:
  """config.optimizer's fields (ConfigError names the first bad one)."""
  c = config_lib.Fields(opt_config, 'optimizer')
  c.one_of('rule', RULES)
  c.one_of('schedule', SCHEDULES)
  c.number_in('learning_rate', 0.0, 100.0, low_open=True)
  c.number_in('momentum', 0.0, 1.0, high_open=True)
  c.number_in('weight_decay', 0.0, 1.0)
  c.boolean('decay_biases')
  c.number_in('warmup_epochs', 0.0, 1e6)
  c.number_in('lr_drop_factor', 0.0, 1.0, low_open=True)
  epochs = c.get('lr_drop_epochs')
  if not all(config_lib.is_number(e) and e > 0 for e in epochs):
    c.fail('lr_drop_epochs', epochs, 'expected positive epoch numbers')
  if opt_config.schedule == 'plateau' and opt_config.warmup_epochs:
    c.fail('warmup_epochs', opt_config.warmup_epochs,
           "warmup is not combined with schedule='plateau'; use 0")
  c.int_at_least('plateau_patience', 1)
  c.int_at_least('plateau_max_drops', 0)
  c.number_in('plateau_min_delta', 0.0, 1.0)
