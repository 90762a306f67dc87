"""Krizhevsky (2014)'s "one weird trick" step (hybrid_fc_batch='per_worker',
docs/parallelism.md): fc6-fc8 updated once per worker's share of the batch in
turn, then conv1-conv5 once on the whole batch's gradient. Placed with the
hybrid mode's shardings, XLA splits it over the devices."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import steps

FC_LAYERS = ('fc6', 'fc7', 'fc8')
# The convolutional layers' learning rate over the base one, at K workers.
CONV_LR_SCALINGS = {'none': lambda k: 1.0, 'linear': float, 'sqrt': math.sqrt}


def _update(tx, params, opt_state, grads, layers):
  """One optimizer update that keeps the new leaves of `layers` and of no
  layer (counters, hyperparameters): the chain is elementwise."""
  def take(path, old, new):
    keys = {getattr(k, 'key', None) for k in path}
    mine = keys & set(layers) or not keys & set(params)
    return new if mine else old
  updates, new_state = tx.update(grads, opt_state, params)
  take_all = lambda old, new: jax.tree_util.tree_map_with_path(take, old, new)
  return (take_all(params, optax.apply_updates(params, updates)),
          take_all(opt_state, new_state))


def per_worker_update(state, images, labels, key, *, model, tx, workers: int,
                      conv_lr_scaling: str = 'none'):
  """(mean loss, mean top-1, mean gradients, (params, optimizer state)):
  K = `workers` updates of fc6-fc8 at `state`'s learning rate, then one of
  conv1-conv5 at that rate times CONV_LR_SCALINGS[conv_lr_scaling](K)."""
  convs = {k: v for k, v in state.params.items() if k not in FC_LAYERS}
  feats, conv_vjp = jax.vjp(lambda p: models.features(model, p, images),
                            convs)
  share = feats.shape[0] // workers
  zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)
  current, opt_state = state.params, state.opt_state
  fc_grads, feat_grads, losses, top1s = [], [], [], []
  for k in range(workers):
    rows = slice(k * share, (k + 1) * share)

    def loss_fn(fc, x, k=k, rows=rows):
      share_key = jax.random.fold_in(key, k)
      logits = models.head(model, fc, x, lambda x, j: models.dropout(
          x, model.dropout_rate, jax.random.fold_in(share_key, j)))
      return jnp.mean(steps.cross_entropy(logits, labels[rows])), logits

    fc = {name: current[name] for name in FC_LAYERS}
    (loss, logits), (g_fc, g_feat) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(fc, feats[rows])
    current, opt_state = _update(tx, current, opt_state,
                                 {**zeros(convs), **g_fc}, FC_LAYERS)
    fc_grads.append(g_fc)
    feat_grads.append(g_feat / workers)
    losses.append(loss)
    top1s.append(jnp.mean(steps.topk_correct(logits, labels[rows], 1)))
  (g_conv,) = conv_vjp(jnp.concatenate(feat_grads))
  lr = opt_state.hyperparams['learning_rate']
  conv_lr = lr * CONV_LR_SCALINGS[conv_lr_scaling](workers)
  current, opt_state = _update(
      tx, current, optim.set_learning_rate(opt_state, conv_lr),
      {**g_conv, **zeros(fc_grads[0])}, tuple(convs))
  opt_state = optim.set_learning_rate(opt_state, lr)  # The rate logged.
  mean_fc = jax.tree_util.tree_map(lambda *g: sum(g) / workers, *fc_grads)
  return (sum(losses) / workers, sum(top1s) / workers, {**g_conv, **mean_fc},
          (current, opt_state))
