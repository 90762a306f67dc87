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
import importlib.util
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags

from . import common
from . import plots
from . import run_flags
from . import sweeps
from . import summaries

DEFAULT_SWEEP = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'sweeps.py')
_SWEEP = flags.DEFINE_string(
    'sweep', DEFAULT_SWEEP, 'A Python file whose sweep() returns {variant '
    'name: {dotted config field: value}}.')
_VARIANTS = flags.DEFINE_list(
    'variants', None, 'Variants of the sweep to run, in order (default: all).')
_BASELINE = flags.DEFINE_string(
    'baseline', 'baseline', 'The variant the others are compared against.')
_TARGET = flags.DEFINE_float(
    'target_train_error', 0.25, 'Report the first logged step whose training '
    'top-1 error is at or below this fraction.')

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
      s[metric] = summaries.mean_std(r[metric] for r in runs)
    for metric in ('final_eval_top1_error', 'final_eval_top5_error'):
      deltas = [r[metric] - base[r['seed_index']][metric] for r in runs
                if r['seed_index'] in base]
      s['delta_' + metric] = summaries.mean_std(deltas)
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
  effect = sweeps.PAPER_EFFECTS.get(name)
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
        summaries.format_pct(*s['final_eval_top1_error'][:2]),
        summaries.format_pct(*s['final_eval_top5_error'][:2]),
        summaries.format_pct(*s['best_eval_top1_error'][:2]),
        d1, d5, _paper(name),
        _steps(s['steps_to_target_train_error'], s['runs']), loss,
        '—' if not math.isfinite(wall) else f'{wall:.0f}']) + ' |')
  notes = [(n, sweeps.PAPER_EFFECTS[n].text) for n in stats if n in sweeps.PAPER_EFFECTS]
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

  rows = [summaries.summarize_run(run, target_train_error) for run in runs]
  stats = variant_stats(rows, list(variants), baseline)
  paths = {'csv': os.path.join(workdir, 'ablations.csv'),
           'md': os.path.join(workdir, 'ablations.md'),
           'curves': os.path.join(workdir, 'ablation_curves.png'),
           'deltas': os.path.join(workdir, 'ablation_deltas.png')}
  write_csv(rows, paths['csv'])
  plots.plot_curves(runs, paths['curves'])
  if not plots.plot_deltas(stats, baseline, paths['deltas'],
                     base_config.model.num_classes):
    paths.pop('deltas')
    if os.path.exists(os.path.join(workdir, 'ablation_deltas.png')):
      os.remove(os.path.join(workdir, 'ablation_deltas.png'))
  steps = max(r['steps'] for r in rows)
  scale = summaries.scale_sentence(base_config, steps, seeds)
  figures = [os.path.basename(paths[k]) for k in ('curves', 'deltas')
             if k in paths]
  with open(paths['md'], 'w') as f:
    f.write(markdown(stats, variants, baseline, target_train_error, source,
                     scale, figures))
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:  # Bad flags, sweep files or variants: a message, not a traceback.
    sweep = load_sweep(_SWEEP.value)
    variants = select(sweep, _VARIANTS.value, _SWEEP.value)
    common.plan_runs(run_flags.CONFIG.value, run_flags.WORKDIR.value,
                     variants, run_flags.SEEDS.value, _SWEEP.value)
  except ValueError as e:
    sys.exit(f'ablate: {e}')
  paths = run_ablation(  # A run stopped by SIGTERM exits with status 75.
      run_flags.CONFIG.value, run_flags.WORKDIR.value, variants,
      run_flags.SEEDS.value, _TARGET.value, _BASELINE.value,
      source=run_flags.describe_config(), where=_SWEEP.value)
  with open(paths['md']) as f:
    print(f.read())
  print('Wrote ' + ', '.join(paths.values()))


def run():
  """Console-script entry point (`alexnet-ablate`)."""
  run_flags.start(__name__, main)


if __name__ == '__main__':
  run()
