"""The ablation's figures: training curves and changes against the baseline."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import common
from . import sweeps
from . import summaries


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
    curves = summaries.read_curves(run.workdir)
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
      paper = [(i + offset, getattr(sweeps.PAPER_EFFECTS[n], metric))
               for i, n in enumerate(panel)
               if n in sweeps.PAPER_EFFECTS and sweeps.PAPER_EFFECTS[n].top1 is not None]
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
