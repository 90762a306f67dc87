"""Momentum SGD with weight decay, and the learning-rate schedules.

The paper's update (section 5) keeps the learning rate inside the velocity:

    v <- momentum * v - weight_decay * lr * w - lr * grad
    w <- w + v

which is `chain(add_decayed_weights(wd), scale_by_learning_rate(lr), trace(m))`.
`optax.sgd` scales after the trace instead (`rule='sgd'`); the two differ only
when the learning rate changes.

The learning rate is an injected hyperparameter (`optax.inject_hyperparams`),
so it lives in the optimizer state: it is checkpointed with it, read for
logging, and set from the host by the paper's plateau rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

RULES = ('paper', 'sgd')
SCHEDULES = ('constant', 'step', 'cosine', 'plateau')


def _is_not_bias(params):
  """True for every parameter but the biases (Flax names them 'bias')."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) != 'bias', params)


def _momentum_sgd(learning_rate, momentum: float, weight_decay: float,
                  rule: str, decay_biases: bool = True
                  ) -> optax.GradientTransformation:
  # The paper decays every weight; Caffe's AlexNet leaves biases undecayed.
  decay = optax.add_decayed_weights(
      weight_decay, mask=None if decay_biases else _is_not_bias)
  if rule == 'paper':
    return optax.chain(decay, optax.scale_by_learning_rate(learning_rate),
                       optax.trace(decay=momentum))
  if rule == 'sgd':
    return optax.chain(decay, optax.trace(decay=momentum),
                       optax.scale_by_learning_rate(learning_rate))
  raise ValueError(f'optimizer.rule={rule!r}; expected one of {RULES}.')


def create_schedule(opt_config, steps_per_epoch: int,
                    total_steps: int) -> optax.Schedule:
  """A step -> learning-rate function. 'plateau' starts constant."""
  lr = opt_config.learning_rate
  name = opt_config.schedule
  warmup = int(round(opt_config.warmup_epochs * steps_per_epoch))
  if name == 'cosine' and not warmup:
    return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
  if name == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else lr, peak_value=lr,
        warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
  if name in ('constant', 'plateau'):
    schedule = optax.constant_schedule(lr)
  elif name == 'step':
    boundaries = {int(round(e * steps_per_epoch)): opt_config.lr_drop_factor
                  for e in opt_config.lr_drop_epochs}
    schedule = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    raise ValueError(
        f'optimizer.schedule={name!r}; expected one of {SCHEDULES}.')
  if not warmup:
    return schedule
  # Linear warmup from 0, multiplying the schedule (its steps stay absolute).
  return lambda step: schedule(step) * jnp.minimum(1.0, step / warmup)


def create_optimizer(opt_config, steps_per_epoch: int, total_steps: int,
                     step_offset: int = 0) -> optax.GradientTransformation:
  """`step_offset`: added to the step the schedule reads (a run resumed with
  another batch size: alexnet_jax.train), `total_steps` counting it."""
  if (opt_config.schedule in ('constant', 'plateau')
      and not opt_config.warmup_epochs):
    # A plain number is stored in the state and kept until set_learning_rate.
    schedule = float(opt_config.learning_rate)
  else:
    schedule = create_schedule(opt_config, steps_per_epoch,
                               total_steps + step_offset)
    if step_offset:
      base = schedule
      schedule = lambda step: base(step + step_offset)
  return optax.inject_hyperparams(
      _momentum_sgd, static_args=('rule', 'decay_biases'))(
          learning_rate=schedule, momentum=opt_config.momentum,
          weight_decay=opt_config.weight_decay, rule=opt_config.rule,
          # Configs without the field decay biases, as the paper does.
          decay_biases=bool(getattr(opt_config, 'decay_biases', True)))


def at_step(opt_state, step):
  """`opt_state` with the schedules' step counters set to `step`, so the next
  update's learning rate is schedule(step) whatever updates were skipped.

  `optax.inject_hyperparams` keeps one counter per scheduled hyperparameter
  (a `WrappedScheduleState`) besides its own `count`; all are set.
  """
  step = jnp.asarray(step, jnp.int32)
  schedules = {k: s._replace(count=step)
               for k, s in opt_state.hyperparams_states.items()}
  return opt_state._replace(count=step, hyperparams_states=schedules)


def current_learning_rate(opt_state) -> jnp.ndarray:
  """The learning rate the last update used."""
  return opt_state.hyperparams['learning_rate']


def set_learning_rate(opt_state, value: float):
  """Returns `opt_state` with the injected learning rate replaced.

  Only meaningful with a constant schedule ('plateau'): a schedule overwrites
  the value at the next update.
  """
  hyperparams = dict(opt_state.hyperparams)
  old = hyperparams['learning_rate']
  hyperparams['learning_rate'] = jnp.asarray(value, dtype=jnp.asarray(old).dtype)
  return opt_state._replace(hyperparams=hyperparams)


@dataclasses.dataclass
class Plateau:
  """The paper's rule: divide the learning rate by 10 when validation error
  stops improving, at most `max_drops` times.

  PyTorch's ReduceLROnPlateau (mode 'min', threshold_mode 'abs', threshold
  `min_delta`, cooldown 0): an evaluation improves only if its error is below
  best - min_delta, and only then does `best` move, so steady gains smaller
  than min_delta add up to an improvement rather than resetting the bar. The
  rate drops after `patience` evaluations in a row without improvement
  (PyTorch's patience + 1). Its state is a dict of NumPy scalars,
  checkpointed with the training state.
  """
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
  def initial_state() -> dict[str, Any]:
    return {'best_error': np.array(np.inf, np.float32),
            'bad_evals': np.array(0, np.int32),
            'drops': np.array(0, np.int32)}

  def update(self, state: dict[str, Any], error: float,
             learning_rate: float) -> tuple[dict[str, Any], float]:
    """Given a new validation error, returns (new state, learning rate)."""
    error = float(np.float32(error))  # The state stores float32 (as JAX does).
    best = float(state['best_error'])
    bad = int(state['bad_evals'])
    drops = int(state['drops'])
    if error < best - self.min_delta:
      best, bad = error, 0
    else:
      bad += 1
    if bad >= self.patience and drops < self.max_drops:
      learning_rate *= self.factor
      drops += 1
      bad = 0
    new_state = {'best_error': np.array(best, np.float32),
                 'bad_evals': np.array(bad, np.int32),
                 'drops': np.array(drops, np.int32)}
    return new_state, learning_rate
