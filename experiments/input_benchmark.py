r"""Throughput of the input pipeline alone, beside the JPEG-decode ceiling.

  python -m experiments.input_benchmark --config=configs/default.py \
      --output=/tmp/input_benchmark.json \
      [--config.image_size=227 --config.resize_size=256 --config.cache=False] \
      [--imagenet_like=1000] [--crops_per_call=1,16]

Three cases, each timed as the training pipeline (`InputPipeline.train_batches`)
and as its ceiling, decoding the very same JPEG bytes and nothing else
(`tf.io.decode_jpeg` of the whole image, in the same tf.data form: parallel
map, batches) on the same cores. The ratio pipeline / ceiling says how close
the pipeline is to the limit the decoder sets.

  * `config`: the config as given (with configs/default.py and the overrides
    above: the embedded dataset's 256x256 JPEGs, the paper's preparation).
  * `imagenet_like` (--imagenet_like=N > 0): N generated JPEGs at about
    ImageNet's size (widths around 400, heights around 350, quality 90),
    written once into --imagenet_like_dir and read as an image folder with
    the same config otherwise.
  * `imagenet_like_prepared` (with --prepared, the default): the same JPEGs
    prepared once as `alexnet_jax.tools.prepare_dataset` writes them (the
    central resize_size square, quality 95, array_record shards), the route
    the docs advise for ImageNet.

With --crops_per_call the pipeline is also timed making that many training
crops per tf.data call (in place of `batching.CROPS_PER_CALL`; the batch's
largest divisor up to it), as a variant beside the pipeline as it is. The ceiling
reads the records in the pipeline's groups (one Python call per group for
array_record sets).

Windows of the pipeline(s) and of the ceiling alternate, so a change in the
machine's load hits all; each window has an iterator of its own, closed
after it (so the other's background threads never compete with it), and
starts with --drain untimed batches that fill its buffers. Reported: the median images/s,
per core (over the cores this process may use), and images per CPU-second
(all threads of this process), which moves less with other jobs' load.
"""

import datetime
import gc
import importlib.metadata
import json
import os
import platform
import resource
import sys
import time

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np

from alexnet_jax import cli

config_flags.DEFINE_config_file('config', None, 'A training config file.',
                                lock_config=False)
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the JSON result.')
_WARMUP = flags.DEFINE_integer('warmup', 20, 'Batches before timing.')
_BATCHES = flags.DEFINE_integer('batches', 40, 'Batches per timed window.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed windows of each kind.')
_DRAIN = flags.DEFINE_integer(
    'drain', 8, 'Untimed batches at the start of each window.')
_CROPS_PER_CALL = flags.DEFINE_list(
    'crops_per_call', [],
    'Also time the pipeline making this many training crops per tf.data '
    'call (e.g. 1,16), in windows alternating with the others.')
flags.register_validator(
    'crops_per_call',
    lambda values: all(v.isdecimal() and int(v) > 0 for v in values),
    '--crops_per_call takes positive whole numbers, e.g. 1,16.')
_IMAGENET_LIKE = flags.DEFINE_integer(
    'imagenet_like', 1000,
    'Generated ImageNet-sized JPEGs for the second case; 0 skips it.')
_IMAGENET_LIKE_DIR = flags.DEFINE_string(
    'imagenet_like_dir', None,
    'Where the generated JPEGs are written (once; reused if complete); '
    'default: imagenet_like/ beside --output.')
_PREPARED = flags.DEFINE_boolean(
    'prepared', True,
    'A third case: the generated JPEGs prepared once by prepare_dataset '
    '(resize_size squares, array_record), next to --imagenet_like_dir.')
flags.mark_flags_as_required(['config', 'output'])

# About ImageNet's sizes: most images are landscape, around 400x350 after the
# common 500-pixel cap; quality 90 like the embedded set.
IMAGENET_LIKE_WIDTH = (400, 60)  # Mean and std, pixels.
IMAGENET_LIKE_HEIGHT = (350, 50)
IMAGENET_LIKE_QUALITY = 90


def cores_available() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_seconds() -> float:
  """User + system CPU time of this process, all its threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def library_versions() -> dict[str, str | None]:
  """The versions of the libraries that decode and resize."""
  versions = {}
  for name in ('tensorflow', 'tensorflow-cpu', 'opencv-python-headless',
               'opencv-python'):
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def overrides(argv) -> list[str]:
  return [a for a in argv if a.startswith('--config.')]


def imagenet_like_folder(root: str, count: int, seed: int = 0) -> str:
  """Writes `count` JPEGs at ImageNet-like sizes into root/<class>/ (the
  embedded dataset's scenes, rendered larger), unless already complete."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
  marker = os.path.join(root, 'COMPLETE')
  want = {'count': count, 'seed': seed, 'quality': IMAGENET_LIKE_QUALITY,
          'width': IMAGENET_LIKE_WIDTH, 'height': IMAGENET_LIKE_HEIGHT}
  try:
    with open(marker) as f:
      if json.load(f) == json.loads(json.dumps(want)):
        return root
  except (OSError, ValueError):
    pass
  start = time.perf_counter()
  rng = np.random.default_rng(seed)
  for index in range(count):
    width = int(np.clip(rng.normal(*IMAGENET_LIKE_WIDTH), 250, 500))
    height = int(np.clip(rng.normal(*IMAGENET_LIKE_HEIGHT), 200, 500))
    label = shapes.example_label(index)
    image = shapes.render_image(shapes.example_rng(seed, index), label,
                                max(width, height))[:height, :width]
    folder = os.path.join(root, shapes.CLASS_NAMES[label])
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(image).save(os.path.join(folder, f'{index:06d}.jpg'),
                                quality=IMAGENET_LIKE_QUALITY)
  with open(marker, 'w') as f:
    json.dump(want, f)
  logging.info('Wrote %d ImageNet-sized JPEGs to %s in %.0f s.', count, root,
               time.perf_counter() - start)
  return root


def prepared_config(config):
  """`config` reading its dataset as `alexnet_jax.tools.prepare_dataset`
  writes it (resize_size squares as array_record shards), prepared once into
  <dataset_dir>_prepared_<resize_size> (a re-run skips what exists)."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from alexnet_jax.input_pipeline import prepare  # pylint: disable=g-import-not-at-top
  out = config.copy_and_resolve_references()
  out.dataset = 'tfds_directory'
  out.dataset_dir = prepare.prepare(
      input_pipeline.DataOptions.from_config(config),
      f'{config.dataset_dir}_prepared_{config.resize_size}')
  return out


def decode_only(data):
  """Batches of this process's training images, in the pipeline's order and
  read the pipeline's way, decoded whole and reduced to one number each:
  the decoder's work and nothing else."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  tf = data.tf
  table = data.train_table()
  indices, _ = input_pipeline.epoch_order(
      data.num_train_examples, data.options.batch_size, 0, data.options.seed,
      jax.process_count(), jax.process_index())

  def decode(group):  # Read in groups, as the pipeline reads.
    images, _ = table.fetch_many(group)
    # One number of each image keeps its decode alive.
    return tf.stack([tf.cast(tf.io.decode_jpeg(i, channels=3)[0, 0, 0],
                             tf.int32) for i in images])

  size = _group_size(data)
  ds = tf.data.Dataset.from_tensor_slices(indices.reshape(-1, size)).repeat()
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(data.per_process_batch // size).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()


def _group_size(data) -> int:
  """Training crops the pipeline makes per tf.data call."""
  from alexnet_jax.input_pipeline import batching  # pylint: disable=g-import-not-at-top
  return batching.group_size(data.per_process_batch, batching.CROPS_PER_CALL)


def _window(make, batches: int, drain: int, per_batch: int):
  """(images/s, images per CPU-second) over `batches` batches of a fresh
  iterator from `make()`, after `drain` untimed ones. The iterator is closed
  after, so its background threads never run beside the other's window."""
  iterator = make()
  for _ in range(drain):
    next(iterator)
  start, cpu_start = time.perf_counter(), cpu_seconds()
  for _ in range(batches):
    next(iterator)
  wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
  del iterator
  gc.collect()
  return batches * per_batch / wall, batches * per_batch / cpu


def benchmark_case(config, warmup: int, batches: int, repeats: int,
                   drain: int, crops_per_call: list[int]) -> dict:
  """The pipeline (as it is, and at each of `crops_per_call`) and the decode
  ceiling of one config, windows alternating."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from alexnet_jax.input_pipeline import batching  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  data = input_pipeline.create_data(config)
  default = batching.CROPS_PER_CALL
  batch = next(data.train_batches(0))
  setup_s = time.perf_counter() - start
  assert batch['image'].dtype == np.uint8
  per_batch = data.per_process_batch
  steps = data.steps_per_epoch
  # Each pipeline by the group size it runs at; a variant that comes to the
  # pipeline's own size is not timed twice.
  pipelines = {'pipeline': _group_size(data)}
  for c in crops_per_call:
    size = batching.group_size(data.per_process_batch, c)
    if size != pipelines['pipeline']:
      pipelines[f'pipeline_crops_per_call_{size}'] = size
  runs = {name: [] for name in [*pipelines, 'decode_only']}
  for k in range(repeats):
    # Each pipeline window starts somewhere else in the data, as a resume
    # would; the first `warmup` batches of the run are untimed as well.
    first = (k * (batches + drain)) % steps
    untimed = drain + (warmup if k == 0 else 0)
    for name, crops in pipelines.items():
      batching.CROPS_PER_CALL = crops  # The variant, for this window.
      try:
        runs[name].append(_window(
            lambda first=first: data.train_batches(first), batches, untimed,
            per_batch))
      finally:
        batching.CROPS_PER_CALL = default
    runs['decode_only'].append(_window(lambda: decode_only(data), batches,
                                       untimed, per_batch))
  cores = cores_available()
  out = {'dataset': config.dataset, 'dataset_dir': config.get('dataset_dir'),
         'image_shape': list(batch['image'].shape[2:]),
         'per_process_batch': per_batch, 'setup_s': setup_s, 'cores': cores}
  for name, windows in runs.items():
    rates = [r for r, _ in windows]
    out[name] = {
        'images_per_sec': float(np.median(rates)),
        'images_per_sec_per_core': float(np.median(rates)) / cores,
        'images_per_cpu_sec': float(np.median([c for _, c in windows])),
        'windows': rates,
    }
  for name, crops in pipelines.items():
    out[name]['crops_per_call'] = crops
    out[name]['ratio_to_decode_only'] = (
        out[name]['images_per_sec'] / out['decode_only']['images_per_sec'])
  out['ratio_to_decode_only'] = out['pipeline']['ratio_to_decode_only']
  return out


def main(argv):
  del argv
  config = flags.FLAGS.config
  cases = {'config': config}
  if _IMAGENET_LIKE.value > 0:
    imagenet_like = config.copy_and_resolve_references()
    imagenet_like.dataset = 'image_folder'
    imagenet_like.dataset_dir = imagenet_like_folder(
        _IMAGENET_LIKE_DIR.value or os.path.join(
            os.path.dirname(os.path.abspath(_OUTPUT.value)), 'imagenet_like'),
        _IMAGENET_LIKE.value)
    imagenet_like.validation_fraction = 0.1
    cases['imagenet_like'] = imagenet_like
    if _PREPARED.value:
      cases['imagenet_like_prepared'] = prepared_config(imagenet_like)
  load_before = os.getloadavg()
  crops_per_call = [int(c) for c in _CROPS_PER_CALL.value]
  results = {name: benchmark_case(c, _WARMUP.value, _BATCHES.value,
                                  _REPEATS.value, _DRAIN.value, crops_per_call)
             for name, c in cases.items()}
  out = {
      'benchmark': 'input_pipeline',
      'config': config_flags.get_config_filename(flags.FLAGS['config']),
      'overrides': overrides(sys.argv),
      'flags': {f.name: f.value for f in (_WARMUP, _BATCHES, _REPEATS, _DRAIN,
                                           _CROPS_PER_CALL, _IMAGENET_LIKE,
                                           _PREPARED)},
      'image_size': config.image_size,
      'resize_size': config.resize_size,
      'cache': config.cache,
      'augment': config.augment.to_dict(),
      'cases': results,
      'batches_per_window': _BATCHES.value,
      'windows': _REPEATS.value,
      'load_average_before': list(load_before),
      'load_average_after': list(os.getloadavg()),
      'machine': platform.node(),
      'processor': platform.processor() or platform.machine(),
      'libraries': library_versions(),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
  }
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  with open(_OUTPUT.value, 'w') as f:
    json.dump(out, f, indent=2)
  print(f"{out['config']} {' '.join(out['overrides'])}; "
        f"load {load_before[0]:.1f}->{out['load_average_after'][0]:.1f}")
  print('| case | pipeline images/s | per core | decode-only images/s | '
        'per core | pipeline / decode-only |')
  print('|---|---|---|---|---|---|')
  for name, r in results.items():
    d = r['decode_only']
    for key, p in r.items():
      if not key.startswith('pipeline'):
        continue
      label = (name if key == 'pipeline' else
               f"{name}, crops per call: {p['crops_per_call']}")
      print(f"| {label} | {p['images_per_sec']:.0f} | "
            f"{p['images_per_sec_per_core']:.0f} | {d['images_per_sec']:.0f} | "
            f"{d['images_per_sec_per_core']:.0f} | "
            f"{p['ratio_to_decode_only']:.2f} |")


def run():
  """Console-script entry point (`alexnet-input-benchmark`)."""
  cli.run_console_script(main, __name__)


if __name__ == '__main__':
  run()
