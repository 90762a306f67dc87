r"""Training and inference throughput of AlexNet on random data made on the device.

  python -m experiments.benchmark --output=/tmp/bench.json \
      --batch_sizes=32,256 --dtypes=float32,bfloat16 --variants=paper,owt \
      --conv_impls=split,xla --conv1_impls=direct,space_to_depth \
      --lrn_impls=matmul,reduce_window,shift --devices=1,8 [--isolate] \
      [--parallelism=data,towers,hybrid]

Needs JAX, Flax and optax only: no TensorFlow and no ml_collections is
imported, so it runs unchanged on a GPU or TPU machine with JAX alone.

Each row times the real training step (`alexnet_jax.train.make_pmapped_steps`:
forward, backward, gradient pmean, the paper's momentum update) and a
forward-only inference step, pmapped over the first n local devices, on one
random uint8
batch generated on the devices. After compilation (timed on its own) and
`--warmup` untimed calls, `--windows` windows of `--steps_per_window` steps are
timed, blocking on the result (`jax.block_until_ready`); the median window
gives the step time and images/s per device. Model FLOPs are counted from the
layer table (`experiments.common.model_flops`: the paper net needs 1.45 GFLOP
forward and 4.14 GFLOP per training image) and give the model FLOP
utilisation against the device's dense peak (unknown devices, e.g. CPUs, get
none). Memory: XLA's estimate for the compiled step (arguments + outputs +
temporaries, per device) on every backend, and the allocator's
`peak_bytes_in_use` where the backend reports it (not on CPU), and the
process's peak resident memory on the host (the figure that matters on a CPU);
both are process-wide maxima, so they are per row only with `--isolate`, which
runs each row in a fresh process.

`--parallelism` runs the step split as `config.parallelism` would
(alexnet_jax.parallelism: 'data', the paper's 'towers', the 'hybrid'); each
row reports the bytes each device sends per training step, from the layer
shapes (`parallelism.step_collectives`) and from the collectives of the
compiled step's HLO (scalars left out). Inference rows are data-parallel only.

Batch sizes are per device (the global batch over the devices, in every
mode). Writes the rows and the machine to --output (JSON)
and a Markdown table beside it (.md), and prints the table last.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import cli
from alexnet_jax import parallelism
from alexnet_jax import train
from experiments import common

# Benchmark variants -> AlexNet fields. 'owt' is torchvision's layout: one
# tower, no LRN.
VARIANTS = {
    'paper': {},
    'owt': {'variant': 'owt', 'groups': 1, 'lrn': False},
    'one_tower': {'groups': 1},
    'no_lrn': {'lrn': False},
}

# Dense peak FLOP/s per device: (device_kind substring, bfloat16 peak,
# float32 peak, what float32 runs on). Matched in order on the lower-cased
# `device.device_kind`. XLA runs float32 convolutions and matmuls as TF32 on
# NVIDIA Ampere and later, and as bfloat16 passes on TPUs, at default
# precision.
PEAK_FLOPS = (
    ('h100 pcie', 756e12, 378e12, 'tf32'),
    ('h100', 989e12, 494.7e12, 'tf32'),
    ('h200', 989e12, 494.7e12, 'tf32'),
    ('a100', 312e12, 156e12, 'tf32'),
    ('tpu v4', 275e12, 275e12, 'bf16 passes'),
    ('tpu v5 lite', 197e12, 197e12, 'bf16 passes'),
    ('tpu v5e', 197e12, 197e12, 'bf16 passes'),
    ('tpu v5p', 459e12, 459e12, 'bf16 passes'),
    ('tpu v5', 459e12, 459e12, 'bf16 passes'),
    ('tpu v6 lite', 918e12, 918e12, 'bf16 passes'),
    ('tpu v6e', 918e12, 918e12, 'bf16 passes'),
)
# Per-channel mean (0-255), as configs/default.py: the step's normalisation.
IMAGENET_MEAN = (123.68, 116.78, 103.94)
# conv1's implementations, where the model has the field.
CONV1_IMPLS = getattr(models, 'CONV1_IMPLS', ('direct',))

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string('output', None, 'Where to write the JSON rows; the '
                      'Markdown table goes beside it (.md).')
  flags.DEFINE_list('batch_sizes', ['32'], 'Per-device batch sizes.')
  flags.DEFINE_list('dtypes', ['float32'],
                    f'Compute dtypes, of {models.DTYPES}.')
  flags.DEFINE_list('variants', ['paper'],
                    f'Model variants, of {tuple(VARIANTS)}.')
  flags.DEFINE_list('conv_impls', ['split'], 'Grouped convolution '
                    f'implementations, of {models.CONV_IMPLS}.')
  flags.DEFINE_list('conv1_impls', [CONV1_IMPLS[0]],
                    f'conv1 implementations, of {CONV1_IMPLS}.')
  flags.DEFINE_list('lrn_impls', ['shift'],
                    f'LRN implementations, of {models.LRN_IMPLS}.')
  flags.DEFINE_list('parallelism', ['data'],
                    "How the step is split: of ('data', 'towers', 'hybrid').")
  flags.DEFINE_list('devices', ['all'],
                    "Numbers of local devices to pmap over ('all').")
  flags.DEFINE_integer('image_size', 0, 'Input side (0: 227 for the paper '
                       'variants, 224 for owt).')
  flags.DEFINE_float('width', 1.0, 'Width multiplier of every layer.')
  flags.DEFINE_integer('num_classes', 1000, 'Classes.')
  flags.DEFINE_integer('warmup', 2, 'Untimed calls after compilation.')
  flags.DEFINE_integer('windows', 5, 'Timed windows (the median is used).')
  flags.DEFINE_integer('steps_per_window', 10, 'Steps per timed window.')
  flags.DEFINE_bool('inference', True,
                    'Also time a forward-only inference step.')
  flags.DEFINE_bool('isolate', False, 'Run each row in a fresh process '
                    '(per-row peak memory, compile from a cold cache).')
  flags.DEFINE_string('profile_dir', None, 'Also trace each row\'s training '
                      'steps (one window) with jax.profiler into this '
                      'directory (TensorBoard\'s profile tab, Perfetto).')
  flags.DEFINE_string('row', None, 'Internal: the one row to run (JSON), as '
                      '--isolate starts it.')
  flags.mark_flag_as_required('output')


# ----------------------------------------------------------------------------
# Machine and peaks.
# ----------------------------------------------------------------------------


def peak_flops(device_kind: str, dtype: str) -> tuple[float | None, str]:
  """(dense peak FLOP/s of one device for `dtype`, its basis); None: unknown."""
  kind = device_kind.lower()
  for pattern, bf16, fp32, fp32_basis in PEAK_FLOPS:
    if pattern in kind:
      return (bf16, 'bf16') if dtype == 'bfloat16' else (fp32, fp32_basis)
  return None, f'no peak known for device kind {device_kind!r}'


def machine_info() -> dict[str, Any]:
  import flax  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  return {
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'local_devices': jax.local_device_count(),
      'jax': jax.__version__,
      'jaxlib': _jaxlib_version(),
      'flax': flax.__version__,
      'python': platform.python_version(),
      'cpu_count': os.cpu_count(),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'memory_stats': device.memory_stats() is not None,
  }


def _jaxlib_version() -> str | None:
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


# ----------------------------------------------------------------------------
# One row.
# ----------------------------------------------------------------------------


def row_specs(batch_sizes: Sequence[int], dtypes: Sequence[str],
              variants: Sequence[str], conv_impls: Sequence[str],
              lrn_impls: Sequence[str], devices: Sequence[int | str],
              image_size: int, width: float, num_classes: int,
              conv1_impls: Sequence[str] = (CONV1_IMPLS[0],),
              parallelisms: Sequence[str] = ('data',),
              ) -> list[dict[str, Any]]:
  """Every combination, without repeats: `conv_impl` does not apply to
  one-tower variants, nor `lrn_impl` to variants without LRN ('-')."""
  specs, seen = [], set()
  for mode, n, variant, dtype, conv_impl, conv1_impl, lrn_impl, batch in (
      itertools.product(parallelisms, devices, variants, dtypes, conv_impls,
                        conv1_impls, lrn_impls, batch_sizes)):
    fields = model_fields(variant)
    spec = {
        'variant': variant, 'dtype': dtype,
        'conv_impl': conv_impl if fields['groups'] > 1 else '-',
        'conv1_impl': conv1_impl,
        'lrn_impl': lrn_impl if fields['lrn'] else '-',
        'devices': n, 'batch_per_device': batch,
        'image_size': image_size or models.DEFAULT_IMAGE_SIZE[
            fields['variant']],
        'width': width, 'num_classes': num_classes}
    if mode != 'data':
      spec['parallelism'] = mode
    key = json.dumps(spec, sort_keys=True)
    if key not in seen:
      seen.add(key)
      specs.append(spec)
  return specs


def model_fields(variant: str) -> dict[str, Any]:
  """The AlexNet fields of a benchmark variant (defaults included)."""
  defaults = models.AlexNet()
  return {**{f: getattr(defaults, f) for f in models.MODEL_FIELDS},
          **VARIANTS[variant]}


def build_model(spec: dict[str, Any]) -> models.AlexNet:
  fields = dict(VARIANTS[spec['variant']])
  if spec['conv_impl'] != '-':
    fields['conv_impl'] = spec['conv_impl']
  if spec['lrn_impl'] != '-':
    fields['lrn_impl'] = spec['lrn_impl']
  if 'conv1_impl' in models.MODEL_FIELDS:
    fields['conv1_impl'] = spec.get('conv1_impl', CONV1_IMPLS[0])
  elif spec.get('conv1_impl', CONV1_IMPLS[0]) != CONV1_IMPLS[0]:
    raise ValueError(f'conv1_impl={spec["conv1_impl"]!r}: this AlexNet has '
                     'no conv1_impl field.')
  return models.AlexNet(num_classes=spec['num_classes'], width=spec['width'],
                        dtype=spec['dtype'], **fields)


def step_config(image_size: int) -> types.SimpleNamespace:
  """The fields of a training config that `train.train_step` reads."""
  return types.SimpleNamespace(
      seed=0, image_size=image_size, log_every_steps=100,
      xla_cpu_conv_library='eigen',  # configs/default.py's; CPU only.
      normalization=types.SimpleNamespace(mean=IMAGENET_MEAN,
                                          std=(1.0, 1.0, 1.0)))


def optimizer() -> Any:
  """The paper's update (momentum 0.9, weight decay 5e-4), constant lr."""
  return optim.create_optimizer(
      types.SimpleNamespace(learning_rate=0.01, schedule='constant',
                            warmup_epochs=0.0, momentum=0.9,
                            weight_decay=5e-4, rule='paper'),
      steps_per_epoch=1, total_steps=1)


def random_batch(devices: Sequence[jax.Device], per_device: int, size: int,
                 num_classes: int) -> dict[str, jax.Array]:
  """Random uint8 images and labels, generated on each device."""

  def make(key):
    k1, k2 = jax.random.split(key)
    images = jax.random.randint(k1, (per_device, size, size, 3), 0, 256)
    labels = jax.random.randint(k2, (per_device,), 0, num_classes)
    return {'image': images.astype(jnp.uint8), 'label': labels}

  keys = jax.random.split(jax.random.key(0), len(devices))
  return jax.pmap(make, devices=devices)(keys)


def infer_step(params, images: jax.Array, *, model: models.AlexNet,
               config) -> jax.Array:
  """Forward pass at eval (no dropout); the predicted class per image."""
  x = train.normalize(images, config.normalization.mean,
                      config.normalization.std)
  logits = model.apply({'params': params}, x, train=False)
  return jnp.argmax(logits, axis=-1)


def _memory_bytes(compiled) -> int | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes + m.temp_size_in_bytes)


def _cost_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def time_windows(step: Callable[[], Any], warmup: int, windows: int,
                 steps: int) -> list[float]:
  """Seconds per step in each timed window, after `warmup` untimed calls."""
  for _ in range(warmup):
    jax.block_until_ready(step())
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      out = step()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / steps)
  return times


def run_row(spec: dict[str, Any], warmup: int, windows: int, steps: int,
            inference: bool = True,
            profile_dir: str | None = None) -> dict[str, Any]:
  """Compiles and times one configuration; returns the spec with results.
  With `profile_dir`, `steps` more training steps are then traced with
  jax.profiler into a folder of it named after the row."""
  local = jax.local_devices()
  n = len(local) if spec['devices'] == 'all' else int(spec['devices'])
  if not 1 <= n <= len(local):
    raise ValueError(f'--devices={spec["devices"]}: this machine has '
                     f'{len(local)} local devices.')
  devices = local[:n]
  model = build_model(spec)
  size, per_device = spec['image_size'], spec['batch_per_device']
  config = step_config(size)
  tx = optimizer()
  mesh = jax.sharding.Mesh(devices, ('batch',))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.device_put(train.create_train_state(config, model, tx),
                         replicated)
  batch = random_batch(devices, per_device, size, spec['num_classes'])
  row = dict(spec, devices=n, global_batch=n * per_device,
             params=models.count_params(state.params))

  mode = spec.get('parallelism', 'data')
  row['parallelism'] = mode
  if mode == 'data':
    p_train, _ = train.make_pmapped_steps(model, tx, config, devices=devices)
    train_batch = batch
  else:
    config.parallelism = mode
    p_train, _, put = parallelism.make_sharded_steps(model, tx, config,
                                                     devices=devices)
    train_batch = put(batch)
    state = jax.device_put(state, p_train.shardings)
  # The training loop's XLA options (CPU: Eigen convolutions).
  options = train.compiler_options(config)
  row['xla_options'] = options
  start = time.perf_counter()
  compiled = p_train.lower(state, train_batch).compile(options or None)
  row['train_compile_s'] = time.perf_counter() - start
  _add_communication(row, model, mode, size, n * per_device, n,
                     compiled.as_text())
  row['train_xla_memory_bytes'] = _memory_bytes(compiled)
  xla_flops = _cost_flops(compiled)
  row['train_xla_gflop_per_image'] = (
      xla_flops / per_device / 1e9 if xla_flops else None)
  holder = {'state': state}

  def train_once():
    holder['state'], metrics = compiled(holder['state'], train_batch)
    return metrics

  times = time_windows(train_once, warmup, windows, steps)
  _add_timing(row, 'train', times, per_device, n)
  if profile_dir:  # After the timing, which the trace would slow.
    row['profile_dir'] = os.path.join(profile_dir, _row_name(spec))
    with jax.profiler.trace(row['profile_dir']):
      jax.block_until_ready([train_once() for _ in range(steps)])
  row['train_loss_finite'] = bool(
      jnp.isfinite(train_once()['train_loss']).all())

  if inference and mode == 'data':
    p_infer = jax.pmap(
        functools.partial(infer_step, model=model, config=config),
        axis_name='batch', in_axes=(None, 0), devices=devices)
    params = holder['state'].params
    images = batch['image']
    start = time.perf_counter()
    compiled_infer = p_infer.lower(params, images).compile(options or None)
    row['infer_compile_s'] = time.perf_counter() - start
    row['infer_xla_memory_bytes'] = _memory_bytes(compiled_infer)
    times = time_windows(lambda: compiled_infer(params, images), warmup,
                         windows, steps)
    _add_timing(row, 'infer', times, per_device, n)

  kind = devices[0].device_kind
  peak, basis = peak_flops(kind, spec['dtype'])
  row['peak_flops'] = peak
  row['peak_basis'] = basis
  for phase in ('train', 'infer') if 'infer_step_ms' in row else ('train',):
    flops = common.model_flops_of(model, size, train=phase == 'train')
    row[f'{phase}_gflop_per_image'] = flops / 1e9
    rate = row[f'{phase}_images_per_sec_per_device']
    row[f'{phase}_mfu'] = flops * rate / peak if peak else None
  stats = devices[0].memory_stats()
  row['peak_bytes_in_use'] = (int(stats['peak_bytes_in_use'])
                              if stats and 'peak_bytes_in_use' in stats
                              else None)
  row['process_peak_rss_bytes'] = _peak_rss_bytes()
  return row


def _row_name(spec: dict[str, Any]) -> str:
  return re.sub(r'[^A-Za-z0-9.]+', '_', '_'.join(str(v) for v in spec.values()))


def _add_communication(row: dict, model, mode: str, size: int,
                       global_batch: int, n: int, hlo_text: str) -> None:
  """Bytes each device sends per training step: from the layer shapes, and
  from the compiled step's collectives (scalars and one-device groups, which
  move nothing that matters, left out)."""
  want = parallelism.step_collectives(model, mode, size, global_batch, n)
  hlo = [c for c in parallelism.hlo_collectives(hlo_text, n)
         if c.elements > 1 and c.group > 1]
  row['bytes_sent_per_device'] = parallelism.bytes_sent_per_device(want)
  row['hlo_bytes_sent_per_device'] = parallelism.bytes_sent_per_device(hlo)
  row['hlo_collectives'] = len(hlo)


def _peak_rss_bytes() -> int | None:
  """This process's peak resident memory on the host so far (Linux, macOS)."""
  try:
    import resource  # pylint: disable=g-import-not-at-top
  except ImportError:  # Windows.
    return None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024  # Linux: KiB.


def _add_timing(row: dict, phase: str, times: Sequence[float],
                per_device: int, n: int) -> None:
  median = statistics.median(times)
  row[f'{phase}_step_ms'] = 1e3 * median
  row[f'{phase}_step_ms_windows'] = [1e3 * t for t in times]
  row[f'{phase}_images_per_sec_per_device'] = per_device / median
  row[f'{phase}_images_per_sec'] = n * per_device / median


def run_row_safely(spec, warmup, windows, steps, inference,
                   profile_dir=None) -> dict[str, Any]:
  """`run_row`, or the spec with the error (an out-of-memory row, say)."""
  try:
    return run_row(spec, warmup, windows, steps, inference, profile_dir)
  except Exception as e:  # pylint: disable=broad-except
    message = f'{type(e).__name__}: {e}'.splitlines()[0][:500]
    print(f'benchmark: row {spec} failed: {message}', file=sys.stderr)
    return dict(spec, error=message)


def run_isolated(spec, argv_common: Sequence[str]) -> tuple[dict, dict | None]:
  """Runs one row in a fresh Python process; (row, machine info)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'row.json')
    cmd = [sys.executable, '-m', 'experiments.benchmark', f'--output={out}',
           f'--row={json.dumps(spec)}', *argv_common]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode or not os.path.exists(out):
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
      return dict(spec, error=' | '.join(tail)[:500] or
                  f'exit status {proc.returncode}'), None
    with open(out) as f:
      result = json.load(f)
  return result['row'], result['machine']


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def _num(value, fmt: str) -> str:
  return '—' if value is None else format(value, fmt)


def _mib(value) -> str:
  return '—' if value is None else f'{value / 2**20:,.1f}'


def _mb(value):
  return None if value is None else value / 1e6


def markdown(rows: Sequence[dict], machine: dict, notes: Sequence[str]) -> str:
  lines = [
      f'# AlexNet throughput: {machine.get("device_kind")} '
      f'({machine.get("backend")}), {machine.get("date")}', '',
      f'jax {machine.get("jax")}, flax {machine.get("flax")}, python '
      f'{machine.get("python")}, {machine.get("local_devices")} local '
      'device(s). Random uint8 images made on the device; batch per device; '
      'images/s per device from the median window; MFU = model FLOPs per '
      'image x images/s / dense peak.', '',
      '| variant | dtype | conv | conv1 | lrn | devices | batch/dev | '
      'train img/s/dev | train ms | compile s | train MFU | infer img/s/dev | '
      'infer ms | infer MFU | XLA mem MiB | peak mem MiB | host RSS MiB | '
      'parallelism | MB sent/dev/step (shapes, HLO) |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
      '---|---|',
  ]
  for r in rows:
    head = (f'| {r["variant"]} | {r["dtype"]} | {r["conv_impl"]} | '
            f'{r.get("conv1_impl", "-")} | {r["lrn_impl"]} | {r["devices"]} | '
            f'{r["batch_per_device"]} |')
    if 'error' in r:
      message = r['error'][:120].replace('|', '/')
      lines.append(f'{head} failed: {message} |' + ' |' * 11)
      continue
    lines.append(' '.join([
        head, _num(r.get('train_images_per_sec_per_device'), ',.1f'), '|',
        _num(r.get('train_step_ms'), '.2f'), '|',
        _num(r.get('train_compile_s'), '.1f'), '|',
        _num(r.get('train_mfu'), '.1%'), '|',
        _num(r.get('infer_images_per_sec_per_device'), ',.1f'), '|',
        _num(r.get('infer_step_ms'), '.2f'), '|',
        _num(r.get('infer_mfu'), '.1%'), '|',
        _mib(r.get('train_xla_memory_bytes')), '|',
        _mib(r.get('peak_bytes_in_use')), '|',
        _mib(r.get('process_peak_rss_bytes')), '|',
        r.get('parallelism', 'data'), '|',
        _num(_mb(r.get('bytes_sent_per_device')), ',.2f') + ', ' +
        _num(_mb(r.get('hlo_bytes_sent_per_device')), ',.2f'), '|']))
  if notes:
    lines += [''] + [f'- {note}' for note in notes]
  return '\n'.join(lines) + '\n'


def report_notes(rows: Sequence[dict], machine: dict,
                 isolated: bool) -> list[str]:
  notes = []
  ok = [r for r in rows if 'error' not in r]
  if ok and all(r.get('peak_flops') is None for r in ok):
    notes.append(f'MFU omitted: {ok[0]["peak_basis"]} (CPUs and unlisted '
                 'accelerators have no entry in PEAK_FLOPS).')
  elif ok:
    bases = sorted({f'{r["dtype"]}: {r["peak_flops"] / 1e12:g} TFLOP/s '
                    f'({r["peak_basis"]})' for r in ok if r['peak_flops']})
    notes.append('MFU against the dense peak per device, ' + '; '.join(bases)
                 + '.')
  gflops = sorted({(r['variant'], r['image_size'], r['width'],
                    r['train_gflop_per_image'], r.get('infer_gflop_per_image'))
                   for r in ok}, key=str)
  for variant, size, width, tr, inf in gflops:
    notes.append(f'{variant} at {size}x{size}, width {width:g}: '
                 f'{tr:.4g} GFLOP per training image'
                 + (f', {inf:.4g} per inference image' if inf else '') +
                 ' (convolutions and dense layers, from the layer table).')
  if not machine.get('memory_stats'):
    notes.append('Peak memory omitted: this backend reports no memory stats '
                 '(CPU); "XLA mem" is the compiled training step\'s estimate '
                 '(arguments + outputs + temporaries, per device).')
  if not isolated:
    notes.append('Peak memory and host RSS are maxima over the whole process '
                 'so far (rows run in one process); use --isolate for '
                 'per-row figures.')
  return notes


def _parse_ints(values: Sequence[str], flag: str, allow_all: bool = False):
  out = []
  for v in values:
    if allow_all and v == 'all':
      out.append('all')
      continue
    try:
      number = int(v)
    except ValueError:
      number = 0
    if number < 1:
      raise ValueError(f'--{flag}: {v!r} is not a positive integer'
                       + (" or 'all'" if allow_all else '') + '.')
    out.append(number)
  return out


def _check_choices(values: Sequence[str], flag: str, allowed) -> list[str]:
  bad = [v for v in values if v not in allowed]
  if bad:
    raise ValueError(f'--{flag}: {bad} not in {tuple(allowed)}.')
  return list(values)


def specs_from_flags() -> list[dict[str, Any]]:
  variants = _check_choices(FLAGS.variants, 'variants', VARIANTS)
  image_size = FLAGS.image_size
  if image_size:
    for v in variants:
      fields = model_fields(v)
      smallest = models.min_image_size(fields['variant'],
                                       fields['overlap_pool'])
      if image_size < smallest:
        raise ValueError(f'--image_size={image_size}: variant {v!r} needs at '
                         f'least {smallest}.')
  if not 0 < FLAGS.width <= 64:
    raise ValueError(f'--width={FLAGS.width}: expected a number in (0, 64].')
  if FLAGS.num_classes < 2:
    raise ValueError(f'--num_classes={FLAGS.num_classes}: expected >= 2.')
  for name, low in (('warmup', 0), ('windows', 1), ('steps_per_window', 1)):
    if FLAGS[name].value < low:
      raise ValueError(f'--{name}={FLAGS[name].value}: expected >= {low}.')
  return row_specs(
      _parse_ints(FLAGS.batch_sizes, 'batch_sizes'),
      _check_choices(FLAGS.dtypes, 'dtypes', models.DTYPES), variants,
      _check_choices(FLAGS.conv_impls, 'conv_impls', models.CONV_IMPLS),
      _check_choices(FLAGS.lrn_impls, 'lrn_impls', models.LRN_IMPLS),
      _parse_ints(FLAGS.devices, 'devices', allow_all=True),
      image_size, FLAGS.width, FLAGS.num_classes,
      _check_choices(FLAGS.conv1_impls, 'conv1_impls', CONV1_IMPLS),
      _check_choices(FLAGS.parallelism, 'parallelism',
                     ('data', 'towers', 'hybrid')))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  timing = (FLAGS.warmup, FLAGS.windows, FLAGS.steps_per_window,
            FLAGS.inference, FLAGS.profile_dir)
  if FLAGS.row:  # One row, in the process --isolate started.
    row = run_row(json.loads(FLAGS.row), *timing)
    common.write_json(FLAGS.output, {'row': row, 'machine': machine_info()})
    return
  try:
    specs = specs_from_flags()
  except ValueError as e:
    sys.exit(f'benchmark: {e}')

  rows, machine = [], None
  if FLAGS.isolate:
    argv_common = [f'--warmup={FLAGS.warmup}', f'--windows={FLAGS.windows}',
                   f'--steps_per_window={FLAGS.steps_per_window}',
                   f'--inference={FLAGS.inference}']
    if FLAGS.profile_dir:
      argv_common.append(f'--profile_dir={FLAGS.profile_dir}')
    for spec in specs:
      print(f'benchmark: {spec}', file=sys.stderr, flush=True)
      row, info = run_isolated(spec, argv_common)
      rows.append(row)
      machine = machine or info
  else:
    machine = machine_info()
    for spec in specs:
      print(f'benchmark: {spec}', file=sys.stderr, flush=True)
      rows.append(run_row_safely(spec, *timing))
  if machine is None:  # Every isolated row failed.
    machine = {'backend': None, 'device_kind': None}
  notes = report_notes(rows, machine, FLAGS.isolate)
  common.write_json(FLAGS.output, {'machine': machine, 'rows': rows,
                                    'notes': notes,
                                    'command': ' '.join(sys.argv)})
  table = markdown(rows, machine, notes)
  with open(os.path.splitext(FLAGS.output)[0] + '.md', 'w') as f:
    f.write(table)
  print(table)


def run():
  """Console-script entry point (`alexnet-benchmark`)."""
  cli.quiet_console()
  define_flags()
  cli.list_own_flags_in_help(__name__)
  app.run(main)


if __name__ == '__main__':
  run()
