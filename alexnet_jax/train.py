"""Training and evaluation: the pmapped steps and the loop around them.

The state stays unreplicated; `jax.pmap` broadcasts it (`in_axes=None`), shards
the batch over the local devices (axis name 'batch'), averages gradients and
metrics with `lax.pmean` and returns one state (`out_axes=None`), donating the
old one. Dropout keys are derived from (seed, step, device index), so a run's
randomness is a function of the step alone and survives a restart.
config.parallelism 'towers' and 'hybrid' take alexnet_jax.parallelism's
sharded steps instead, which end in the same `apply_gradients`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging as logging_lib
import math
import os
import signal
from typing import TYPE_CHECKING, Any, Callable, Iterator

from absl import logging
import flax
from flax import struct
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from alexnet_jax import checkpointing
from alexnet_jax import config_lib
from alexnet_jax import metrics_writer
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import progress as progress_lib
from alexnet_jax import provenance
from alexnet_jax import workdir as workdir_lib

if TYPE_CHECKING:
  import ml_collections


class _QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax and TFDS; their warnings still show."""

  def filter(self, record):
    noisy = any(f'{os.sep}{name}{os.sep}' in record.pathname
                for name in ('orbax', 'tensorflow_datasets', 'etils'))
    return record.levelno >= logging_lib.WARNING or not noisy


def quiet_library_logs() -> None:
  """Keeps the console to this project's progress lines and real warnings."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  plateau: dict[str, Any]  # The plateau rule's state (optim.Plateau).
  # Sums of training loss and top-1 over the steps of the current logging
  # window (steps after the last multiple of log_every_steps), checkpointed so
  # a resumed run logs the same means as an uninterrupted one.
  train_window: dict[str, Any]


# config.normalization.mean_image: the mean image a run subtracted.
MEAN_IMAGE_FILE = 'mean_image.npy'


class NonFiniteLossError(RuntimeError):
  """Raised when a step produced a NaN or Inf loss or gradient norm."""


def create_model(config) -> models.AlexNet:
  return models.model_from_config(config)


def create_train_state(config, model: models.AlexNet,
                       tx: optax.GradientTransformation) -> TrainState:
  size = config.image_size
  params = jax.jit(lambda key: model.init(
      key, jnp.zeros((1, size, size, 3), jnp.float32), train=False)['params'])(
          jax.random.key(config.seed))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    plateau=optim.Plateau.initial_state(),
                    train_window=_empty_window())


def _empty_window() -> dict[str, jax.Array]:
  return {k: jnp.zeros((), jnp.float32) for k in ('loss', 'top1', 'count')}


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 NHWC -> float32, (x - mean) / std per channel (0-255 scale)."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def channel_mean(config) -> tuple[float, float, float]:
  """The RGB mean the accelerator subtracts: config.normalization.mean, or
  none where the input pipeline has subtracted the mean image already."""
  # getattr: the benchmarks' configs are plain namespaces.
  if getattr(config.normalization, 'mean_image', False):
    return (0.0, 0.0, 0.0)
  return tuple(config.normalization.mean)


def training_images(batch: dict[str, jax.Array], config) -> jax.Array:
  """A training batch's images, mirrored where 'flip' says and lit by
  'light' (the input pipeline's draws; fake data has neither), normalized.
  The lighting is added in float, unrounded and unclipped, as in the paper."""
  images = batch['image']
  if 'flip' in batch:
    images = jnp.where(batch['flip'][:, None, None, None],
                       images[:, :, ::-1], images)
  images = images.astype(jnp.float32)
  if 'light' in batch:
    images = images + batch['light'][:, None, None, :]
  return normalize(images, channel_mean(config), config.normalization.std)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits.

  Ties count against the model: the label's rank is the number of other
  classes scoring at least as high, so a constant row is a miss unless k
  covers every class. A row with a NaN or infinite logit is a miss.
  """
  k = min(k, logits.shape[-1])
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  rank = jnp.sum(logits >= label_logit, axis=-1) - 1  # Minus the label itself.
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return ((rank < k) & finite).astype(jnp.float32)


def global_norm(tree) -> jax.Array:
  return optax.tree.norm(tree)


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               model: models.AlexNet, tx: optax.GradientTransformation,
               config, total_steps: int | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on this device's shard; gradients averaged over 'batch'.

  `param_norm` and `update_norm` (a pass over all parameters each) are
  computed only for steps the loop logs (multiples of log_every_steps, and
  `total_steps`); other steps report NaN for them.
  """
  images = training_images(batch, config)
  labels = batch['label']
  device = lax.axis_index('batch')
  dropout_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(config.seed), state.step), device)

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
  return apply_gradients(state, grads, step_metrics, tx=tx, config=config,
                         total_steps=total_steps)


def apply_gradients(state: TrainState, grads, step_metrics: dict[str, Any], *,
                    tx: optax.GradientTransformation, config,
                    total_steps: int | None = None
                    ) -> tuple[TrainState, dict[str, jax.Array]]:
  """The update from the batch's mean gradients, loss and top-1 (every
  parallelism mode's step ends here)."""
  grad_norm = global_norm(grads)
  # A non-finite loss or gradient leaves the state as it was (the loop then
  # stops or skips, by config.nonfinite); the step counter still advances.
  finite = jnp.isfinite(step_metrics['loss']) & jnp.isfinite(grad_norm)
  logged = (state.step + 1) % config.log_every_steps == 0
  if total_steps is not None:
    logged |= state.step + 1 == total_steps
  nan = jnp.full((), jnp.nan, jnp.float32)

  # Both choices are lax.cond, so only one branch runs: a jnp.where over the
  # old and new state would keep both alive and make XLA copy the largest
  # arrays (fc6's parameters and momentum) every step.
  def apply_update(grads, params, opt_state):
    # The schedule reads the global step, not the count of applied updates,
    # so skipped steps do not make it lag.
    opt_state = optim.at_step(opt_state, state.step)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    update_norm = lax.cond(logged, global_norm, lambda _: nan, updates)
    return optax.apply_updates(params, updates), new_opt_state, update_norm

  def keep(grads, params, opt_state):
    del grads
    return params, opt_state, jnp.zeros((), jnp.float32)

  new_params, new_opt_state, update_norm = lax.cond(
      finite, apply_update, keep, grads, state.params, state.opt_state)

  # Window means: a new window starts after every multiple of log_every_steps.
  new_window = (state.step % config.log_every_steps) == 0
  window = {
      'loss': step_metrics['loss'],
      'top1': step_metrics['top1'],
      'count': jnp.ones((), jnp.float32),
  }
  window = jax.tree_util.tree_map(
      lambda old, new: jnp.where(new_window, 0.0, old)
      + jnp.where(finite, new, 0.0), state.train_window, window)
  count = jnp.maximum(window['count'], 1.0)
  metrics = {
      'train_loss': window['loss'] / count,
      'train_top1': window['top1'] / count,
      'step_loss': step_metrics['loss'],
      'grad_norm': grad_norm,
      'param_norm': lax.cond(logged, global_norm, lambda _: nan, new_params),
      'update_norm': update_norm,
      'learning_rate': optim.current_learning_rate(new_opt_state),
      'finite': finite.astype(jnp.float32),
      'window_count': window['count'],  # Finite steps in the window.
  }
  new_state = state.replace(step=state.step + 1, params=new_params,
                            opt_state=new_opt_state, train_window=window)
  return new_state, metrics


def eval_step(params, batch: dict[str, jax.Array], *, model: models.AlexNet,
              config) -> dict[str, jax.Array]:
  """Masked sums of loss and top-1/top-5 hits over all devices."""
  apply = lambda images: model.apply({'params': params}, images, train=False)
  return lax.psum(eval_sums(apply, batch, config), axis_name='batch')


def eval_sums(apply: Callable[[jax.Array], jax.Array], batch: dict[str, Any],
              config) -> dict[str, jax.Array]:
  """Masked sums of loss and top-1/top-5 hits over `batch`; `apply` maps
  normalized images to logits."""
  images = normalize(batch['image'], channel_mean(config),
                     config.normalization.std)
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
  return {
      'loss': jnp.sum(cross_entropy(logits, labels) * mask),
      'top1': jnp.sum(topk_correct(logits, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(logits, labels, 5) * mask),
      'count': jnp.sum(mask),
  }


# XLA compiler options by `config.xla_cpu_conv_library`, applied when the
# backend is the CPU. jax 0.10's XLA:CPU runs convolutions with YNNPACK;
# 'eigen' keeps YNNPACK for dots and leaves convolutions to Eigen, which is
# 1.3-3.9x faster on AlexNet's convolutions (docs/performance.md).
XLA_CPU_CONV_LIBRARIES = {
    'eigen': {'xla_cpu_experimental_ynn_fusion_type':
              'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'},
    'xla_default': {},
}


def compiler_options(config, backend: str | None = None) -> dict[str, Any]:
  """The XLA options the training and eval steps are compiled with."""
  if (backend or jax.default_backend()) != 'cpu':
    return {}
  return dict(XLA_CPU_CONV_LIBRARIES[config.execution.xla_cpu_conv_library])


def options_for_pmap(config) -> dict[str, Any]:
  """`compiler_options(config)` where they can be applied: `jax.pmap` takes
  none, so they need an ahead-of-time compile, which takes global arrays when
  several processes run; the loop passes process-local ones, so a
  multi-process run compiles without them."""
  options = compiler_options(config)
  if options and jax.process_count() > 1:
    logging.info('%d processes: the steps are compiled without the XLA '
                 'options %s.', jax.process_count(), options)
    return {}
  return options


class CompiledWithOptions:
  """A pmapped function compiled ahead of time with XLA `options` (which
  `jax.pmap` does not take), once per input signature.

  If this jaxlib refuses an option (XLA options come and go between
  releases), the function is compiled without options and a warning says so.
  """

  def __init__(self, pmapped: Callable, options: dict[str, Any]):
    self.pmapped = pmapped
    self.options = dict(options)
    self._compiled: dict[Any, Callable] = {}

  def lower(self, *args):
    return self.pmapped.lower(*args)

  def __call__(self, *args):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    key = (treedef, tuple((np.shape(x), getattr(x, 'dtype', type(x)))
                          for x in leaves))
    compiled = self._compiled.get(key)
    if compiled is None:
      lowered = self.pmapped.lower(*args)
      try:
        compiled = lowered.compile(self.options or None)
      except jax.errors.JaxRuntimeError as e:
        if not self.options:
          raise
        logging.warning('XLA refused the compiler options %s (%s); compiling '
                        'without them.', self.options, e)
        self.options = {}
        compiled = lowered.compile()
      self._compiled[key] = compiled
    return compiled(*args)


def make_pmapped_steps(model, tx, config, devices=None,
                       total_steps: int | None = None
                       ) -> tuple[Callable, Callable]:
  """The train and eval steps, pmapped over `devices` (default: all), with
  `compiler_options(config)`. `total_steps`: the run's last step, whose
  parameter and update norms are computed as on log steps."""
  p_train = jax.pmap(
      functools.partial(train_step, model=model, tx=tx, config=config,
                        total_steps=total_steps),
      axis_name='batch', in_axes=(None, 0), out_axes=(None, 0),
      donate_argnums=(0,), devices=devices)
  p_eval = jax.pmap(
      functools.partial(eval_step, model=model, config=config),
      axis_name='batch', in_axes=(None, 0), out_axes=0, devices=devices)
  options = options_for_pmap(config)
  if options:
    return (CompiledWithOptions(p_train, options),
            CompiledWithOptions(p_eval, options))
  return p_train, p_eval


def evaluate(p_eval, params, batches: Iterator[dict]) -> dict[str, float]:
  totals = None
  for batch in batches:
    sums = p_eval(params, batch)
    totals = sums if totals is None else jax.tree_util.tree_map(
        jnp.add, totals, sums)
  if totals is None:
    raise ValueError('The evaluation split yielded no batches.')
  totals = jax.device_get(jax.tree_util.tree_map(lambda x: x[0], totals))
  count = float(totals['count'])
  return {'eval_loss': float(totals['loss']) / count,
          'eval_top1': float(totals['top1']) / count,
          'eval_top5': float(totals['top5']) / count,
          'eval_examples': int(count)}


def create_data(config):
  """The dataset named by `config.dataset` (TensorFlow only for real data)."""
  if config.dataset == 'fake':
    from alexnet_jax import fake_data  # pylint: disable=g-import-not-at-top
    return fake_data.FakeData(config)
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.TFDSData(config)


def _local_sharding(spec: jax.sharding.PartitionSpec,
                    devices=None) -> jax.sharding.Sharding:
  devices = jax.local_devices() if devices is None else devices
  mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  return jax.sharding.NamedSharding(mesh, spec)


def replicate_on(tree, devices=None):
  """Places `tree` as the pmapped step returns its state (replicated over
  `devices`, default the local ones), so the step compiles once rather than
  again on its own output."""
  return jax.device_put(
      tree, _local_sharding(jax.sharding.PartitionSpec(), devices))


def replicate(tree):
  return replicate_on(tree)


def prefetch_to_device(batches: Iterator[dict], size: int = 2,
                       put: Callable[[dict], dict] | None = None
                       ) -> Iterator[dict]:
  """Puts the next `size` batches on the devices ahead of the step (with
  `put`, where the step wants another layout than one shard per device)."""
  sharding = _local_sharding(jax.sharding.PartitionSpec('batch'))
  queue = []

  def put_shards(batch):
    return jax.tree_util.tree_map(
        lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, sharding),
        batch)

  put = put or put_shards

  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.pop(0)
  while queue:
    yield queue.pop(0)


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class _SigtermFlag:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _stop_requested(received: bool, at_shared_step: bool) -> bool:
  """Whether to stop for SIGTERM. The signal may reach one process only, so
  several processes decide together (an all-gather of their flags) at steps
  that all of them log, evaluate or checkpoint: one leaving the loop alone
  would leave the others waiting in a collective."""
  if jax.process_count() == 1:
    return received
  if not at_shared_step:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.array(received, np.int32))
  return bool(np.any(flags))


def _last_good_checkpoint(ckpt: checkpointing.Checkpointer) -> str:
  kept = ckpt.latest_step()
  return (f'The last good checkpoint (step {kept}) is kept in '
          f'{ckpt.directory}' if kept is not None else
          'No checkpoint had been saved yet')


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  Returns the last logged metrics. Process 0 holds `workdir`'s lock for the
  run, so a second run on the same workdir is refused.
  """
  config_lib.validate(config)
  workdir = os.path.abspath(workdir)
  config_lib.check_workdir(workdir)
  lock = (workdir_lib.WorkdirLock(workdir) if jax.process_index() == 0
          else contextlib.nullcontext())
  with lock:
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict[str, float]:
  is_writer = jax.process_index() == 0
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    max_to_keep=config.keep_checkpoints)
  # The best evaluation's state, apart: resuming always reads `ckpt`.
  best = (checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints_best'), max_to_keep=1,
      best_metric='eval_top1') if config.get('keep_best_checkpoint') else None)
  if ckpt.latest_step():  # Refuse a changed resume before building anything.
    workdir_lib.check_resume(workdir, config, ckpt.latest_step(),
                             log_changes=False)
  data = create_data(config)
  if config.normalization.get('mean_from_data', False):
    # The training split's measured mean replaces the configured one (and is
    # what config.json records).
    config = config.copy_and_resolve_references()
    config.normalization.mean = tuple(float(v) for v in data.normalization_mean)
  config_lib.validate_against_data(config, data)
  steps_per_epoch = data.steps_per_epoch
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(math.ceil(config.num_epochs * steps_per_epoch)))

  model = create_model(config)
  tx = optim.create_optimizer(config.optimizer, steps_per_epoch, total_steps)
  plateau = optim.Plateau.from_config(config.optimizer)
  state = create_train_state(config, model, tx)
  logging.info('AlexNet %s: %s parameters; %d steps of %d images '
               '(%d steps per epoch) on %d devices.', config.model.variant,
               f'{models.count_params(state.params):,}', total_steps,
               config.batch_size, steps_per_epoch, jax.device_count())

  state = replicate(ckpt.restore_latest(state))
  start_step = int(state.step)
  if start_step:
    logging.info('Resumed from the checkpoint at step %d.', start_step)
  if is_writer:
    workdir_lib.record_config(workdir, config, data.class_names, start_step)
    if getattr(data, 'mean_image', None) is not None:  # For predict.
      np.save(os.path.join(workdir, MEAN_IMAGE_FILE), data.mean_image)
  writer = metrics_writer.MetricsWriter(workdir, enabled=is_writer,
                                        resume_step=start_step)
  if is_writer:
    provenance.record(workdir, start_step)
  writer.write_config(config)
  progress = progress_lib.Progress(
      total_steps, config.eval_every_steps,
      progress_lib.resumed_elapsed(workdir, start_step))
  trace = progress_lib.StepTrace(os.path.join(workdir, 'profile'),
                                 config.profile_steps)

  if config.get('parallelism', 'data') == 'data':
    p_train, p_eval = make_pmapped_steps(model, tx, config,
                                        total_steps=total_steps)
    put = None
  else:
    from alexnet_jax import parallelism  # pylint: disable=g-import-not-at-top
    p_train, p_eval, put = parallelism.make_sharded_steps(
        model, tx, config, total_steps=total_steps)
  batches = prefetch_to_device(data.train_batches(start_step), put=put)

  last_logged: dict[str, float] = {}
  pending: list[tuple[int, dict]] = []
  last_good_step = start_step
  consecutive_skips = 0

  def flush_metrics(step: int) -> dict[str, float]:
    """Pulls the metrics of the steps since the last flush (one host sync)."""
    nonlocal pending, last_good_step, consecutive_skips
    fetched = jax.device_get([m for _, m in pending])
    steps = [s for s, _ in pending]
    pending = []
    for s, m in zip(steps, fetched):
      if m['finite'][0]:
        consecutive_skips = 0
        continue
      loss = float(m['step_loss'][0])
      if config.nonfinite == 'stop':
        raise NonFiniteLossError(
            f'Non-finite training loss ({loss}) or gradient norm at step {s}. '
            f'{_last_good_checkpoint(ckpt)}; lower optimizer.learning_rate, '
            f'or set nonfinite="skip" to skip such steps.')
      consecutive_skips += 1
      logging.warning('Skipped step %d: non-finite loss or gradient.', s)
      if consecutive_skips >= config.max_consecutive_skips:
        raise NonFiniteLossError(
            f'{consecutive_skips} consecutive steps were skipped for a '
            f'non-finite loss or gradient (the last at step {s}; '
            f'config.max_consecutive_skips={config.max_consecutive_skips}): '
            f'the run has diverged. {_last_good_checkpoint(ckpt)}; lower '
            f'optimizer.learning_rate.')
    # The window means are in the last step's metrics; norms and the
    # learning rate are the last step's.
    summary = {k: float(v[0]) for k, v in fetched[-1].items()
               if k not in ('finite', 'step_loss', 'window_count')}
    # Skipped steps are left out of the window means; a window of skipped
    # steps only has no mean (not a loss of 0).
    finite_steps = int(fetched[-1]['window_count'][0])
    if not finite_steps:
      del summary['train_loss'], summary['train_top1']
    if config.nonfinite == 'skip':
      window_steps = (step - 1) % config.log_every_steps + 1
      summary['skipped_steps'] = window_steps - finite_steps
    last_good_step = step
    return summary

  with _SigtermFlag() as sigterm:
    step = start_step
    while step < total_steps:
      batch = next(batches)
      state, metrics = p_train(state, batch)
      step += 1
      pending.append((step, metrics))
      if not progress.timing:  # Exclude the first step's compilation.
        jax.block_until_ready(metrics)
        progress.start_window(step)

      is_last = step == total_steps
      log_now = step % config.log_every_steps == 0 or is_last
      eval_now = (config.eval_every_steps > 0 and
                  step % config.eval_every_steps == 0) or is_last
      ckpt_now = (config.checkpoint_every_steps > 0 and
                  step % config.checkpoint_every_steps == 0) or is_last
      stop_now = _stop_requested(sigterm.received,
                                 log_now or eval_now or ckpt_now)

      if log_now or eval_now or ckpt_now or stop_now:
        summary = flush_metrics(step)
        if log_now:
          rate = progress.end_window(step) * config.batch_size
          summary['images_per_sec'] = rate
          summary['images_per_sec_per_device'] = rate / jax.device_count()
          eta = progress.eta(step) or 0.0
          logging.info('step %d/%d | loss %.4f | top1 %.3f | lr %.3g | '
                       '%.1f img/s | ETA %s', step, total_steps,
                       summary.get('train_loss', math.nan),
                       summary.get('train_top1', math.nan),
                       summary['learning_rate'], rate, _format_eta(eta))
          last_logged = {'step': step, **summary}
        else:
          last_logged = {}
        if eval_now:
          with progress.timing_eval():  # Not training time; for the ETA.
            eval_metrics = evaluate(p_eval, state.params, data.eval_batches())
          logging.info('eval at step %d: loss %.4f, top-1 %.4f, top-5 %.4f '
                       '(%d examples)', step, eval_metrics['eval_loss'],
                       eval_metrics['eval_top1'], eval_metrics['eval_top5'],
                       eval_metrics['eval_examples'])
          if config.optimizer.schedule == 'plateau':
            new_plateau, lr = plateau.update(
                state.plateau, 1.0 - eval_metrics['eval_top1'],
                float(optim.current_learning_rate(state.opt_state)))
            state = replicate(state.replace(
                plateau=new_plateau,
                opt_state=optim.set_learning_rate(state.opt_state, lr)))
          last_logged = {'step': step, **last_logged, **eval_metrics}
        if last_logged:
          last_logged.update(epoch=step / steps_per_epoch,
                             elapsed_s=progress.elapsed())
          writer.write(step, last_logged)
        if ckpt_now or stop_now:
          ckpt.save(step, state)
        if eval_now and best is not None:
          best.save(step, state, {'eval_top1': eval_metrics['eval_top1']})

      trace.after_step(step, log_now, metrics)
      if stop_now:
        logging.warning('SIGTERM%s: saved the checkpoint at step %d; '
                        'exiting.', '' if sigterm.received else
                        ' (to another process)', step)
        break

  trace.close()
  ckpt.close()
  if best is not None:
    best.close()
  writer.close()
  return last_logged
