"""The training state and the pmapped ('data') train and eval steps; dropout
keys from (seed, step, device), so a resumed run draws the same. Every mode's
step ends in `apply_gradients`. No TensorFlow: predict and evaluate import it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator

from flax import struct
import jax
import jax.numpy as jnp
from jax import lax
import optax

from alexnet_jax import optim


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  plateau: dict[str, Any]  # The plateau rule's state (optim.Plateau).
  # Loss and top-1 sums since the last log: a resumed run logs the same means.
  train_window: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Normalization:
  """(x - mean) / std per channel of uint8 images, on the 0-255 scale."""
  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  @classmethod
  def from_config(cls, normalization) -> 'Normalization':
    """No mean where the input pipeline subtracts the mean image."""
    return cls(mean=(0.0, 0.0, 0.0) if normalization.get('mean_image') else
               tuple(normalization.mean), std=tuple(normalization.std))

  def __call__(self, images: jax.Array) -> jax.Array:
    return ((images.astype(jnp.float32) - jnp.asarray(self.mean, jnp.float32))
            / jnp.asarray(self.std, jnp.float32))


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """What the training step reads of the run, as plain values."""
  seed: int  # Dropout keys: (seed, step, device).
  normalization: Normalization
  learning_rate: Callable[[jax.Array], jax.Array]  # Of the global step.
  log_every_steps: int = 1
  total_steps: int | None = None  # The last step logs its norms too.


def create_train_state(model, tx: optax.GradientTransformation,
                       image_size: int, seed: int) -> TrainState:
  params = jax.jit(lambda key: model.init(
      key, jnp.zeros((1, image_size, image_size, 3), jnp.float32),
      train=False)['params'])(jax.random.key(seed))
  window = {k: jnp.zeros((), jnp.float32) for k in ('loss', 'top1', 'count')}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    plateau=optim.Plateau.initial_state(),
                    train_window=window)


def training_images(batch: dict[str, jax.Array],
                    normalization: Normalization) -> jax.Array:
  """A batch's images flipped and lit as the pipeline drew ('flip',
  'light'), normalized; the lighting unrounded and unclipped, as the paper."""
  images = batch['image']
  if 'flip' in batch:
    images = jnp.where(batch['flip'][:, None, None, None],
                       images[:, :, ::-1], images)
  images = images.astype(jnp.float32)
  if 'light' in batch:
    images = images + batch['light'][:, None, None, :]
  return normalization(images)


def with_learning_rate(state: TrainState,
                       options: TrainOptions) -> TrainState:
  """`state` with the schedule's rate at its global step times the plateau's."""
  lr = options.learning_rate(state.step) * state.plateau['lr_scale']
  return state.replace(opt_state=optim.set_learning_rate(state.opt_state, lr))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits. Ties count against
  the model; a row with a NaN or infinite logit is a miss."""
  k = min(k, logits.shape[-1])
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  rank = jnp.sum(logits >= label_logit, axis=-1) - 1  # Minus the label itself.
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return ((rank < k) & finite).astype(jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model,
               tx: optax.GradientTransformation, options: TrainOptions
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on this device's shard; gradients averaged over 'batch'."""
  images = training_images(batch, options.normalization)
  labels = batch['label']
  dropout_key = jax.random.fold_in(jax.random.fold_in(
      jax.random.key(options.seed), state.step), lax.axis_index('batch'))

  def loss_fn(params):
    logits = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': dropout_key})
    return jnp.mean(cross_entropy(logits, labels)), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  grads = lax.pmean(grads, axis_name='batch')
  step_metrics = lax.pmean(
      {'loss': loss, 'top1': jnp.mean(topk_correct(logits, labels, 1))},
      axis_name='batch')
  return apply_gradients(with_learning_rate(state, options), grads,
                         step_metrics, tx=tx, options=options)


def apply_gradients(state: TrainState, grads, step_metrics: dict[str, Any], *,
                    tx: optax.GradientTransformation, options: TrainOptions,
                    updated=None) -> tuple[TrainState, dict[str, jax.Array]]:
  """The update from the batch's mean gradients, loss and top-1, at the
  state's learning rate. `updated`: (params, optimizer state) owt.py has
  computed already. `param_norm` and `update_norm` are NaN on unlogged steps."""
  grad_norm = optax.tree.norm(grads)
  # A non-finite loss or gradient leaves the state as it was (the loop then
  # stops or skips, by config.nonfinite); the step counter still advances.
  finite = jnp.isfinite(step_metrics['loss']) & jnp.isfinite(grad_norm)
  logged = ((state.step + 1) % options.log_every_steps == 0) | (
      state.step + 1 == (options.total_steps or 0))
  norm_if_logged = lambda tree: lax.cond(
      logged, optax.tree.norm, lambda _: jnp.full((), jnp.nan), tree)

  # lax.cond: a jnp.where over both states would copy fc6's arrays each step.
  def apply_update(grads, params, opt_state):
    if updated is not None:
      new_params, new_opt_state = updated
      return new_params, new_opt_state, norm_if_logged(
          jax.tree_util.tree_map(jnp.subtract, new_params, params))
    updates, new_opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_opt_state,
            norm_if_logged(updates))

  keep = lambda _, params, opt_state: (params, opt_state,
                                      jnp.zeros((), jnp.float32))
  new_params, new_opt_state, update_norm = lax.cond(
      finite, apply_update, keep, grads, state.params, state.opt_state)
  # The window's sums plus this step's if finite; a new window starts after
  # each multiple of log_every_steps.
  new_window = (state.step % options.log_every_steps) == 0
  window = jax.tree_util.tree_map(
      lambda old, new: jnp.where(new_window, 0.0, old)
      + jnp.where(finite, new, 0.0), state.train_window,
      {**step_metrics, 'count': jnp.ones((), jnp.float32)})
  count = jnp.maximum(window['count'], 1.0)
  metrics = {
      'train_loss': window['loss'] / count,
      'train_top1': window['top1'] / count,
      'step_loss': step_metrics['loss'],
      'grad_norm': grad_norm,
      'param_norm': norm_if_logged(new_params),
      'update_norm': update_norm,
      'learning_rate': state.opt_state.hyperparams['learning_rate'],
      'finite': finite.astype(jnp.float32),
      'window_count': window['count'],  # Finite steps in the window.
  }
  new_state = state.replace(step=state.step + 1, params=new_params,
                            opt_state=new_opt_state, train_window=window)
  return new_state, metrics


def eval_sums(apply: Callable[[jax.Array], jax.Array], batch: dict[str, Any],
              normalization: Normalization) -> dict[str, jax.Array]:
  """Masked sums of loss and top-1/top-5 hits of `apply`'s logits of `batch`."""
  images = normalization(batch['image'])
  labels, mask = batch['label'], batch['mask']
  if images.ndim == 5:  # [B, crops, H, W, 3]: average the softmax over crops.
    b, crops = images.shape[:2]
    logits = apply(images.reshape((b * crops,) + images.shape[2:]))
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    # The log of the mean softmax; cross-entropy and top-k read it as logits.
    logits = (jax.nn.logsumexp(log_probs.reshape(b, crops, -1), axis=1)
              - jnp.log(crops))
  else:
    logits = apply(images)
  return {'loss': jnp.sum(cross_entropy(logits, labels) * mask),
          'top1': jnp.sum(topk_correct(logits, labels, 1) * mask),
          'top5': jnp.sum(topk_correct(logits, labels, 5) * mask),
          'count': jnp.sum(mask)}


def make_pmapped_steps(model, tx, options: TrainOptions, devices=None
                       ) -> tuple[Callable, Callable]:
  """The train and eval steps, pmapped over `devices` (default: all)."""
  train = jax.pmap(
      functools.partial(train_step, model=model, tx=tx, options=options),
      axis_name='batch', in_axes=(None, 0), out_axes=(None, 0),
      donate_argnums=(0,), devices=devices)
  return train, make_eval_step(model, options.normalization, devices)


def make_eval_step(model, normalization: Normalization,
                   devices=None) -> Callable:
  """(params, batch) -> `eval_sums` over all `devices`, pmapped."""
  def eval_step(params, batch):
    apply = lambda x: model.apply({'params': params}, x, train=False)
    return lax.psum(eval_sums(apply, batch, normalization), axis_name='batch')

  return jax.pmap(eval_step, axis_name='batch', in_axes=(None, 0),
                  out_axes=0, devices=devices)


def evaluate_batches(eval_step_fn, params, batches: Iterator[dict]
                     ) -> dict[str, float]:
  """Loss, top-1 and top-5 over every (unmasked) example of `batches`."""
  sums = [eval_step_fn(params, batch) for batch in batches]
  if not sums:
    raise ValueError('The evaluation split yielded no batches.')
  totals = jax.device_get(jax.tree_util.tree_map(lambda *x: sum(x)[0], *sums))
  count = float(totals['count'])
  return {**{f'eval_{k}': float(totals[k]) / count
             for k in ('loss', 'top1', 'top5')}, 'eval_examples': int(count)}
