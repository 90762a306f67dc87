r"""Throughput of the input pipeline alone: no model, no device transfer.

  python -m experiments.input_benchmark --config=configs/default.py \
      --output=/tmp/input_benchmark.json \
      [--config.image_size=227 --config.resize_size=256 --config.cache=False]

Builds the config's `TFDSData`, iterates `train_batches` for --warmup batches,
then times --repeats windows of --batches batches each and writes JSON with
the median images/s, images/s per core (images/s over the cores this process
may use), every window's figure, the rate of decoding the same encoded images
and nothing else on the same cores (`decode_only_images_per_sec`) and the
pipeline's rate over it, the spread, the config and the machine's
load. On a machine shared with other jobs the wall-clock rate depends on the
share of the cores they leave; `images_per_cpu_sec` (images per second of
CPU time this process used, all threads) is what one core delivers whatever
that share. With `--config.cache=False` every image is decoded in every
epoch, which is what a dataset too large for memory (ImageNet) costs; with
`cache=True` (configs/default.py) decoded images are reused.
"""

import datetime
import json
import os
import platform
import resource
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

config_flags.DEFINE_config_file('config', None, 'A training config file.',
                                lock_config=False)
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the JSON result.')
_WARMUP = flags.DEFINE_integer('warmup', 20, 'Batches before timing.')
_BATCHES = flags.DEFINE_integer('batches', 40, 'Batches per timed window.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed windows.')
flags.mark_flags_as_required(['config', 'output'])


def cores_available() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_seconds() -> float:
  """User + system CPU time of this process, all its threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def overrides(argv) -> list[str]:
  return [a for a in argv if a.startswith('--config.')]


def benchmark(config, warmup: int, batches: int, repeats: int) -> dict:
  """Times `repeats` windows of `batches` training batches after `warmup`."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  data = input_pipeline.TFDSData(config)
  setup_s = time.perf_counter() - start
  iterator = data.train_batches(0)
  start = time.perf_counter()
  for _ in range(warmup):
    batch = next(iterator)
  warmup_s = time.perf_counter() - start
  per_batch = data.per_process_batch
  rates, cpu_rates = [], []
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
      batch = next(iterator)
    rates.append(batches * per_batch / (time.perf_counter() - start))
    cpu_rates.append(batches * per_batch / (cpu_seconds() - cpu_start))
  # float32 when lighting noise is on (added unrounded), else uint8.
  assert batch['image'].dtype in (np.uint8, np.float32)
  decode_rates = decode_only(data, batches * per_batch, repeats)
  return {
      'decode_rates': decode_rates,
      'rates': rates,
      'cpu_rates': cpu_rates,
      'setup_s': setup_s,
      'warmup_s': warmup_s,
      'per_process_batch': per_batch,
      'image_shape': list(batch['image'].shape[2:]),
      'steps_per_epoch': data.steps_per_epoch,
  }


def decode_only(data, images: int, repeats: int) -> list[float]:
  """images/s of decoding (tf.io.decode_image, nothing else) the encoded
  images the pipeline reads first in epoch 0, held in memory, with tf.data's
  parallelism on the same cores: the ceiling any decoding pipeline has."""
  from alexnet_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  tf = input_pipeline._tf()  # pylint: disable=protected-access
  table = data._table()  # pylint: disable=protected-access
  indices, _ = input_pipeline.epoch_order(
      data.num_train_examples, data.config.batch_size, 0, data.config.seed,
      1, 0)
  indices = indices[:images]
  encoded = [table.fetch(tf.constant(i, tf.int64))[0].numpy() for i in indices]
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(encoded)).repeat()
  ds = ds.map(lambda b: tf.shape(tf.io.decode_image(
      b, channels=3, expand_animations=False)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  iterator = ds.batch(64).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for _ in range(max(1, len(indices) // 64)):  # Warm-up.
    next(iterator)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(max(1, len(indices) // 64)):
      next(iterator)
    rates.append(max(1, len(indices) // 64) * 64 /
                 (time.perf_counter() - start))
  return rates


def main(argv):
  config = flags.FLAGS.config
  cores = cores_available()
  load_before = os.getloadavg()
  result = benchmark(config, _WARMUP.value, _BATCHES.value, _REPEATS.value)
  decode_rates = result.pop('decode_rates')
  load_after = os.getloadavg()
  rates = result.pop('rates')
  cpu_rates = result.pop('cpu_rates')
  median = float(np.median(rates))
  out = {
      'benchmark': 'input_pipeline',
      'config': config_flags.get_config_filename(flags.FLAGS['config']),
      'overrides': overrides(sys.argv),
      'dataset': config.dataset,
      'image_size': config.image_size,
      'resize_size': config.resize_size,
      'cache': config.cache,
      'augment': config.augment.to_dict(),
      'batch_size': result['per_process_batch'],
      'images_per_sec': median,
      'images_per_sec_per_core': median / cores,
      'images_per_sec_windows': rates,
      'images_per_sec_min': float(np.min(rates)),
      'images_per_sec_max': float(np.max(rates)),
      # Images per CPU-second of this process (all threads): what one core
      # delivers, whatever share of the cores other jobs leave us.
      'images_per_cpu_sec': float(np.median(cpu_rates)),
      'images_per_cpu_sec_windows': cpu_rates,
      'cpu_utilization': float(np.median(rates) / np.median(cpu_rates) / cores),
      # Decoding the same encoded images and nothing else, same cores.
      'decode_only_images_per_sec': float(np.median(decode_rates)),
      'decode_only_images_per_sec_windows': decode_rates,
      'pipeline_over_decode_only': median / float(np.median(decode_rates)),
      'cores': cores,
      'batches_per_window': _BATCHES.value,
      'warmup_batches': _WARMUP.value,
      'setup_s': result['setup_s'],
      'warmup_s': result['warmup_s'],
      'image_shape': result['image_shape'],
      'load_average_before': list(load_before),
      'load_average_after': list(load_after),
      'machine': platform.node(),
      'date': datetime.datetime.now().isoformat(timespec='seconds'),
  }
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  with open(_OUTPUT.value, 'w') as f:
    json.dump(out, f, indent=2)
  logging.info('%s', json.dumps(out, indent=2))
  print(f"{out['config']} {' '.join(out['overrides'])}: "
        f"{median:.0f} images/s ({median / cores:.0f} per core, {cores} "
        f"cores; windows {min(rates):.0f}-{max(rates):.0f}), batch "
        f"{out['batch_size']}; {out['images_per_cpu_sec']:.0f} images per "
        f"CPU-second; decoding alone {out['decode_only_images_per_sec']:.0f} "
        f"images/s (pipeline/decode-only "
        f"{out['pipeline_over_decode_only']:.2f}); load "
        f"{load_before[0]:.1f}->{load_after[0]:.1f}")


if __name__ == '__main__':
  app.run(main)
