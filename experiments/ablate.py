r"""Ablation sweeps: train each variant and seed, tabulate and plot the changes.

  python -m experiments.ablate --config=configs/default.py --workdir=/tmp/ablate \
      --variants=baseline,no_lrn,no_overlap --seeds=1 --config.num_train_steps=6

Variants come from `sweep()` in experiments/sweeps.py (or the file `--sweep`
names): a name -> dotted config-field overrides. Every `--config.x=y` flag
applies to every run. Run k of a variant trains in `workdir/<variant>/seed<k>`
with `config.seed = base seed + k`, in this process, through
`alexnet_jax.train.train_and_evaluate`; a run that already reached its final
step is skipped, an interrupted one resumes from its checkpoints.

Writes, in `workdir`:
  ablations.csv          one row per variant and seed
  ablations.md           mean ± std over seeds, the change against the baseline
                         and the paper's reported change beside it
  ablation_curves.png    training loss and eval top-1 error against step
  ablation_deltas.png    change in eval error against the baseline, per variant
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from alexnet_jax import cli
from experiments import common

DEFAULT_SWEEP = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'sweeps.py')
FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None,
                      'Directory for the runs, tables and plots.')
  config_flags.DEFINE_config_file(
      'config', None, 'The base config file, e.g. configs/default.py.',
      lock_config=True)
  flags.DEFINE_string('sweep', DEFAULT_SWEEP, 'A Python file whose sweep() '
                      'returns {variant name: {dotted config field: value}}.')
  flags.DEFINE_list('variants', None,
                    'Variants of the sweep to run, in order (default: all).')
  flags.DEFINE_integer('seeds', 1, 'Runs per variant (seeds base + k).')
  flags.DEFINE_string('baseline', 'baseline',
                      'The variant the others are compared against.')
  flags.DEFINE_float(
      'target_train_error', 0.25,
      'Report the first logged step whose training top-1 error is at or '
      'below this fraction.')
  flags.mark_flags_as_required(['config', 'workdir'])


@dataclasses.dataclass(frozen=True)
class PaperEffect:
  """What the paper reports for removing a feature (ImageNet unless noted)."""
  top1: float | None  # Points of top-1 error added without it, or None.
  top5: float | None
  text: str


PAPER_EFFECTS = {
    'no_lrn': PaperEffect(
        1.4, 1.2, 'LRN lowers top-1/top-5 error by 1.4/1.2 points.'),
    'no_overlap': PaperEffect(
        0.4, 0.3, 'Overlapping pooling (3/2 vs 2/2) lowers top-1/top-5 error '
        'by 0.4/0.3 points.'),
    'one_tower': PaperEffect(
        1.7, 1.2, 'Two towers beat one tower with half the kernels in '
        'conv1-conv4 by 1.7/1.2 points. This sweep runs groups=1 with the '
        'same kernel counts (a bigger net), not the paper\'s half-width one.'),
    'no_dropout': PaperEffect(
        None, None, 'Dropout roughly doubles the iterations needed to '
        'converge and prevents heavy overfitting.'),
    'tanh': PaperEffect(
        None, None, 'A 4-layer CNN with ReLU reaches 25% CIFAR-10 training '
        'error six times faster than with tanh (Figure 1).'),
    'no_lighting': PaperEffect(
        None, None, 'PCA lighting noise lowers top-1 error by over 1 point '
        '(section 4.1).'),
}

CSV_FIELDS = (
    'variant', 'seed_index', 'seed', 'steps', 'final_eval_top1_error',
    'final_eval_top5_error', 'best_eval_top1_error', 'best_eval_top5_error',
    'final_train_loss', 'final_train_error', 'target_train_error',
    'steps_to_target_train_error', 'log_every_steps', 'wall_time_s', 'workdir')


def load_sweep(path: str) -> dict[str, dict[str, Any]]:
  """Calls `sweep()` in the Python file at `path` and checks what it returns."""
  if not os.path.isfile(path):
    raise ValueError(f'--sweep={path!r}: no such file.')
  spec = importlib.util.spec_from_file_location('_ablation_sweep', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, 'sweep', None)):
    raise ValueError(f'--sweep={path!r} defines no sweep() function.')
  variants = module.sweep()
  if not isinstance(variants, Mapping) or not variants:
    raise ValueError(f'sweep() in {path} must return a non-empty dict of '
                     f'variant name -> {{dotted field: value}}.')
  for name, overrides in variants.items():
    common.check_name(name, f'Variant name in {path}')
    if not isinstance(overrides, Mapping) or not all(
        isinstance(k, str) for k in overrides):
      raise ValueError(f'sweep() in {path}: variant {name!r} must map dotted '
                       f'config fields to values, got {overrides!r}.')
  return {name: dict(overrides) for name, overrides in variants.items()}


def select(sweep: Mapping[str, dict], names: Sequence[str] | None,
           path: str) -> dict[str, dict]:
  if not names:
    return dict(sweep)
  unknown = [n for n in names if n not in sweep]
  if unknown:
    raise ValueError(f'--variants: {unknown} not in {path}; it defines '
                     f'{list(sweep)}.')
  if len(set(names)) != len(names):
    raise ValueError(f'--variants={",".join(names)} names a variant twice.')
  return {n: sweep[n] for n in names}


# ----------------------------------------------------------------------------
# Statistics over seeds.
# ----------------------------------------------------------------------------

_METRICS = ('final_eval_top1_error', 'final_eval_top5_error',
            'best_eval_top1_error', 'best_eval_top5_error', 'final_train_loss',
            'steps_to_target_train_error', 'wall_time_s')


def variant_stats(rows: Sequence[Mapping[str, Any]], variants: Sequence[str],
                  baseline: str) -> dict[str, dict[str, Any]]:
  """Per variant: (mean, std, n) of each metric, and the change in final
  eval error against the baseline, paired by seed (variant - baseline)."""
  by_variant = {v: [r for r in rows if r['variant'] == v] for v in variants}
  base = {r['seed_index']: r for r in by_variant.get(baseline, [])}
  stats = {}
  for v in variants:
    runs = by_variant[v]
    s: dict[str, Any] = {'runs': len(runs)}
    for metric in _METRICS:
      s[metric] = common.mean_std(r[metric] for r in runs)
    for metric in ('final_eval_top1_error', 'final_eval_top5_error'):
      deltas = [r[metric] - base[r['seed_index']][metric] for r in runs
                if r['seed_index'] in base]
      s['delta_' + metric] = common.mean_std(deltas)
    stats[v] = s
  return stats


# ----------------------------------------------------------------------------
# Outputs.
# ----------------------------------------------------------------------------


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
  def cell(value):
    if isinstance(value, float) and not math.isfinite(value):
      return ''
    return value
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: cell(row[k]) for k in CSV_FIELDS})


def _points(stat: tuple[float, float, int]) -> str:
  mean, std, n = stat
  if not n:
    return '—'
  text = f'{100 * mean:+.2f}'
  return text + (f' ± {100 * std:.2f}' if math.isfinite(std) else '')


def _steps(stat: tuple[float, float, int], runs: int) -> str:
  mean, std, n = stat
  if not n:
    return 'not reached'
  text = f'{mean:.0f}' + (f' ± {std:.0f}' if math.isfinite(std) else '')
  return text + (f' ({n} of {runs} runs)' if n < runs else '')


def _paper(name: str) -> str:
  effect = PAPER_EFFECTS.get(name)
  if effect is None:
    return '—'
  if effect.top1 is None:
    return 'see note'
  return f'+{effect.top1} / +{effect.top5}'


def _overrides_text(overrides: Mapping[str, Any]) -> str:
  if not overrides:
    return '(none)'
  return ', '.join(f'`{k}={v!r}`' for k, v in overrides.items())


def markdown(stats: Mapping[str, dict], variants: Mapping[str, dict],
             baseline: str, target: float, source: str,
             scale: str, figures: Sequence[str]) -> str:
  has_base = baseline in stats and stats[baseline]['runs'] > 0
  lines = [
      '# Ablations', '',
      f'Base config: {source}. Errors are percent on the eval split, mean ± '
      f'std over seeds; Δ is variant − `{baseline}` in points, paired by seed '
      f'(positive: removing the feature hurt, the sign of the paper\'s '
      f'numbers). "Paper Δ" is what the paper reports on ImageNet.',
      '',
      '| variant | overrides | runs | final top-1 err | final top-5 err | '
      f'best top-1 err | Δ top-1 | Δ top-5 | paper Δ top-1 / top-5 | steps to '
      f'{100 * target:g}% train err | final train loss | wall time (s) |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for name, s in stats.items():
    is_base = name == baseline
    d1 = '0 (baseline)' if is_base else (
        _points(s['delta_final_eval_top1_error']) if has_base else '—')
    d5 = '' if is_base else (
        _points(s['delta_final_eval_top5_error']) if has_base else '—')
    loss_mean, loss_std, _ = s['final_train_loss']
    loss = '—' if not math.isfinite(loss_mean) else f'{loss_mean:.3f}' + (
        f' ± {loss_std:.3f}' if math.isfinite(loss_std) else '')
    wall = s['wall_time_s'][0]
    lines.append(' | '.join([
        f'| `{name}`', _overrides_text(variants[name]), str(s['runs']),
        common.format_pct(*s['final_eval_top1_error'][:2]),
        common.format_pct(*s['final_eval_top5_error'][:2]),
        common.format_pct(*s['best_eval_top1_error'][:2]),
        d1, d5, _paper(name),
        _steps(s['steps_to_target_train_error'], s['runs']), loss,
        '—' if not math.isfinite(wall) else f'{wall:.0f}']) + ' |')
  notes = [(n, PAPER_EFFECTS[n].text) for n in stats if n in PAPER_EFFECTS]
  if notes:
    lines += ['', 'The paper on each variant:', '']
    lines += [f'- `{n}`: {text}' for n, text in notes]
  lines += ['', scale, '',
            'Steps to the target training error are the first logged step '
            '(every `log_every_steps`) whose training error, averaged since '
            'the previous log, is at or below it; "not reached" when none is.']
  if not has_base:
    lines += ['', f'No `{baseline}` runs, so no changes against it.']
  if figures:
    lines += [''] + [f'![{os.path.splitext(f)[0]}]({f})' for f in figures]
  return '\n'.join(lines) + '\n'


def _figure(width: float, height: float, columns: int = 1,
            width_ratios: Sequence[float] | None = None):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), layout='constrained')
  return fig, fig.subplots(1, columns, squeeze=False,
                           width_ratios=width_ratios)[0]


_DASHES = ('-', '--', ':', '-.')


def plot_curves(runs: Sequence[common.Run], path: str) -> None:
  """Training loss and eval top-1 error against step, every run."""
  fig, (loss_ax, err_ax) = _figure(12, 4.5, 2)
  styles = {}
  for run in runs:
    i = styles.setdefault(run.variant, len(styles))
    # Colour and dash both vary, so identical curves stay distinguishable.
    style = dict(color=f'C{i % 10}', linestyle=_DASHES[i % len(_DASHES)],
                 alpha=0.85, label=run.variant if run.seed_index == 0 else None)
    curves = common.read_curves(run.workdir)
    # Markers where points are few (a lone point draws no line).
    loss_ax.plot(curves.steps, curves.train_loss,
                 marker='.' if curves.steps.size < 30 else None, **style)
    err_ax.plot(curves.eval_steps, 100 * curves.eval_top1_error, marker='o',
                **style)
  loss_ax.set(xlabel='step', ylabel='training loss',
              title='Training loss (mean since the previous log)')
  err_ax.set(xlabel='step', ylabel='eval top-1 error (%)',
             title='Eval top-1 error')
  for ax in (loss_ax, err_ax):
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
  fig.savefig(path, dpi=110)


def split_outliers(sizes: Mapping[str, float], factor: float = 3.0
                   ) -> tuple[list[str], list[str]]:
  """(common, outliers): the names above the first gap (from the largest
  |size| down) where one exceeds `factor` x the next, if at least half the
  names stay below it. The outliers get a panel of their own, so that one
  huge change does not flatten the others' bars."""
  order = sorted(sizes, key=lambda n: abs(sizes[n]), reverse=True)
  for k in range(len(order) - 1):
    if abs(sizes[order[k]]) > factor * abs(sizes[order[k + 1]]):
      if len(order) - (k + 1) >= len(order) / 2:
        outliers = order[:k + 1]
        return [n for n in sizes if n not in outliers], outliers
      break
  return list(sizes), []


def deltas_figure(stats: Mapping[str, dict], baseline: str,
                  num_classes: int | None = None):
  """The figure of `plot_deltas`, or None when no variant has a change."""
  names = [n for n in stats if n != baseline and
           stats[n]['delta_final_eval_top1_error'][2] > 0]
  if not names:
    return None
  delta = lambda n, m, i: 100 * stats[n][f'delta_final_eval_{m}_error'][i]
  # Top-5 says something only with many classes: with 10, nearly every
  # model has its label among 5 guesses and every change is ~0.
  metrics = ['top1']
  if (num_classes is None or num_classes > 10) and any(
      delta(n, 'top5', 0) for n in names):
    metrics.append('top5')
  seeds = sorted({stats[n]['delta_final_eval_top1_error'][2] for n in names})
  common_names, outliers = split_outliers(
      {n: max(abs(delta(n, m, 0)) for m in metrics) for n in names})
  panels = [p for p in (common_names, outliers) if p]
  fig, axes = _figure(max(6.0, 1.3 * len(names) + 2), 4.5, len(panels),
                      [len(p) + 1 for p in panels])
  bar = 0.76 / len(metrics)
  for ax, panel in zip(axes, panels):
    x = np.arange(len(panel))
    for k, metric in enumerate(metrics):
      offset = (k - (len(metrics) - 1) / 2) * bar
      means = [delta(n, metric, 0) for n in panel]
      # A spread only where there are two or more seeds to take it from.
      stds = [delta(n, metric, 1) if stats[n][f'delta_final_eval_{metric}_'
                                              'error'][2] > 1 else np.nan
              for n in panel]
      has_spread = not all(np.isnan(stds))
      label = 'top-1' if metric == 'top1' else 'top-5'
      bars = ax.bar(x + offset, means, bar,
                    yerr=np.nan_to_num(stds) if has_spread else None,
                    capsize=4 if has_spread else 0,
                    label=f'Δ {label} (this run)', color=f'C{k}')
      ax.bar_label(bars, fmt='%+.2f', fontsize='x-small', padding=2)
      paper = [(i + offset, getattr(PAPER_EFFECTS[n], metric))
               for i, n in enumerate(panel)
               if n in PAPER_EFFECTS and PAPER_EFFECTS[n].top1 is not None]
      if paper:
        ax.scatter(*zip(*paper), marker='x', color='k', zorder=3, s=50,
                   label='paper (ImageNet)' if metric == 'top1' else None)
    ax.axhline(0, color='k', lw=0.8)
    ax.set_xticks(x, panel)
    if len(panel) > 4:
      ax.tick_params(axis='x', labelrotation=30)
    ax.grid(axis='y', alpha=0.3)
  axes[0].legend(fontsize='small')
  axes[0].set_ylabel(f'final eval error − {baseline} (points)')
  if outliers:
    axes[-1].set_title('on its own scale')
  n_text = ' or '.join(str(k) for k in seeds)
  spread = ('bars: one run each, no error bars' if seeds == [1] else
            'bars: mean over seeds; error bars: std where n > 1')
  fig.suptitle(f'Change against {baseline} (n = {n_text} seed'
               f'{"s" if seeds != [1] else ""} per variant; {spread})')
  return fig


def plot_deltas(stats: Mapping[str, dict], baseline: str, path: str,
                num_classes: int | None = None) -> bool:
  """Bar chart of the change in final eval error against the baseline, the
  paper's change as markers; False (nothing written) when there is none.
  Error bars (std over seeds) only with two or more seeds; top-5 only with
  more than 10 classes; outlying variants on a panel of their own."""
  fig = deltas_figure(stats, baseline, num_classes)
  if fig is None:
    return False
  fig.savefig(path, dpi=110)
  return True


# ----------------------------------------------------------------------------
# The sweep.
# ----------------------------------------------------------------------------


def run_ablation(base_config, workdir: str, variants: Mapping[str, dict],
                 seeds: int = 1, target_train_error: float = 0.25,
                 baseline: str = 'baseline', source: str = 'the base config',
                 where: str = 'the sweep',
                 train_fn: Callable | None = None) -> dict[str, str]:
  """Trains (or skips) every run, then writes the CSV, Markdown and plots.

  Returns the paths written, by kind ('csv', 'md', 'curves', 'deltas').
  """
  if not 0.0 <= target_train_error <= 1.0:
    raise ValueError(f'--target_train_error={target_train_error}: expected a '
                     f'fraction in [0, 1].')
  workdir = os.path.abspath(workdir)
  runs = common.plan_runs(base_config, workdir, variants, seeds, where)
  common.execute_all(runs, train_fn)

  rows = [common.summarize_run(run, target_train_error) for run in runs]
  stats = variant_stats(rows, list(variants), baseline)
  paths = {'csv': os.path.join(workdir, 'ablations.csv'),
           'md': os.path.join(workdir, 'ablations.md'),
           'curves': os.path.join(workdir, 'ablation_curves.png'),
           'deltas': os.path.join(workdir, 'ablation_deltas.png')}
  write_csv(rows, paths['csv'])
  plot_curves(runs, paths['curves'])
  if not plot_deltas(stats, baseline, paths['deltas'],
                     base_config.model.num_classes):
    paths.pop('deltas')
    if os.path.exists(os.path.join(workdir, 'ablation_deltas.png')):
      os.remove(os.path.join(workdir, 'ablation_deltas.png'))
  steps = max(r['steps'] for r in rows)
  scale = common.scale_sentence(base_config, steps, seeds)
  figures = [os.path.basename(paths[k]) for k in ('curves', 'deltas')
             if k in paths]
  with open(paths['md'], 'w') as f:
    f.write(markdown(stats, variants, baseline, target_train_error, source,
                     scale, figures))
  return paths


def describe_config_flag() -> str:
  """'configs/default.py with --config.a=1' for the Markdown."""
  holder = FLAGS['config']
  text = f'`{config_flags.get_config_filename(holder)}`'
  overrides = config_flags.get_override_values(holder)
  if overrides:
    text += ' with ' + ' '.join(f'`--config.{k}={v}`'
                                for k, v in overrides.items())
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_libraries()
  try:  # Bad flags, sweep files or variants: a message, not a traceback.
    sweep = load_sweep(FLAGS.sweep)
    variants = select(sweep, FLAGS.variants, FLAGS.sweep)
    common.plan_runs(FLAGS.config, FLAGS.workdir, variants,
                     FLAGS.seeds, FLAGS.sweep)
  except ValueError as e:
    sys.exit(f'ablate: {e}')
  try:
    paths = run_ablation(
        FLAGS.config, FLAGS.workdir, variants, FLAGS.seeds,
        FLAGS.target_train_error, FLAGS.baseline,
        source=describe_config_flag(),
        where=FLAGS.sweep)
  except common.RunInterrupted as e:
    sys.exit(f'ablate: {e}')
  with open(paths['md']) as f:
    print(f.read())
  print('Wrote ' + ', '.join(paths.values()))


def run():
  """Console-script entry point (`alexnet-ablate`)."""
  cli.quiet_console()
  define_flags()
  cli.list_own_flags_in_help(__name__)
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
