r"""Evaluation of saved weights without training (README: Using a trained
model).

  python -m alexnet_jax.tools.evaluate --workdir=RUN [--step=N]
  python -m alexnet_jax.tools.evaluate --config=configs/imagenet_eval.py \
      --workdir=/tmp/alexnet_eval --config.checkpoint=PATH
"""

from __future__ import annotations

import datetime
import functools
import os
import sys

from absl import logging
import jax
import numpy as np

from alexnet_jax import cli
from alexnet_jax import config_fields
from alexnet_jax import config_lib
from alexnet_jax import input_pipeline
from alexnet_jax import metrics_writer
from alexnet_jax import models
from alexnet_jax import placement
from alexnet_jax import steps
from alexnet_jax import workdir as workdir_lib
from . import checkpoint_params
from . import convert
from . import predict

TORCH_SUFFIXES = ('.pth', '.pt')


def load_params(path: str, model_config) -> tuple[dict, int | None]:
  """Params (NumPy) and step from an orbax checkpoint, or (step None) a .pth
  of `model_config.variant`'s PyTorch layout or an .npz."""
  if not path:
    raise config_lib.ConfigError(
        'config.checkpoint is not set: pass --config.checkpoint=PATH (an orbax '
        'checkpoint or workdir, a PyTorch .pth, or an .npz of params).')
  if os.path.isdir(path):
    return checkpoint_params.restore_orbax_params(path)
  if not os.path.exists(path):
    raise checkpoint_params.CheckpointNotFoundError(
        f'config.checkpoint={path!r} does not exist.')
  if path.endswith('.npz'):
    return convert.load_npz(path), None
  if path.endswith(TORCH_SUFFIXES):
    convert.check_model_config(model_config)
    state_dict = convert.load_torch_state_dict(path)
    return convert.torch_to_flax(state_dict, model_config.variant,
                                 groups=model_config.groups), None
  raise config_lib.ConfigError(
      f'config.checkpoint={path!r}: expected a directory (orbax), a '
      f'{"/".join(TORCH_SUFFIXES)} file (PyTorch) or an .npz file.')


def check_params_fit(params, model: models.AlexNet, image_size: int) -> None:
  """Raises naming the entries whose shapes differ from what `model` creates."""
  wanted = jax.eval_shape(
      lambda: model.init(jax.random.key(0),
                         jax.numpy.zeros((1, image_size, image_size, 3)),
                         train=False))['params']
  shapes = lambda tree: {
      jax.tree_util.keystr(p): tuple(np.shape(x))
      for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  have, want = shapes(params), shapes(wanted)
  diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
  if diff:
    details = ', '.join(
        f'{k}: {have.get(k, "missing")} vs {want.get(k, "none")}'
        for k in diff[:6])
    raise convert.ConversionError(
        f'The weights do not fit config.model (variant='
        f'{model.variant!r}, groups={model.groups}, width={model.width}, '
        f'num_classes={model.num_classes}) at image_size={image_size}: '
        f'{details} (weights vs model).')


# What makes a directory hold records an evaluation must not touch.
_RECORDS = (workdir_lib.CONFIG_FILE, 'metrics.jsonl', 'checkpoints',
            'tensorboard', workdir_lib.CLASS_NAMES_FILE)


def output_dir(workdir: str, step: int | None) -> str:
  """`workdir` if it holds no records, else a new subdirectory of it."""
  if not any(os.path.exists(os.path.join(workdir, r)) for r in _RECORDS):
    return workdir
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y%m%dT%H%M%SZ')
  name = f'eval_step{step}_{stamp}' if step is not None else (
      f'eval_weights_{stamp}')
  path, n = os.path.join(workdir, name), 1
  while os.path.exists(path):
    path, n = os.path.join(workdir, f'{name}.{n}'), n + 1
  return path


def run_config(workdir: str, step: int | None = None):
  """The config training run `workdir` recorded for its checkpoint at `step`
  (the newest readable when None), set to evaluate it with the mean the run
  measured (recorded, not measured again)."""
  every = checkpoint_params.find_checkpoints(workdir)  # Raises if none.
  found = [(d, s) for d, s in every if step is None or s == step]
  if not found:
    raise checkpoint_params.CheckpointNotFoundError(
        f'--step={step}: {workdir} has checkpoints at steps '
        f'{[s for _, s in every]}.')
  try:
    config = predict.load_config(workdir, found[0][1])
  except predict.PredictError as e:
    raise config_lib.ConfigError(str(e)) from None
  with config.unlocked():
    config.checkpoint = found[0][0] if step is not None else workdir
    config.normalization.mean_from_data = False  # config.json holds it.
  return config


def evaluate_checkpoint(model: models.AlexNet, params, normalization,
                        data) -> dict[str, float]:
  """Metrics of `params` over every example of `data`'s eval split (the last
  batch padded and masked)."""
  eval_step = steps.make_eval_step(
      model, steps.Normalization.from_config(normalization))
  return steps.evaluate_batches(eval_step, placement.replicate(params),
                                data.eval_batches())


def evaluate(config, workdir: str, run_dir: str | None = None
             ) -> dict[str, float]:
  """The eval-only run: `config.checkpoint` on `config.eval_split`, its
  records in `output_dir(workdir, step)`. `run_dir`: the training run
  `config` came from (`run_config`), whose mean image is used as it was."""
  config_lib.validate(config)
  models.check_config(config.model, config.image_size)
  workdir = os.path.abspath(workdir)
  config_lib.check_workdir(workdir)
  model = models.model_from_config(config.model)
  params, step = load_params(config.get('checkpoint'), config.model)
  check_params_fit(params, model, config.image_size)
  mean_image = None
  if run_dir is not None:
    try:
      mean_image = predict.load_mean_image(run_dir, config.normalization)
    except predict.PredictError as e:
      raise config_lib.ConfigError(str(e)) from None
  data = input_pipeline.create_data(config, mean_image=mean_image)
  config_lib.validate_against_data(config, data)
  is_writer = jax.process_index() == 0
  out_dir = output_dir(workdir, step)
  if is_writer:
    os.makedirs(out_dir, exist_ok=True)
    workdir_lib.record_config(out_dir, config_fields.as_record(config),
                              data.class_names, step=0)
  metrics = evaluate_checkpoint(model, params, config.normalization, data)
  expected = getattr(data, 'num_eval_examples', None)
  if expected is not None and metrics['eval_examples'] != expected:
    raise RuntimeError(f'Evaluated {metrics["eval_examples"]} examples, but '
                       f'{config.eval_split!r} has {expected}.')
  logging.info('%s: loss %.4f, top-1 %.4f, top-5 %.4f (%d examples of %s %r).',
               config.checkpoint, metrics['eval_loss'], metrics['eval_top1'],
               metrics['eval_top5'], metrics['eval_examples'], config.dataset,
               config.eval_split)
  writer = metrics_writer.MetricsWriter(out_dir, enabled=is_writer)
  writer.write(step or 0, metrics)
  writer.close()
  logging.info('Wrote the evaluation records to %s.', out_dir)
  return metrics


def main(argv, run_dir: str | None = None):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  metrics = evaluate(flags.FLAGS.config, flags.FLAGS.workdir, run_dir)
  print(' '.join(f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
                 for k, v in metrics.items()))


def run():
  """Console-script entry point (`alexnet-evaluate`): without --config, the
  config --workdir's training run recorded."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A training run to evaluate (without '
                      '--config), or where the records of an evaluation of '
                      '--config.checkpoint go.')
  flags.DEFINE_integer('step', None, 'With a training run: the checkpoint '
                       'step to evaluate (default: the newest).')
  flags.mark_flags_as_required(['workdir'])
  argv, run_dir = sys.argv, None
  workdir = cli.value_of(argv, 'workdir')
  if cli.value_of(argv, 'config') is None and workdir and not cli.wants_help(
      argv):
    try:
      step = cli.value_of(argv, 'step')
      config = run_config(workdir, int(step) if step is not None else None)
    except (ValueError, checkpoint_params.CheckpointNotFoundError) as e:
      sys.exit(f'evaluate: {e}')
    config_flags.DEFINE_config_dict('config', config, 'The run\'s recorded '
                                    'config; --config.<field>=... changes it.',
                                    lock_config=True)
    run_dir = workdir
  else:
    config_flags.DEFINE_config_file(
        'config', None, 'A config file, e.g. configs/imagenet_eval.py, with '
        '--config.checkpoint=PATH.', lock_config=True)
  cli.run_console_script(functools.partial(main, run_dir=run_dir), __name__)


if __name__ == '__main__':
  run()
