"""What finished runs measured: their curves, one row per run, and the
tables' numbers (means over seeds, percentages, the scale against the
paper's)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import numpy as np

from alexnet_jax import models
from . import common
from . import flops as flops_lib

# The paper's training budget (docs/paper.md): ILSVRC-2012, about 90 epochs.
PAPER_TRAIN_IMAGES = 1_281_167
PAPER_EPOCHS = 90
PAPER_IMAGE_SIZE = 227
PAPER_NUM_CLASSES = 1000


@dataclasses.dataclass
class Curves:
  steps: np.ndarray  # Logged training steps.
  train_loss: np.ndarray
  train_error: np.ndarray  # 1 - train top-1, averaged since the last log.
  eval_steps: np.ndarray
  eval_top1_error: np.ndarray
  eval_top5_error: np.ndarray


def read_curves(directory: str) -> Curves:
  rows = common.read_rows(directory)
  train = [r for r in rows if 'train_loss' in r]
  evals = [r for r in rows if 'eval_top1' in r]
  arr = lambda xs: np.asarray(xs, np.float64)
  return Curves(
      steps=arr([r['step'] for r in train]),
      train_loss=arr([r['train_loss'] for r in train]),
      train_error=arr([1.0 - r['train_top1'] for r in train]),
      eval_steps=arr([r['step'] for r in evals]),
      eval_top1_error=arr([1.0 - r['eval_top1'] for r in evals]),
      eval_top5_error=arr([1.0 - r['eval_top5'] for r in evals]))


def steps_to_reach(steps: np.ndarray, errors: np.ndarray,
                   target: float) -> float:
  """The first logged step whose training error is <= target (NaN: never)."""
  hits = np.nonzero(errors <= target)[0]
  return float(steps[hits[0]]) if hits.size else math.nan


def summarize_run(run: common.Run,
                  target_train_error: float) -> dict[str, Any]:
  """One CSV row: errors as fractions, NaN where the run has no such value."""
  curves = read_curves(run.workdir)
  record = common.read_record(run.workdir)
  last = lambda a: float(a[-1]) if a.size else math.nan
  best = lambda a: float(a.min()) if a.size else math.nan
  return {
      'variant': run.variant,
      'seed_index': run.seed_index,
      'seed': int(run.config.seed),
      'steps': int(curves.steps[-1]) if curves.steps.size else 0,
      'final_eval_top1_error': last(curves.eval_top1_error),
      'final_eval_top5_error': last(curves.eval_top5_error),
      'best_eval_top1_error': best(curves.eval_top1_error),
      'best_eval_top5_error': best(curves.eval_top5_error),
      'final_train_loss': last(curves.train_loss),
      'final_train_error': last(curves.train_error),
      'target_train_error': float(target_train_error),
      'steps_to_target_train_error': steps_to_reach(
          curves.steps, curves.train_error, target_train_error),
      'log_every_steps': int(run.config.log_every_steps),
      'wall_time_s': float(record.get('wall_time_s', math.nan)),
      'workdir': run.workdir,
  }


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
  """(mean, sample std, count) over the finite values; NaN where undefined."""
  xs = np.asarray([v for v in values if v is not None and np.isfinite(v)],
                  np.float64)
  if not xs.size:
    return math.nan, math.nan, 0
  std = float(xs.std(ddof=1)) if xs.size > 1 else math.nan
  return float(xs.mean()), std, int(xs.size)


def scale_sentence(config, steps: int, num_seeds: int) -> str:
  """How far a run's data and budget are from the paper's, in one sentence."""
  images = steps * config.batch_size
  paper_images = PAPER_EPOCHS * PAPER_TRAIN_IMAGES
  m = models.model_from_config(config.model)  # Variant defaults resolved.
  flops = flops_lib.model_flops_of(m, config.image_size)
  paper_flops = flops_lib.model_flops()
  compute = images * flops / (paper_images * paper_flops)
  data = ('random images (the fake dataset: labels carry no signal)'
          if config.dataset == 'fake' else f'{config.dataset}')
  if compute < 0.01:
    verdict = ('so the paper\'s effects of 0.3-1.7 points are not expected to '
               'show at this scale, and differences within the spread over '
               'seeds say nothing')
  elif config.dataset != 'imagenet2012':
    verdict = ('a sizeable budget, but on other data than the paper\'s, so '
               'its numbers are a reference, not a prediction')
  else:
    verdict = 'close to the paper\'s setting'
  return (
      f'Scale: each run trained {steps:,} steps of {config.batch_size} '
      f'({images:,} images) on {data} with {m.num_classes} classes at '
      f'{config.image_size}x{config.image_size}, width {m.width:g} '
      f'({flops / 1e9:.3g} GFLOP per training image), against the paper\'s '
      f'{PAPER_EPOCHS} epochs of ImageNet ({paper_images / 1e6:.0f} M images, '
      f'{PAPER_NUM_CLASSES} classes, {PAPER_IMAGE_SIZE}x{PAPER_IMAGE_SIZE}, '
      f'{paper_flops / 1e9:.2f} GFLOP per image): {images / paper_images:.2g} '
      f'of its images and {compute:.2g} of its training compute, over '
      f'{num_seeds} seed(s): {verdict}.')


def format_pct(value: float, std: float = math.nan, digits: int = 1) -> str:
  """A fraction as percent ('12.3' or '12.3 ± 0.4'); '—' when undefined."""
  if not np.isfinite(value):
    return '—'
  text = f'{100 * value:.{digits}f}'
  if np.isfinite(std):
    text += f' ± {100 * std:.{digits}f}'
  return text
