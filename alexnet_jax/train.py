"""Training and evaluation: the loop around the steps of alexnet_jax.steps.
`train_and_evaluate(config, workdir)` trains from scratch or resumes from the
workdir's newest checkpoint, which carries the run's identity and the images
seen (a resume with another batch size goes on in images seen); SIGTERM saves
a checkpoint and stops."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, Callable

from absl import logging
import jax

from alexnet_jax import checkpointing
from alexnet_jax import config_fields
from alexnet_jax import config_lib
from alexnet_jax import metrics_writer
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import placement
from alexnet_jax import preemption
from alexnet_jax import progress as progress_lib
from alexnet_jax import steps
from alexnet_jax import workdir as workdir_lib
# pylint: disable=g-importing-member
# Called by name from here, so that tests can replace them in this module.
from alexnet_jax.input_pipeline import create_data
from alexnet_jax.steps import make_pmapped_steps
# pylint: enable=g-importing-member


class NonFiniteLossError(RuntimeError):
  """Raised when a step produced a NaN or Inf loss or gradient norm."""


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir`'s checkpoints) and evaluates; returns
  the last logged metrics. Process 0 holds `workdir`'s lock for the run."""
  validate(config)
  config = resolve(config)  # Recorded as the run uses it.
  workdir = os.path.abspath(workdir)
  config_lib.check_workdir(workdir)
  lock = (workdir_lib.WorkdirLock(workdir) if jax.process_index() == 0
          else contextlib.nullcontext())
  with lock:
    return _train_and_evaluate(config, workdir)


def validate(config) -> None:
  """Raises config_lib.ConfigError naming the config's first invalid field."""
  config_lib.validate(config)
  models.check_config(config.model, config.image_size)
  optim.check_config(config.optimizer)
  mode = config.get('parallelism', 'data')
  if mode != 'data':
    from alexnet_jax import parallelism  # pylint: disable=g-import-not-at-top
    parallelism.check_model(mode, models.model_from_config(config.model),
                            jax.device_count())


# What the code does for an optional field a config lacks, for config.json.
_WHEN_ABSENT = {'parallelism': 'data', 'keep_best_checkpoint': False,
                'normalization.mean_image': False, 'start_over': False,
                'final_ten_crop': False, 'hybrid_fc_batch': 'global',
                'hybrid_conv_lr_scaling': 'none',
                'augment.lighting_from_data': False}


def resolve(config):
  """A copy of a training config with every value the run will use."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for field, value in _WHEN_ABSENT.items():
      config_fields.set_absent(config, field, value)
    if 'model' in config:
      model = models.model_from_config(config.model)
      for name in models.MODEL_FIELDS:
        config.model[name] = getattr(model, name)
  return config


def _train_and_evaluate(config, workdir: str) -> dict[str, float]:
  primary = jax.process_index() == 0
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    max_to_keep=config.keep_checkpoints)
  latest = ckpt.latest_step()
  # Refused before anything is built or written: records no checkpoint
  # continues, a corrupt metrics file, a resume of another experiment.
  workdir_lib.check_records(workdir, latest is not None, config.start_over,
                            move=primary)
  if latest:
    workdir_lib.check_resume(workdir, config_fields.as_record(config), latest,
                             ckpt.carried(latest), log_changes=False)
  # The best evaluation's state, apart: resuming always reads `ckpt`.
  best = (checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints_best'), max_to_keep=1,
      best_metric='eval_top1') if config.get('keep_best_checkpoint') else None)
  data = create_data(config)
  if config.normalization.get('mean_from_data', False):
    # The training split's measured mean, as config.json records it.
    config = config.copy_and_resolve_references()
    config.normalization.mean = tuple(float(v) for v in data.normalization_mean)
  config_lib.validate_against_data(config, data)
  record = config_fields.as_record(config)
  spe = data.steps_per_epoch
  model = models.model_from_config(config.model)
  tx = optim.create_optimizer(config.optimizer)
  state = steps.create_train_state(model, tx, config.image_size, config.seed)
  try:
    state = ckpt.restore_latest(state)
  except checkpointing.UnreadableCheckpointError:
    if not config.start_over:
      raise
    workdir_lib.check_records(workdir, False, True, move=primary)
  start_step = int(state.step)
  carried = ckpt.carried(start_step) if start_step else None
  offset = _step_offset(config, start_step, carried)
  total_steps = config_lib.total_steps(config, spe, offset)
  logging.info('AlexNet %s: %s parameters; %d steps of %d images '
               '(%d steps per epoch) on %d devices.', config.model.variant,
               f'{models.count_params(state.params):,}', total_steps,
               config.batch_size, spe, jax.device_count())
  if start_step:
    logging.info('Resumed from the checkpoint at step %d.', start_step)
  writer = workdir_lib.start_records(workdir, record, data, start_step,
                                     carried, is_writer=primary)
  train_step, eval_step, put = make_steps(
      model, tx, step_options(config, spe, total_steps, offset), config)
  loop = _Loop(config=config, data=data, total_steps=total_steps, ckpt=ckpt,
               best=best, writer=writer, eval_step=eval_step,
               identity=workdir_lib.run_identity(record, data.class_names),
               place=(placement.replicate if put is None else
                      train_step.place_tree),
               progress=progress_lib.Progress(
                   total_steps, config.eval_every_steps,
                   progress_lib.resumed_elapsed(workdir, start_step),
                   start_step=start_step),
               step_offset=offset)
  trace = progress_lib.StepTrace(os.path.join(workdir, 'profile'),
                                 config.profile_steps)
  batches = placement.prefetch_to_device(
      data.train_batches(start_step + offset), put=put)
  last_logged, step = loop.run(placement.replicate(state), train_step,
                               batches, start_step, trace)
  for files in (trace, ckpt, best, writer):
    if files is not None:
      files.close()
  if step < total_steps:
    raise preemption.Stopped(
        f'SIGTERM: stopped at step {step} of {total_steps} with its '
        f'checkpoint saved; run the same command again to resume.')
  return last_logged


def step_options(config, steps_per_epoch: int, total_steps: int,
                 step_offset: int = 0) -> steps.TrainOptions:
  """What the training step reads of `config`, as plain values."""
  return steps.TrainOptions(
      seed=config.seed, log_every_steps=config.log_every_steps,
      total_steps=total_steps,
      normalization=steps.Normalization.from_config(config.normalization),
      learning_rate=optim.create_schedule(config.optimizer, steps_per_epoch,
                                          total_steps, step_offset))


def _step_offset(config, start_step: int,
                 carried: dict[str, Any] | None) -> int:
  """The steps of config.batch_size in the images seen before `start_step`,
  less `start_step` (0 unless a resume changed the batch size): the data
  order, the schedule and the epochs read the step plus this offset."""
  if not start_step:
    return 0
  seen = (carried or {}).get('images_seen', start_step * config.batch_size)
  batches, rest = divmod(int(seen), config.batch_size)
  if rest:
    raise config_lib.ConfigError(
        f'config.batch_size={config.batch_size} is invalid: the run resumed '
        f'at step {start_step} has seen {seen} images, not a whole number of '
        f'such batches; choose a divisor of {seen}.')
  return batches - start_step


def make_steps(model, tx, options: steps.TrainOptions, config, devices=None):
  """(train step, eval step, batch put or None) for config.parallelism."""
  mode = config.get('parallelism', 'data')
  if mode == 'data':
    return (*make_pmapped_steps(model, tx, options, devices), None)
  from alexnet_jax import parallelism  # pylint: disable=g-import-not-at-top
  return parallelism.make_sharded_steps(
      model, tx, options, mode, config.image_size,
      per_worker_fc=config.get('hybrid_fc_batch') == 'per_worker',
      conv_lr_scaling=config.get('hybrid_conv_lr_scaling', 'none'),
      devices=devices)


@dataclasses.dataclass
class _Loop:
  """Steps to total_steps (or SIGTERM), synchronising the device only where
  it logs, evaluates or checkpoints; non-finite steps stop the run or are
  counted as skipped (config.nonfinite)."""
  config: Any
  data: Any
  total_steps: int
  ckpt: checkpointing.Checkpointer
  best: checkpointing.Checkpointer | None  # The best evaluation's state.
  writer: metrics_writer.MetricsWriter
  progress: progress_lib.Progress
  eval_step: Callable  # Compiled: (params, batch) -> sums.
  identity: dict  # What each checkpoint carries of the run.
  place: Callable  # Where the steps want the state (after a host update).
  step_offset: int  # _step_offset's: data order, schedule, epochs.
  pending: list = dataclasses.field(default_factory=list)  # Since the sync.
  consecutive_skips: int = 0

  def run(self, state, train_step, batches, start_step: int,
          trace: progress_lib.StepTrace) -> tuple[dict[str, float], int]:
    """Returns the last logged metrics and the step reached."""
    config, last_logged = self.config, {}
    every = lambda n, step: n > 0 and step % n == 0
    with preemption.SigtermFlag() as sigterm:
      step = start_step
      while step < self.total_steps:
        state, metrics = train_step(state, next(batches))
        step += 1
        self.pending.append(metrics)
        if not self.progress.timing:  # Exclude the first step's compilation.
          jax.block_until_ready(metrics)
          self.progress.start_window(step)

        is_last = step == self.total_steps
        log_now = every(config.log_every_steps, step) or is_last
        eval_now = every(config.eval_every_steps, step) or is_last
        ckpt_now = every(config.checkpoint_every_steps, step) or is_last
        stop_now = preemption.stop_requested(sigterm.received,
                                             log_now or eval_now or ckpt_now)
        if log_now or eval_now or ckpt_now or stop_now:
          state, last_logged = self._sync(state, step, log_now, eval_now,
                                          save=ckpt_now or stop_now)
        trace.after_step(step, log_now, metrics)
        if stop_now:
          logging.warning('SIGTERM%s: saved the checkpoint at step %d; '
                          'exiting.', '' if sigterm.received else
                          ' (to another process)', step)
          break
    return last_logged, step

  def _sync(self, state, step: int, log_now: bool, eval_now: bool,
            save: bool):
    """Logs, evaluates and checkpoints as due; returns state and metrics row."""
    summary, row = self._summary(step), {}
    if log_now:  # The training window's metrics with its rate, on one line.
      rate = self.progress.end_window(step) * self.config.batch_size
      row = {'step': step, **summary, 'images_per_sec': rate,
             'images_per_sec_per_device': rate / jax.device_count()}
      logging.info('step %d/%d | loss %.4f | top1 %.3f | lr %.3g | %.1f img/s '
                   '| ETA %s', step, self.total_steps,
                   summary.get('train_loss', math.nan),
                   summary.get('train_top1', math.nan),
                   summary['learning_rate'], rate,
                   progress_lib.format_eta(self.progress.eta(step) or 0.0))
    if eval_now:
      eval_metrics = self._evaluate(state.params, step)
      if self.config.optimizer.schedule == 'plateau':  # The rate follows it.
        plateau = optim.Plateau.from_config(self.config.optimizer)
        state = self.place(state.replace(plateau=plateau.update(
            state.plateau, 1.0 - eval_metrics['eval_top1'])))
      if step == self.total_steps and self.config.final_ten_crop:
        eval_metrics.update(self._evaluate(state.params, step, True))
      row = {'step': step, **row, **eval_metrics}
    if row:
      row.update(epoch=(step + self.step_offset) / self.data.steps_per_epoch,
                 elapsed_s=self.progress.elapsed())
      self.writer.write(step, row)
    identity = {**self.identity, 'images_seen':
                (step + self.step_offset) * self.config.batch_size}
    if save:
      self.ckpt.save(step, state, identity=identity)
    if eval_now and self.best is not None:
      self.best.save(step, state, {'eval_top1': eval_metrics['eval_top1']},
                     identity=identity)
    return state, row

  def _evaluate(self, params, step: int, ten_crop: bool = False
                ) -> dict[str, float]:
    """The eval split's metrics (eval_*), or the paper's ten-crop's eval10_*."""
    with self.progress.timing_eval():  # Not training time; for the ETA.
      metrics = steps.evaluate_batches(
          self.eval_step, params, self.data.eval_batches(ten_crop or None))
    logging.info('%s at step %d: loss %.4f, top-1 %.4f, top-5 %.4f (%d '
                 'examples)', 'ten-crop eval' if ten_crop else 'eval', step,
                 metrics['eval_loss'], metrics['eval_top1'],
                 metrics['eval_top5'], metrics['eval_examples'])
    prefix = 'eval10_' if ten_crop else 'eval_'
    return {prefix + k[len('eval_'):]: v for k, v in metrics.items()}

  def _summary(self, step: int) -> dict[str, float]:
    """The pending steps' window summary at `step` (one host sync): the
    window means, norms and rate are in the last step's metrics."""
    fetched = jax.device_get(self.pending)
    for s, metrics in enumerate(fetched, step - len(fetched) + 1):
      self._check_finite(s, metrics)
    self.pending = []
    summary = {k: float(v[0]) for k, v in fetched[-1].items()
               if k not in ('finite', 'step_loss', 'window_count')}
    # A window of skipped steps only has no mean (not a loss of 0).
    finite_steps = int(fetched[-1]['window_count'][0])
    if not finite_steps:
      del summary['train_loss'], summary['train_top1']
    if self.config.nonfinite == 'skip':
      window_steps = (step - 1) % self.config.log_every_steps + 1
      summary['skipped_steps'] = window_steps - finite_steps
    return summary

  def _check_finite(self, step: int, metrics: dict) -> None:
    if metrics['finite'][0]:
      self.consecutive_skips = 0
      return
    kept, limit = self.ckpt.latest_step(), self.config.max_consecutive_skips
    last_good = ('No checkpoint had been saved yet' if kept is None else
                 f'The last good checkpoint (step {kept}) is kept in '
                 f'{self.ckpt.directory}')
    if self.config.nonfinite == 'stop':
      raise NonFiniteLossError(
          f'Non-finite training loss ({float(metrics["step_loss"][0])}) or '
          f'gradient norm at step {step}. {last_good}; lower '
          f'optimizer.learning_rate, or set nonfinite="skip" to skip such '
          f'steps.')
    self.consecutive_skips += 1
    logging.warning('Skipped step %d: non-finite loss or gradient.', step)
    if self.consecutive_skips >= limit:
      raise NonFiniteLossError(
          f'{self.consecutive_skips} consecutive steps were skipped for a '
          f'non-finite loss or gradient (the last at step {step}; '
          f'config.max_consecutive_skips={limit}): the run has diverged. '
          f'{last_good}; lower optimizer.learning_rate.')
