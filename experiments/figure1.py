r"""The paper's Figure 1: steps to a training error threshold, ReLU vs tanh.

  python -m experiments.figure1 --config=configs/default.py --workdir=/tmp/figure1 \
      [--threshold=0.25] [--seeds=1] [--config.log_every_steps=5 ...]

Trains the config twice per seed, with `model.activation` 'relu' and 'tanh'
(in `workdir/relu/seed<k>` and `workdir/tanh/seed<k>`, skipped when finished,
resumed when interrupted, as in experiments.ablate), finds the first logged
step whose training error is at or below `--threshold` and reports the ratio
tanh / ReLU. The paper: a 4-layer CNN on CIFAR-10 reaches 25% training error
six times faster with ReLU. Steps are known to `log_every_steps`; lower it for
a finer count.

Writes workdir/figure1.png (training error against step, both activations, the
threshold line), workdir/figure1.md and workdir/figure1.json.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np

from . import common
from . import run_flags
from . import summaries

PAPER_RATIO = 6.0
PAPER_THRESHOLD = 0.25
VARIANTS = {'relu': {'model.activation': 'relu'},
            'tanh': {'model.activation': 'tanh'}}
_THRESHOLD = flags.DEFINE_float(
    'threshold', PAPER_THRESHOLD,
    'Training top-1 error (a fraction) whose first crossing is timed.')


def speedup(relu_steps: Sequence[float], tanh_steps: Sequence[float],
            total_steps: int) -> dict[str, Any]:
  """tanh steps / ReLU steps (means over seeds).

  A tanh run that never reached the threshold counts as `total_steps`, which
  makes the ratio a lower bound ('>'); without a ReLU crossing there is none.
  """
  relu = [s for s in relu_steps if math.isfinite(s)]
  if not relu or len(relu) < len(relu_steps):
    return {'value': math.nan, 'kind': 'undefined',
            'text': 'undefined (ReLU did not reach the threshold in every run)'}
  reached = all(math.isfinite(s) for s in tanh_steps)
  tanh = [s if math.isfinite(s) else float(total_steps) for s in tanh_steps]
  ratio = float(np.mean(tanh) / np.mean(relu))
  if reached:
    return {'value': ratio, 'kind': 'exact', 'text': f'{ratio:.2f}x'}
  return {'value': ratio, 'kind': 'lower_bound',
          'text': f'> {ratio:.2f}x (tanh did not reach the threshold in '
                  f'{total_steps} steps in every run)'}


def plot(runs: Sequence[common.Run], threshold: float, path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(7, 4.5), layout='constrained')
  ax = fig.subplots()
  colours = {'relu': 'C0', 'tanh': 'C3'}
  dashes = {'relu': '-', 'tanh': '--'}
  for run in runs:
    curves = summaries.read_curves(run.workdir)
    ax.plot(curves.steps, 100 * curves.train_error,
            color=colours[run.variant], linestyle=dashes[run.variant],
            alpha=0.85, label=run.variant if run.seed_index == 0 else None)
    hit = summaries.steps_to_reach(curves.steps, curves.train_error, threshold)
    if math.isfinite(hit):
      ax.axvline(hit, color=colours[run.variant], lw=0.8, alpha=0.5)
  ax.axhline(100 * threshold, color='k', lw=1, linestyle=':',
             label=f'{100 * threshold:g}% threshold')
  seeds = sorted({sum(r.variant == v for r in runs) for v in colours
                  if any(r.variant == v for r in runs)})
  n_text = ' or '.join(map(str, seeds)) + (' seed' if seeds == [1] else ' seeds')
  ax.set(xlabel='step', ylabel='training error (%)',
         title='Figure 1: ReLU vs tanh (training error since the last log;\n'
               f'every run drawn, n = {n_text} per activation)')
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.savefig(path, dpi=110)


def run_figure1(base_config, workdir: str, seeds: int = 1,
                threshold: float = PAPER_THRESHOLD, source: str = 'the config',
                train_fn=None) -> dict[str, Any]:
  """Trains (or skips) both activations; writes the figure, Markdown, JSON."""
  if not 0.0 < threshold < 1.0:
    raise ValueError(f'--threshold={threshold}: expected a fraction in (0, 1).')
  workdir = os.path.abspath(workdir)
  runs = common.plan_runs(base_config, workdir, VARIANTS, seeds, 'figure1')
  common.execute_all(runs, train_fn)
  rows = [summaries.summarize_run(run, threshold) for run in runs]
  steps = {v: [r['steps_to_target_train_error'] for r in rows
               if r['variant'] == v] for v in VARIANTS}
  total = max(r['steps'] for r in rows)
  result = {
      'threshold': threshold,
      'log_every_steps': int(base_config.log_every_steps),
      'total_steps': total,
      'steps_to_threshold': steps,
      'final_train_error': {v: [r['final_train_error'] for r in rows
                                if r['variant'] == v] for v in VARIANTS},
      'paper_ratio': PAPER_RATIO,
      **{f'ratio_{k}': v for k, v in
         speedup(steps['relu'], steps['tanh'], total).items()},
  }
  paths = {k: os.path.join(workdir, f'figure1.{k}')
           for k in ('png', 'md', 'json')}
  plot(runs, threshold, paths['png'])
  common.write_json(paths['json'], result)
  with open(paths['md'], 'w') as f:
    f.write(markdown(result, rows, source, base_config, seeds))
  result['paths'] = paths
  return result


def markdown(result: dict, rows: Sequence[dict], source: str, config,
             seeds: int) -> str:
  threshold = result['threshold']
  lines = [
      '# Figure 1: ReLU vs tanh', '',
      f'Config: {source}. Steps until the training top-1 error (averaged over '
      f'the steps since the previous log, every {result["log_every_steps"]} '
      f'steps) first reaches {100 * threshold:g}%.', '',
      f'| activation | runs | steps to {100 * threshold:g}% train err | '
      'final train err |',
      '|---|---|---|---|',
  ]
  for v in VARIANTS:
    mine = [r for r in rows if r['variant'] == v]
    mean, std, n = summaries.mean_std(r['steps_to_target_train_error']
                                   for r in mine)
    reached = ('not reached' if not n else f'{mean:.0f}' + (
        f' ± {std:.0f}' if math.isfinite(std) else '') + (
            f' ({n} of {len(mine)} runs)' if n < len(mine) else ''))
    err = summaries.format_pct(*summaries.mean_std(
        r['final_train_error'] for r in mine)[:2])
    lines.append(f'| {v} | {len(mine)} | {reached} | {err} |')
  lines += [
      '', f'**Speed-up of ReLU over tanh: {result["ratio_text"]}** (tanh steps '
      f'/ ReLU steps). The paper: {PAPER_RATIO:g}x to '
      f'{100 * PAPER_THRESHOLD:g}% '
      'training error, for a 4-layer CNN on CIFAR-10 with learning rates tuned '
      'per activation and no regularization; this run uses the config\'s net, '
      'data and learning rate for both.', '',
      _scale(config, result['total_steps'], seeds), '',
      '![figure1](figure1.png)']
  return '\n'.join(lines) + '\n'


def _scale(config, steps: int, seeds: int) -> str:
  m = config.model
  data = ('the fake dataset (random images)' if config.dataset == 'fake'
          else config.dataset)
  return (f'Scale: each run trained {steps:,} steps of {config.batch_size} '
          f'images of {data} ({m.num_classes} classes, {config.image_size}x'
          f'{config.image_size}) through AlexNet ({m.variant!r}, width '
          f'{m.width:g}, dropout {m.dropout_rate:g}), over {seeds} seed(s); '
          'the paper\'s figure trained a 4-layer CNN on CIFAR-10 (50,000 '
          '32x32 images, 10 classes), so only the direction and rough size '
          'of the ratio are comparable.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    config, workdir = run_flags.CONFIG.value, run_flags.WORKDIR.value
    common.plan_runs(config, workdir, VARIANTS, run_flags.SEEDS.value,
                     'figure1')
    result = run_figure1(config, workdir, run_flags.SEEDS.value,
                         _THRESHOLD.value, source=run_flags.describe_config())
  except ValueError as e:  # A run stopped by SIGTERM exits with status 75.
    sys.exit(f'figure1: {e}')
  with open(result['paths']['md']) as f:
    print(f.read())


def run():
  """Console-script entry point (`alexnet-figure1`)."""
  run_flags.start(__name__, main)


if __name__ == '__main__':
  run()
