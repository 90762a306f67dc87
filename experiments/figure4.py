r"""The paper's Figure 4: eval images with their top-5 classes, and eval images
with the training images nearest to them in the last hidden layer.

  python -m experiments.figure4 --run=/tmp/alexnet_default --workdir=/tmp/figure4 \
      [--step=S] [--examples=8] [--queries=5] [--layer=fc7]

Reads the run's checkpoint (the newest, or --step) and its recorded config
and writes `figure4.png` and `figure4.json` into --workdir (printing where):
* left, the first --examples images of the eval split with the model's
  top-5 probabilities (the true class's bar in red, the others in blue);
* right, the --queries eval images after them, each followed by the
  `NEIGHBOURS` (6) training images nearest to it in fc7's activations
  (after the ReLU; `alexnet_jax.tools.features`), by Euclidean distance, as the
  paper measures it.

Images are read as evaluation reads them (the resized square's centre crop,
no augmentation), the training split too: the same pipeline with the
training split in place of the eval split, without caching, so memory holds
one batch (`config.eval_batch_size`) and the running nearest 6 per query.
Each batch goes through one compiled function (features, then the squared
distance to every query, computed as a difference, not expanded); the
search is exact. A training image's index is its position in the split as
the pipeline reads it (one process). figure4.json also gives the share of
neighbours whose class is the query's (`neighbour_label_agreement`).
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

from absl import flags
import numpy as np

from . import common
from . import figure_flags
from . import run_loading

NEIGHBOURS = 6
TOP = 5

_EXAMPLES = flags.DEFINE_integer(
    'examples', 8, 'Eval images shown with their top-5 (the first ones).')
_QUERIES = flags.DEFINE_integer(
    'queries', 5, 'Eval images (those after the examples) shown with their '
    'nearest training images.')
_LAYER = flags.DEFINE_string(
    'layer', 'fc7', 'The layer whose activations are compared (conv1..fc7; '
    'the paper: fc7, the last hidden layer).')


def squared_distances(queries, points):
  """[Q, B] squared Euclidean distances of queries [Q, D] to points [B, D],
  as differences (no |q|^2 + |x|^2 - 2 q.x cancellation)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp.sum((queries[:, None, :] - points[None, :, :])**2, axis=-1)


def merge_top_k(best_d: np.ndarray, best_i: np.ndarray, d: np.ndarray,
                i: np.ndarray, k: int):
  """The k nearest of the kept (best_d, best_i) [Q, k'] and a batch's
  (d [Q, B], i [B]), nearest first, ties by index; returns (distances,
  indices, taken), taken[q, j] < k' naming a kept slot, else k' + a
  position in the batch."""
  cand_d = np.concatenate([best_d, d], axis=1)
  cand_i = np.concatenate([best_i, np.broadcast_to(i, d.shape)], axis=1)
  taken = np.stack([np.lexsort((ci, cd))[:k]
                    for cd, ci in zip(cand_d, cand_i)])
  return (np.take_along_axis(cand_d, taken, 1),
          np.take_along_axis(cand_i, taken, 1), taken)


def nearest(distances: Callable, batches: Iterable[dict], num_queries: int,
            k: int = NEIGHBOURS) -> dict[str, np.ndarray]:
  """The k nearest examples of `batches` to each query, streamed.

  `batches` yields {'image', 'label', 'index', 'mask'} (mask 0: padding);
  `distances(image)` -> [num_queries, B] squared distances. Returns
  'distance' (Euclidean), 'index', 'label' [Q, k] and 'image' [Q, k, ...]:
  the k examples kept, nearest first.
  """
  best_d = np.full((num_queries, 0), np.inf)
  best_i = np.zeros((num_queries, 0), np.int64)
  kept_labels = kept_images = None
  for batch in batches:
    d = np.asarray(distances(batch['image']), np.float64)
    d = np.where(np.asarray(batch['mask'])[None] > 0, d, np.inf)
    before = best_d.shape[1]
    best_d, best_i, taken = merge_top_k(best_d, best_i, d, batch['index'], k)

    def pick(kept, new, taken=taken, before=before):
      return np.stack([np.stack([kept[q, t] if t < before else new[t - before]
                                 for t in row]) for q, row in enumerate(taken)])
    kept_labels = pick(kept_labels, np.asarray(batch['label']))
    kept_images = pick(kept_images, np.asarray(batch['image']))
  if best_d.shape[1] < k or not np.isfinite(best_d).all():
    raise ValueError(f'fewer than {k} examples to search.')
  return {'distance': np.sqrt(best_d), 'index': best_i, 'label': kept_labels,
          'image': kept_images}


def eval_style_batches(config, split: str) -> Iterator[dict]:
  """Every example of `split` once, as evaluation reads it (centre crops, no
  augmentation, not cached), in full batches of config.eval_batch_size:
  {'image', 'label', 'mask', 'index'} (index: position in the split)."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.eval_split, config.ten_crop, config.cache = split, False, False
  config.normalization.mean_from_data = False  # The recorded mean is used.
  flat = lambda x: x.reshape((-1,) + x.shape[2:])  # Drop the device axis.
  position = 0
  for batch in input_pipeline.create_data(config).eval_batches():
    batch = {k: flat(v) for k, v in batch.items()}
    batch['index'] = position + np.arange(len(batch['label']))
    position += int(batch['mask'].sum())
    yield batch


def first_examples(config, count: int) -> dict[str, np.ndarray]:
  """The first `count` examples of the eval split."""
  images, labels = [], []
  for batch in eval_style_batches(config, config.eval_split):
    real = batch['mask'] > 0
    images.append(batch['image'][real])
    labels.append(batch['label'][real])
    if sum(map(len, labels)) >= count:
      break
  images, labels = np.concatenate(images), np.concatenate(labels)
  if len(labels) < count:
      raise run_loading.RunError(
        f'--examples plus --queries is {count}, but the '
        f'{config.eval_split!r} split has {len(labels)} images.')
  return {'image': images[:count], 'label': labels[:count]}


def _top(probs: np.ndarray, names, k: int = TOP) -> list[dict]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [{'label': int(c), 'name': names[c], 'probability': float(probs[c])}
          for c in order]


def _shown(image: np.ndarray) -> np.ndarray:
  """uint8 crops as they are; crops less the mean image (float) scaled to
  [0, 1] on their own."""
  if image.dtype == np.uint8:
    return image
  low, high = image.min(), image.max()
  return (image - low) / max(high - low, 1e-30)


def _plot_examples(sub, examples: list[dict], images, cols: int) -> None:
  """Each example above the bars of its top-5 (the true class in red)."""
  rows = -(-len(examples) // cols)
  sub.suptitle(f'eval images, top-{TOP} (true class in red)', fontsize='small')
  axes = sub.subplots(2 * rows, cols, squeeze=False,
                      height_ratios=[1.6, 1.0] * rows)
  for ax in axes.flat:
    ax.set_axis_off()
  for n, (example, image) in enumerate(zip(examples, images)):
    r, c = divmod(n, cols)
    axes[2 * r, c].imshow(_shown(image))
    axes[2 * r, c].set_title(example['name'], fontsize=8)
    bars = axes[2 * r + 1, c]
    bars.set_axis_on()
    top = example['top5'][::-1]
    bars.barh(range(len(top)), [t['probability'] for t in top],
              color=['C3' if t['label'] == example['label'] else 'C0'
                     for t in top])
    bars.set_yticks(range(len(top)), [t['name'] for t in top], fontsize=7)
    bars.set_xlim(0, 1)
    bars.tick_params(axis='x', labelsize=6)


def _plot_queries(sub, queries: list[dict], images, neighbour_images) -> None:
  """A row per query: the query (framed), then its neighbours (names in red
  where the class differs from the query's)."""
  sub.suptitle(f'query, then its {NEIGHBOURS} nearest training images',
               fontsize='small')
  grid = sub.subplots(len(queries), NEIGHBOURS + 1, squeeze=False)
  for row, query, image, near in zip(grid, queries, images, neighbour_images):
    row[0].imshow(_shown(image))
    row[0].set_title(f'eval {query["index"]}: {query["name"]}', fontsize=7)
    for side in row[0].spines.values():
      side.set(color='C2', linewidth=2)
    for ax, neighbour, n_image in zip(row[1:], query['neighbours'], near):
      ax.imshow(_shown(n_image))
      ax.set_title(f'{neighbour["name"]} {neighbour["distance"]:.3g}',
                   fontsize=7, color='k' if neighbour['label'] ==
                   query['label'] else 'C3')
    for ax in row:
      ax.set_xticks([])
      ax.set_yticks([])


def plot(examples: list[dict], example_images, queries: list[dict],
         query_images, neighbour_images, title: str, path: str) -> None:
  """figure4.png: the examples (if any) on the left, the queries right."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  cols = min(4, len(examples))
  rows = -(-len(examples) // cols) if cols else 0
  widths = [3.0 * cols] * bool(cols) + [1.3 * (NEIGHBOURS + 1)]
  fig = Figure(figsize=(sum(widths), max(2.6 * rows, 1.25 * len(queries))
                        + 0.6), layout='constrained')
  fig.suptitle(title, fontsize='medium')
  subs = np.atleast_1d(fig.subfigures(1, len(widths), width_ratios=widths))
  if cols:
    _plot_examples(subs[0], examples, example_images, cols)
  _plot_queries(subs[-1], queries, query_images, neighbour_images)
  fig.savefig(path, dpi=110)


def run_figure4(run_dir: str, workdir: str, step: int | None = None,
                examples: int = 8, queries: int = 5,
                layer: str = 'fc7') -> dict:
  """Writes figure4.png and figure4.json; returns the JSON's content with
  the paths."""
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import features  # pylint: disable=g-import-not-at-top
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  from alexnet_jax import steps  # pylint: disable=g-import-not-at-top
  if examples < 0 or queries < 1:
    raise run_loading.RunError(f'--examples={examples}, --queries={queries}: '
                               'expected >= 0 and >= 1.')
  if layer not in features.LAYERS:
    raise run_loading.RunError(f'--layer={layer!r}; expected one of '
                               f'{features.LAYERS}.')
  config, variables, step, names = run_loading.load_run(run_dir, step)
  if config.dataset == 'fake':
    raise run_loading.RunError(f'{run_dir} trained on random images '
                               "(dataset='fake'): there are none to show.")
  model = models.model_from_config(config.model)
  normalize = steps.Normalization.from_config(config.normalization)

  def embed(params, images):
    x = normalize(images)
    f = features.features(model, {'params': params}, x, layer)
    return f.reshape((f.shape[0], -1))

  @jax.jit
  def classify(params, images):
    probs = jax.nn.softmax(model.apply({'params': params}, normalize(images),
                                       train=False))
    return probs, embed(params, images)

  @jax.jit
  def distances(params, images, query_features):
    return squared_distances(query_features, embed(params, images))

  params = jax.device_put(variables['params'])
  shown = first_examples(config, examples + queries)
  probs, feats = map(np.asarray, classify(params, shown['image']))
  found = nearest(lambda images: distances(params, images, feats[examples:]),
                  eval_style_batches(config, config.train_split), queries)
  describe = lambda i, label: {'index': int(i), 'label': int(label),
                               'name': names[label]}
  rows = [{**describe(i, shown['label'][i]), 'top5': _top(probs[i], names)}
          for i in range(examples + queries)]
  for q, row in enumerate(rows[examples:]):
    row['neighbours'] = [
        {**describe(i, label), 'distance': float(d)} for i, label, d in zip(
            found['index'][q], found['label'][q], found['distance'][q])]
  agree = np.mean([n['label'] == r['label'] for r in rows[examples:]
                   for n in r['neighbours']])
  result = {'run': os.path.abspath(run_dir), 'step': step, 'layer': layer,
            'train_split': config.train_split,
            'eval_split': config.eval_split, 'examples': rows[:examples],
            'queries': rows[examples:],
            'neighbour_label_agreement': float(agree)}
  os.makedirs(workdir, exist_ok=True)
  paths = {k: os.path.join(os.path.abspath(workdir), f'figure4.{k}')
           for k in ('png', 'json')}
  plot(rows[:examples], shown['image'][:examples], rows[examples:],
       shown['image'][examples:], found['image'],
       f'{result["run"]} at step {step}: {layer} neighbours by Euclidean '
       f'distance ({100 * agree:.0f}% share the query\'s class)', paths['png'])
  common.write_json(paths['json'], result)
  return {**result, 'paths': paths}


def _report(result: dict) -> None:
  print(f'{result["layer"]} neighbours sharing the query\'s class: '
        f'{100 * result["neighbour_label_agreement"]:.0f}%')


main = figure_flags.main_of(lambda: run_figure4(
    *figure_flags.values(), _EXAMPLES.value, _QUERIES.value, _LAYER.value),
                            _report)


def run():
  """Console-script entry point (`alexnet-figure4`)."""
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top
  figure_flags.define()
  cli.run_console_script(main, __name__, figure_flags.__name__)


if __name__ == '__main__':
  run()
