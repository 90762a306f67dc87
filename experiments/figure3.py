r"""The paper's Figure 3: conv1's kernels, one block per tower, and how
colour-specific each tower's kernels are.

  python -m experiments.figure3 --run=/tmp/alexnet_default --workdir=/tmp/figure3 [--step=S]

Reads the run's checkpoint (the newest, or --step) and its recorded config;
writes `figure3.png` (the kernels as the paper draws them: one block per
tower, each kernel scaled to the full display range on its own) and
`figure3.json` into --workdir, and prints where.

The paper (section 6.1): the 48 kernels of GPU 1 came out largely
colour-agnostic, the 48 of GPU 2 largely colour-specific, whatever the
initialization. A kernel's tower is the conv2 group that reads its map:
kernel o of n belongs to tower o // (n / groups) + 1 (tower 1: the first
half, the paper's GPU 1).

Colour score of a kernel (`colour_scores`): the share of its energy off the
grey axis. The kernel is taken in pixel space (its weights divided by
config.normalization.std, so that it weighs the RGB values of the image);
at each of its positions the RGB weight vector v splits into its grey part
mean(v) * (1, 1, 1) and the rest, and

  score = sum over positions |v - mean(v) (1, 1, 1)|^2 / sum |v|^2.

It is 0 for a grey kernel (R = G = B everywhere), 0.25 for one that weighs
the channels as luma does (ITU-R 601: 0.299, 0.587, 0.114; drawn green
against magenta), 2/3 for a kernel on one channel alone, 1 for an opponent
kernel whose channels sum to zero (red against green). A kernel of
independent random weights (as initialized) scores 2/3 on average (two of
the three colour directions are off grey): `CHANCE`. So does a kernel that
kept much of its initial noise, whatever it learned: the smoothness score
tells those apart. Smoothness of a kernel (`smoothness_scores`): the
correlation of horizontally and vertically adjacent weights,

  smoothness = 1 - sum over adjacent (p, q) |v_p - v_q|^2
                   / sum over adjacent (p, q) (|v_p|^2 + |v_q|^2),

1 for a constant kernel, about 0 for independent noise, -1 for a
checkerboard.

figure3.json holds per tower the mean, std, median, minimum and maximum of
its kernels' colour scores, the mean and std of their smoothness, and both
scores of every kernel; with two towers, the difference of the colour means
(tower 2 - tower 1) and the share of random reassignments of the kernels to
towers whose difference is as large (`permutation_p`: is the split between
towers more than chance?).
"""

from __future__ import annotations

import os

from absl import flags
import numpy as np

from . import common
from . import figure_flags
from . import run_loading

CHANCE = 2.0 / 3.0  # The expected score of a kernel of i.i.d. weights.
PERMUTATIONS = 10_000



def colour_scores(kernel: np.ndarray, std=(1.0, 1.0, 1.0)) -> np.ndarray:
  """[n] colour scores (module docstring) of a conv1 kernel [kh, kw, 3, n]
  applied to images divided by `std` per channel."""
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 4 or kernel.shape[2] != 3:
    raise ValueError(f'expected a conv1 kernel [kh, kw, 3, n], got shape '
                     f'{kernel.shape}.')
  pixels = kernel / np.asarray(std, np.float64)[:, None]
  off_grey = pixels - pixels.mean(axis=2, keepdims=True)
  energy = np.sum(pixels**2, axis=(0, 1, 2))
  return np.sum(off_grey**2, axis=(0, 1, 2)) / np.maximum(energy, 1e-30)


def smoothness_scores(kernel: np.ndarray) -> np.ndarray:
  """[n] smoothness scores (module docstring) of a kernel [kh, kw, c, n]."""
  kernel = np.asarray(kernel, np.float64)
  pairs = [(kernel[1:], kernel[:-1]), (kernel[:, 1:], kernel[:, :-1])]
  change = sum(np.sum((p - q)**2, axis=(0, 1, 2)) for p, q in pairs)
  energy = sum(np.sum(p**2 + q**2, axis=(0, 1, 2)) for p, q in pairs)
  return 1.0 - change / np.maximum(energy, 1e-30)


def tower_scores(scores: np.ndarray, towers: int) -> list[np.ndarray]:
  """The scores of each tower's kernels (equal, consecutive blocks)."""
  if len(scores) % towers:
    raise ValueError(f'{len(scores)} kernels do not split into {towers} '
                     'towers.')
  return np.split(np.asarray(scores), towers)


def permutation_p(a: np.ndarray, b: np.ndarray, permutations: int =
                  PERMUTATIONS, seed: int = 0) -> float:
  """The share of random splits of a + b into groups of their sizes whose
  |difference of means| reaches that of (a, b) (two-sided)."""
  both = np.concatenate([a, b])
  observed = abs(np.mean(b) - np.mean(a))
  rng = np.random.default_rng(seed)
  hits = 0
  for _ in range(permutations):
    shuffled = rng.permutation(both)
    hits += abs(shuffled[len(a):].mean() - shuffled[:len(a)].mean()) >= (
        observed - 1e-12)
  return (hits + 1) / (permutations + 1)


def summarize(kernel: np.ndarray, towers: int, std) -> dict:
  """figure3.json's numbers for a conv1 kernel split into `towers`."""
  per_tower = tower_scores(colour_scores(kernel, std), towers)
  smooth = tower_scores(smoothness_scores(kernel), towers)
  std_of = lambda s: float(s.std(ddof=1)) if len(s) > 1 else 0.0
  result = {'score': 'share of kernel energy off the grey axis (pixel space)',
            'chance': CHANCE, 'towers': [
                {'tower': i + 1, 'kernels': len(s), 'colour': float(s.mean()),
                 'colour_std': std_of(s),
                 'colour_median': float(np.median(s)),
                 'colour_min': float(s.min()), 'colour_max': float(s.max()),
                 'smoothness': float(m.mean()), 'smoothness_std': std_of(m),
                 'scores': [round(float(x), 5) for x in s],
                 'smoothness_scores': [round(float(x), 5) for x in m]}
                for i, (s, m) in enumerate(zip(per_tower, smooth))]}
  if towers == 2:
    result['difference'] = float(per_tower[1].mean() - per_tower[0].mean())
    result['permutation_p'] = permutation_p(*per_tower)
  return result


def display(kernel: np.ndarray) -> np.ndarray:
  """[n, kh, kw, 3] in [0, 1]: each kernel scaled to the full range on its
  own (min -> 0, max -> 1), as cuda-convnet shows filters."""
  k = np.moveaxis(np.asarray(kernel, np.float64), -1, 0)
  low = k.min(axis=(1, 2, 3), keepdims=True)
  span = np.maximum(k.max(axis=(1, 2, 3), keepdims=True) - low, 1e-30)
  return (k - low) / span


def plot(kernel: np.ndarray, summary: dict, title: str, path: str,
         columns: int = 16) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  towers = summary['towers']
  images = np.split(display(kernel), len(towers))
  cols = min(columns, len(images[0]))
  rows = -(-len(images[0]) // cols)
  fig = Figure(figsize=(0.75 * cols + 0.4, len(towers) * (0.85 * rows + 0.6)
                        + 0.5), layout='constrained')
  fig.suptitle(title, fontsize='medium')
  for sub, tower, block in zip(np.atleast_1d(fig.subfigures(len(towers), 1)),
                               towers, images):
    sub.suptitle(f'tower {tower["tower"]}: {tower["kernels"]} kernels, colour '
                 f'score {tower["colour"]:.2f} ± {tower["colour_std"]:.2f}, '
                 f'smoothness {tower["smoothness"]:.2f} ± '
                 f'{tower["smoothness_std"]:.2f}', fontsize='small')
    axes = np.atleast_2d(sub.subplots(rows, cols, squeeze=False))
    for i, ax in enumerate(axes.flat):
      ax.set_axis_off()
      if i < len(block):
        ax.imshow(block[i], interpolation='nearest')
        ax.set_title(f'{tower["scores"][i]:.2f} / '
                     f'{tower["smoothness_scores"][i]:.2f}', fontsize=6, pad=1)
  fig.savefig(path, dpi=120)


def run_figure3(run_dir: str, workdir: str, step: int | None = None) -> dict:
  """Writes figure3.png and figure3.json; returns the JSON's content with
  the paths."""
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  config, variables, step, _ = run_loading.load_run(run_dir, step)
  kernel = np.asarray(variables['params']['conv1']['kernel'])
  std = config.normalization.std
  pixels = kernel / np.asarray(std, np.float64)[:, None]
  towers = models.model_from_config(config.model).groups
  result = {'run': os.path.abspath(run_dir), 'step': step,
            'variant': config.model.variant, 'groups': towers,
            **summarize(kernel, towers, std)}
  os.makedirs(workdir, exist_ok=True)
  paths = {k: os.path.join(os.path.abspath(workdir), f'figure3.{k}')
           for k in ('png', 'json')}
  plot(pixels, result, f'conv1 of {result["run"]} at step {step} '
       f'(above each kernel: colour / smoothness; colour of '
       f'random weights {CHANCE:.2f})', paths['png'])
  common.write_json(paths['json'], result)
  return {**result, 'paths': paths}


def _report(result: dict) -> None:
  for tower in result['towers']:
    print(f'tower {tower["tower"]}: {tower["kernels"]} kernels, colour score '
          f'{tower["colour"]:.3f} ± {tower["colour_std"]:.3f} (median '
          f'{tower["colour_median"]:.3f}), smoothness '
          f'{tower["smoothness"]:.3f} ± {tower["smoothness_std"]:.3f}')
  if 'difference' in result:
    print(f'tower 2 - tower 1: {result["difference"]:+.3f} (permutation p = '
          f'{result["permutation_p"]:.4f})')


main = figure_flags.main_of(lambda: run_figure3(
    *figure_flags.values()), _report)


def run():
  """Console-script entry point (`alexnet-figure3`)."""
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top
  figure_flags.define()
  cli.run_console_script(main, __name__, figure_flags.__name__)


if __name__ == '__main__':
  run()
