"""The paper's Figures 3 and 4 as commands (experiments.figure3, figure4): the
colour score on hand-made kernels, the streamed neighbour search against a
brute-force NumPy search, and both commands on small trained runs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from conftest import ROOT
from experiments import figure3
from experiments import figure4
from test_data_order import shapes_dir  # pylint: disable=unused-import


def _kernels(*channels):
  """[11, 11, 3, n] from n [11, 11, 3] kernels."""
  return np.stack(channels, axis=-1)


_PATTERN = np.random.default_rng(0).normal(size=(11, 11))


def test_colour_score_of_hand_made_kernels():
  grey = np.repeat(_PATTERN[..., None], 3, axis=-1)
  red = np.stack([_PATTERN, 0 * _PATTERN, 0 * _PATTERN], axis=-1)
  red_green = np.stack([_PATTERN, -_PATTERN, 0 * _PATTERN], axis=-1)
  scores = figure3.colour_scores(_kernels(grey, red, red_green))
  # By hand: a grey kernel has no energy off (1, 1, 1); one channel alone,
  # v = (a, 0, 0), keeps |v - a/3 (1, 1, 1)|^2 = 2/3 a^2 of a^2; R - G sums
  # to 0 at every position, so all of it is off grey.
  np.testing.assert_allclose(scores, [0.0, 2 / 3, 1.0], atol=1e-12)
  # Grey in pixel space: the weights on the normalized input are the grey
  # kernel times each channel's std.
  std = (58.4, 57.1, 30.0)
  scaled = grey * np.asarray(std)
  np.testing.assert_allclose(
      figure3.colour_scores(_kernels(scaled), std), [0.0], atol=1e-12)
  assert figure3.colour_scores(_kernels(scaled))[0] > 0.01


def test_luma_kernel_scores_a_quarter():
  # v = (0.299, 0.587, 0.114): mean 1/3, |v|^2 = 0.44697,
  # |v - 1/3|^2 = 0.44697 - 3 (1/3)^2 = 0.11364: 0.2542.
  luma = _PATTERN[..., None] * np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(figure3.colour_scores(_kernels(luma)),
                             [(0.44697 - 1 / 3) / 0.44697], atol=1e-4)


def test_smoothness_of_hand_made_kernels():
  checker = (-1.0) ** np.add.outer(np.arange(11), np.arange(11))
  constant = np.ones((11, 11))
  channels = lambda k: np.repeat(k[..., None], 3, axis=-1)
  scores = figure3.smoothness_scores(_kernels(channels(constant),
                                              channels(checker)))
  # By hand: a constant kernel's neighbours never differ (1); a
  # checkerboard's differ by 2v, |2v|^2 = 2 (|v|^2 + |v|^2) (-1).
  np.testing.assert_allclose(scores, [1.0, -1.0], atol=1e-12)
  noise = np.random.default_rng(4).normal(size=(11, 11, 3, 2000))
  assert abs(figure3.smoothness_scores(noise).mean()) < 0.01


def test_random_kernels_score_chance():
  kernels = np.random.default_rng(1).normal(size=(11, 11, 3, 2000))
  assert abs(figure3.colour_scores(kernels).mean() - figure3.CHANCE) < 0.005


def test_tower_order_and_spread():
  rng = np.random.default_rng(2)
  noise = lambda: 0.2 * rng.normal(size=(11, 11, 3))
  grey = [np.repeat(rng.normal(size=(11, 11, 1)), 3, -1) + noise()
          for _ in range(6)]
  colour = [np.stack([p, -p, 0 * p], -1) + noise()
            for p in rng.normal(size=(6, 11, 11))]
  summary = figure3.summarize(_kernels(*grey, *colour), 2, (1.0, 1.0, 1.0))
  first, second = summary['towers']
  assert (first['tower'], first['kernels'], second['kernels']) == (1, 6, 6)
  assert first['colour'] < 0.1 < 0.9 < second['colour']
  assert summary['difference'] == pytest.approx(
      second['colour'] - first['colour'])
  assert summary['permutation_p'] < 0.01
  # Swapped, the order follows the kernels.
  swapped = figure3.summarize(_kernels(*colour, *grey), 2, (1.0, 1.0, 1.0))
  assert swapped['towers'][0]['colour'] > swapped['towers'][1]['colour']
  # One tower: one entry, and no difference to take.
  single = figure3.summarize(_kernels(*grey, *colour), 1, (1.0, 1.0, 1.0))
  assert len(single['towers']) == 1 and 'difference' not in single
  assert single['towers'][0]['colour_std'] == pytest.approx(
      np.std(figure3.colour_scores(_kernels(*grey, *colour)), ddof=1))


def test_permutation_p_of_equal_towers_is_one():
  a = np.array([0.2, 0.4, 0.6])
  assert figure3.permutation_p(a, a[::-1], permutations=200) == 1.0


def test_streamed_search_equals_brute_force():
  rng = np.random.default_rng(3)
  points = rng.normal(size=(53, 7)).astype(np.float32)
  points[40] = points[12]  # A tie: the smaller index first.
  queries = np.concatenate([rng.normal(size=(3, 7)), points[12:13]]).astype(
      np.float32)
  labels = np.arange(53) % 5
  batch = 10

  def batches():  # Padded to full batches, as the pipeline pads.
    for start in range(0, 60, batch):
      index = np.arange(start, start + batch)
      real = index < len(points)
      at = np.minimum(index, len(points) - 1)
      # Padding at a query: found unless masked.
      yield {'image': np.where(real[:, None], points[at], queries[0]),
             'label': labels[at], 'index': index,
             'mask': real.astype(np.float32)}

  distances = jax.jit(lambda x: figure4.squared_distances(queries, x))
  found = figure4.nearest(distances, batches(), len(queries), k=6)

  brute = np.sqrt(((queries[:, None].astype(np.float64) - points[None])**2)
                  .sum(-1))
  want = np.stack([np.lexsort((np.arange(53), row))[:6] for row in brute])
  np.testing.assert_array_equal(found['index'], want)
  assert list(want[3][:2]) == [12, 40]
  np.testing.assert_allclose(found['distance'],
                             np.take_along_axis(brute, want, 1), atol=1e-5)
  np.testing.assert_array_equal(found['label'], labels[want])
  np.testing.assert_array_equal(found['image'], points[want])


# The commands, on runs trained by the training command.


def _train(workdir, data_dir, *extra):
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', f'--workdir={workdir}',
       '--config=configs/default.py', f'--config.data_dir={data_dir}',
       '--config.model.width=0.05', '--config.resize_size=72',
       '--config.batch_size=8', '--config.eval_batch_size=8',
       '--config.log_every_steps=2', '--config.num_train_steps=4', *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]


def _command(name, *args):
  return subprocess.run([sys.executable, '-m', f'experiments.{name}', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)


def _png_size(path):
  with Image.open(path) as image:
    assert image.format == 'PNG'
    return image.size


@pytest.mark.slow
@pytest.mark.parametrize('variant,towers,kernels', [
    ('paper', 2, 2), ('owt', 1, 3)])  # conv1: 96 or 64 maps at width 0.05.
def test_both_commands_on_a_trained_run(shapes_dir, tmp_path, variant, towers,
                                        kernels):
  run = tmp_path / 'run'
  _train(run, shapes_dir, f'--config.model.variant={variant}')

  out = _command('figure3', f'--run={run}', f'--workdir={tmp_path / "f3"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Wrote {tmp_path / "f3" / "figure3.png"}' in out.stdout
  with open(tmp_path / 'f3' / 'figure3.json') as f:
    result = json.load(f)
  assert [t['tower'] for t in result['towers']] == list(range(1, towers + 1))
  assert [t['kernels'] for t in result['towers']] == [kernels] * towers
  assert result['step'] == 4
  assert all(0 <= s <= 1 for t in result['towers'] for s in t['scores'])
  width, height = _png_size(tmp_path / 'f3' / 'figure3.png')
  assert width > 100 and height > 100

  out = _command('figure4', f'--run={run}', f'--workdir={tmp_path / "f4"}',
                 '--examples=3', '--queries=2')
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Wrote {tmp_path / "f4" / "figure4.png"}' in out.stdout
  with open(tmp_path / 'f4' / 'figure4.json') as f:
    result = json.load(f)
  assert [e['index'] for e in result['examples']] == [0, 1, 2]
  assert [q['index'] for q in result['queries']] == [3, 4]
  for row in result['examples'] + result['queries']:
    assert len(row['top5']) == 5
    probs = [t['probability'] for t in row['top5']]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
  for query in result['queries']:
    near = query['neighbours']
    assert len(near) == 6 and len({n['index'] for n in near}) == 6
    assert all(0 <= n['index'] < 48 for n in near)  # _SmallShapes' train.
    distances = [n['distance'] for n in near]
    assert distances == sorted(distances) and distances[0] > 0
  assert _png_size(tmp_path / 'f4' / 'figure4.png')[0] > 100

  out = _command('figure3', f'--run={run}', f'--workdir={tmp_path / "x"}',
                 '--step=999')
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      f'error: --step=999: {run} has checkpoints at steps [4].')
  assert 'Traceback' not in out.stderr


@pytest.mark.parametrize('examples', [0, 5])
def test_figure4_plot_with_and_without_examples(tmp_path, examples):
  rng = np.random.default_rng(5)
  images = lambda *shape: rng.integers(0, 256, shape + (9, 9, 3), np.uint8)
  row = lambda i: {'index': i, 'label': i % 3, 'name': f'c{i % 3}',
                   'top5': [{'label': c, 'name': f'c{c}', 'probability': p}
                            for c, p in ((0, 0.7), (1, 0.2), (2, 0.1))]}
  queries = [{**row(i), 'neighbours': [{'index': j, 'label': j % 3,
                                        'name': f'c{j % 3}', 'distance': j}
                                       for j in range(6)]} for i in range(2)]
  path = tmp_path / 'f.png'
  figure4.plot([row(i) for i in range(examples)], images(examples), queries,
               images(2), images(2, 6), 'title', str(path))
  width, height = _png_size(path)
  assert width > 100 and height > 100
