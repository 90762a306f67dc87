"""config.parallelism's sharded modes (docs/parallelism.md): 'towers', the
paper's split of every layer over two devices, and 'hybrid', Krizhevsky
(2014)'s. One tree of global parameter arrays in every mode; each device runs
`models.features` and `models.head` with the mode's collectives."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax import config_lib
from alexnet_jax import models
from alexnet_jax import owt
from alexnet_jax import steps

DATA, MODEL = 'data', 'model'


def make_mesh(mode: str, devices=None) -> Mesh:
  """('data', 'model') of len(devices)/m x m (m: 2, all or 1 by `mode`), in
  process order: each process's devices hold its share of the batch."""
  devices = sorted(jax.devices() if devices is None else devices,
                   key=lambda d: (d.process_index, d.id))
  m = config_lib.model_axis_size(mode, len(devices))
  if len(devices) % m:
    raise ValueError(f'parallelism={mode!r} needs a multiple of {m} devices, '
                     f'got {len(devices)}.')
  return Mesh(np.array(devices).reshape(-1, m), (DATA, MODEL))


def param_specs(params, mode: str):
  """PartitionSpecs of the parameters over 'model': by output (fc8: by input),
  every layer in 'towers', the fully connected ones in 'hybrid'."""
  def spec(layer: str, leaf: str) -> P:
    conv = layer.startswith('conv')
    if mode == 'data' or (mode == 'hybrid' and conv):
      return P()
    if layer == 'fc8':
      return P(MODEL, None) if leaf == 'kernel' else P()
    if leaf == 'bias':
      return P(MODEL)
    return P(None, None, None, MODEL) if conv else P(None, MODEL)
  return {layer: {leaf: spec(layer, leaf) for leaf in leaves}
          for layer, leaves in params.items()}


def batch_axes(mode: str) -> tuple[str, ...]:
  """Mesh axes a batch's first dimension is split over."""
  return (DATA,) if mode == 'towers' else (DATA, MODEL)


def state_shardings(state, mesh: Mesh, mode: str):
  """A TrainState's NamedShardings: parameters and their optimizer slots
  (by path and shape) as `param_specs`; the rest replicated."""
  specs = param_specs(state.params, mode)

  def sharding(path, leaf):
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    if len(keys) >= 2 and keys[-2] in specs and keys[-1] in specs[keys[-2]]:
      if np.shape(leaf) == np.shape(state.params[keys[-2]][keys[-1]]):
        return NamedSharding(mesh, specs[keys[-2]][keys[-1]])
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(sharding, state)


def place(tree, shardings):
  """`tree` as global arrays with `shardings`. With several processes, a leaf
  not yet global holds the same value on each (from the seed or restored)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def put(x, sharding):
    if isinstance(x, jax.Array) and (x.sharding == sharding or
                                     not x.is_fully_addressable):
      return jax.device_put(x, sharding)
    value = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(value.shape, sharding,
                                        lambda index: value[index])
  return jax.tree_util.tree_map(put, tree, shardings)


def local_forward(model: models.AlexNet, params, x, *, mode: str,
                  key=None) -> jax.Array:
  """The logits of this device's 'data' group, inside shard_map on its
  parameter slices and images; `key`: dropout's (None: none)."""
  towers = mode == 'towers'
  gather = lambda axis: lambda x: lax.all_gather(x, MODEL, axis=axis,
                                                 tiled=True)
  x = models.features(model, params, x, towers=1 if towers else None,
                      join=gather(3) if towers else None)
  # fc6 reads all of pool5: both towers' maps, or the whole group's batch.
  x = gather(3 if towers else 0)(x)
  dropout = None
  if key is not None:
    # Gathered inputs drop alike on the group's devices; neurons per device.
    group = jax.random.fold_in(key, lax.axis_index(DATA))
    device = jax.random.fold_in(group, lax.axis_index(MODEL))
    on_inputs = model.variant in models.DROPOUT_ON_FC_INPUTS
    dropout = lambda x, j: models.dropout(
        x, model.dropout_rate, jax.random.fold_in(
            group if on_inputs else device, j))
  return models.head(model, params, x, dropout, gather=gather(1),
                     reduce=lambda x: lax.psum(x, MODEL))


def grads_fn(model, mesh: Mesh, specs, mode: str) -> Callable:
  """(params, images, labels, dropout key) -> (mean loss, mean top-1,
  gradients), as global arrays; gradients sharded like the parameters."""
  def local(params, images, labels, key):
    if mode == 'hybrid':  # The group's logits are on every device: its labels.
      labels = lax.all_gather(labels, MODEL, tiled=True, to='invarying')

    def loss_fn(p):
      logits = local_forward(model, p, images, mode=mode, key=key)
      loss = jnp.mean(steps.cross_entropy(logits, labels))
      return lax.pmean(loss, DATA), logits
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    top1 = lax.pmean(jnp.mean(steps.topk_correct(logits, labels, 1)), DATA)
    return loss, top1, grads
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(specs, P(batch_axes(mode)),
                                 P(batch_axes(mode)), P()),
                       out_specs=(P(), P(), specs))


def logits_fn(model, mesh: Mesh, specs, mode: str) -> Callable:
  """(params, normalized images) -> logits, split over 'data'."""
  return jax.shard_map(
      lambda p, x: local_forward(model, p, x, mode=mode),
      mesh=mesh, in_specs=(specs, P(batch_axes(mode))), out_specs=P(DATA))


@dataclasses.dataclass
class Placed:
  """A jitted step that places its state (or parameters) with `shardings`
  and its batch with `put`, where they are not placed already."""
  jitted: Callable
  shardings: Any
  put: Callable

  def place_tree(self, tree):
    return place(tree, self.shardings)

  def place(self, tree, batch):
    if not all(isinstance(v, jax.Array) and isinstance(
        v.sharding, NamedSharding) and v.sharding.mesh.axis_names == (
            DATA, MODEL) for v in batch.values()):
      batch = self.put(batch)
    return self.place_tree(tree), batch

  def lower(self, tree, batch):
    return self.jitted.lower(*self.place(tree, batch))

  def __call__(self, tree, batch):
    return self.jitted(*self.place(tree, batch))


def batch_put(mesh: Mesh, mode: str) -> Callable[[dict], dict]:
  """This process's share, [local devices, per device, ...], of a global
  batch (the shares in process order) -> global arrays over `batch_axes`."""
  last = [None, None]
  sharding = NamedSharding(mesh, P(batch_axes(mode)))

  def put(batch):
    if batch is last[0]:  # Fake data repeats one batch.
      return last[1]
    out = {k: jax.make_array_from_process_local_data(
        sharding, np.reshape(v, (-1,) + np.shape(v)[2:]))
           for k, v in batch.items()}
    last[:] = [batch, out]
    return out
  return put


def check_model(mode: str, model: models.AlexNet, devices: int) -> None:
  """ConfigError where `mode` cannot split `model` over `devices` devices."""
  fail = config_lib.Fields(None).fail
  if mode == 'towers' and model.groups != 2:
    fail('model.groups', model.groups, "parallelism='towers' puts each of the "
         'two towers on its own device: expected 2 (variant '
         f'{model.variant!r} has {model.groups})')
  if mode == 'towers' and model.lrn and model.lrn_across_towers:
    fail('model.lrn_across_towers', True, "parallelism='towers' normalizes "
         "each tower's maps on its own device: expected False")
  size = config_lib.model_axis_size(mode, devices)
  fc = models.scaled_width(models.FC_FEATURES, model.width, 1)
  if fc % size:
    fits = [w for w in (0.05, 0.0625, 0.1, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
            if models.scaled_width(models.FC_FEATURES, w, 1) % size == 0]
    hint = (f' (e.g. width {" or ".join(map(str, fits[:3]))})' if fits else '')
    fail('model.width', model.width, f'it gives fc6/fc7 {fc} neurons, which '
         f'parallelism={mode!r} splits over {size} devices: expected a width '
         f'whose fc6/fc7 neurons are a multiple of {size}{hint}')


def make_sharded_steps(model, tx, options: steps.TrainOptions, mode: str,
                       image_size: int, per_worker_fc: bool = False,
                       conv_lr_scaling: str = 'none', devices=None):
  """(train step, eval step, batch put) for 'towers' or 'hybrid', as the
  pmapped steps' (metrics with a leading axis of 1); owt.py: per_worker_fc."""
  if mode not in ('towers', 'hybrid'):
    raise ValueError(f"config.parallelism={mode!r}: the sharded steps are "
                     f"'towers' and 'hybrid'.")
  mesh = make_mesh(mode, devices)
  check_model(mode, model, mesh.size)
  state_shape = jax.eval_shape(lambda: steps.create_train_state(
      model, tx, image_size, options.seed))
  shardings = state_shardings(state_shape, mesh, mode)
  specs = param_specs(state_shape.params, mode)
  grads = grads_fn(model, mesh, specs, mode)
  logits = logits_fn(model, mesh, specs, mode)
  replicated = NamedSharding(mesh, P())

  def train_step(state, batch):
    images = steps.training_images(batch, options.normalization)
    key = jax.random.fold_in(jax.random.key(options.seed), state.step)
    state = steps.with_learning_rate(state, options)
    updated = None  # owt.py: the fc layers updated per worker.
    if per_worker_fc:
      loss, top1, g, updated = owt.per_worker_update(
          state, images, batch['label'], key, model=model, tx=tx,
          workers=mesh.shape[MODEL], conv_lr_scaling=conv_lr_scaling)
    else:
      loss, top1, g = grads(state.params, images, batch['label'], key)
    state, metrics = steps.apply_gradients(
        state, g, {'loss': loss, 'top1': top1}, tx=tx, options=options,
        updated=updated)
    return state, jax.tree_util.tree_map(lambda x: x[None], metrics)

  def eval_step(params, batch):
    sums = steps.eval_sums(lambda x: logits(params, x), batch,
                           options.normalization)
    return jax.tree_util.tree_map(lambda x: x[None], sums)

  put = batch_put(mesh, mode)
  train = Placed(jax.jit(train_step, out_shardings=(shardings, replicated),
                         donate_argnums=(0,)), shardings, put)
  evaluate = Placed(jax.jit(eval_step, out_shardings=replicated),
                    shardings.params, batch_put(mesh, mode))
  return train, evaluate, put

