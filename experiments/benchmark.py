r"""Training-step throughput of named variants, side by side, in one run.

  python -m experiments.benchmark --output=/tmp/bench/cpu.json \
      --variants=default,lrn_matmul,s2d+lrn_matmul --dtypes=float32
  python -m experiments.benchmark --tiny --output=/tmp/tiny.json  # Seconds.
  python -m experiments.benchmark --output=/tmp/mem.json --isolate \
      --batch_sizes=8,32,64,128          # Memory per batch size.
  python -m experiments.benchmark --variants=default,flax_baseline \
      --dtypes=bfloat16 --batch_sizes=256 --torch=subprocess --torch_compile \
      --output=$OUT/gpu.json

A variant is a name in `experiments.harness.VARIANTS`: the config fields it
changes in dotted form (e.g. 'one_tower': {'model.groups': 1}) and the forms
of the operations it swaps in from experiments/op_variants.py (e.g.
'lrn_matmul': {'ops': ('lrn_matmul',)}), or names joined by '+' (e.g.
's2d+lrn_matmul'); every variant runs at every dtype, batch size per device
and device count.
Each row is the training loop's own step (`steps.make_pmapped_steps`, or
`parallelism.make_sharded_steps` for the 'towers' and 'hybrid' variants),
compiled with the loop's XLA options (`startup.compiler_options`, timed apart),
on a random uint8 batch made on the devices. All rows are compiled first; then
`--windows` windows of `--steps_per_window` steps go round-robin over the rows,
so a change in the machine's load hits every row alike; a row's figure is its
median window, with the process's CPU time per step beside it. Model FLOPs
(`experiments.flops`) over a measured matmul ceiling give each row's fraction
of what the device can do. With `--torch`, the PyTorch reference
(experiments/torch_reference.py) runs at each dtype and batch size, in this
process (its windows in the round-robin) or in a child process.

`--isolate` runs each JAX row in a process of its own (compiled from a cold
cache, timed alone), so its peak memory (the allocator's on an accelerator,
the host's resident memory on a CPU) is its own. Writes the report as JSON to
--output and a Markdown table beside it (.md), and prints the table last.
Needs JAX, Flax and optax only: no TensorFlow, no ml_collections.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

# Let PyTorch share a GPU with JAX in one process (set before JAX starts).
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax

from alexnet_jax import cli
from alexnet_jax import models
from . import bench_report
from . import common
from . import harness
# pylint: enable=g-import-not-at-top,wrong-import-position

_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the JSON report; '
                              'the Markdown table goes beside it (.md).')
_VARIANTS = flags.DEFINE_list(
    'variants', ['default'], 'Variants: each a name of '
    f"{tuple(harness.VARIANTS)} or names joined by '+' (e.g. s2d+lrn_matmul).")
_DTYPES = flags.DEFINE_list('dtypes', ['float32'], f'Of {models.DTYPES}.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32'],
                                 'Per-device batch sizes.')
_DEVICES = flags.DEFINE_list('devices', ['all'],
                             "Numbers of local devices to run on ('all').")
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, 'Input side (0: 227 for '
                                   "the paper's net, 224 for owt).")
_WIDTH = flags.DEFINE_float('width', 1.0, 'Width multiplier of every layer.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 1000, 'Classes.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling.')
_WINDOWS = flags.DEFINE_integer('windows', 5, 'Timed windows per row.')
_STEPS = flags.DEFINE_integer('steps_per_window', 10, 'Steps per window.')
_PAUSE = flags.DEFINE_float('pause', 0.0, 'Seconds of idle before each '
                            "window (lets the other framework's threads "
                            'sleep).')
_ISOLATE = flags.DEFINE_bool('isolate', False, 'Run each JAX row in a fresh '
                             'process (per-row peak memory).')
_TORCH = flags.DEFINE_enum('torch', 'none', ['none', 'inprocess', 'subprocess'],
                           'PyTorch reference rows (skipped without torch).')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False,
                                   'Also time torch.compile.')
_TORCH_DEVICE = flags.DEFINE_enum('torch_device', 'auto',
                                  ['auto', 'cpu', 'cuda'], 'PyTorch device.')
_CHANNELS_LAST = flags.DEFINE_bool(
    'torch_channels_last', None, 'Default: channels_last on CUDA, NCHW on a '
    'CPU (faster there, see docs/performance.md).')
_CEILING_SIZE = flags.DEFINE_integer('ceiling_size', 0, 'Matmul side for the '
                                     'ceiling (0: 8192 on a GPU, else 2048).')
_BUDGET_S = flags.DEFINE_float(
    'budget_s', 0, 'Soft time limit (0: none): no compilation starts after '
    '75% of it, no window after all of it; the report is written either way.')
_TINY = flags.DEFINE_bool('tiny', False, 'A seconds-long check: width 0.05, '
                          '67x67, batch 4, 10 classes, 2 windows of 1 step.')
_SCRATCH = flags.DEFINE_string('scratch', None, "Directory for the children's "
                               'JSON (default: a temporary one).')
_PROFILE_DIR = flags.DEFINE_string('profile_dir', None, "Also trace each JAX "
                                   "row's steps (one window, after the timing) "
                                   'with jax.profiler into this directory.')
_SUMMARIZE = flags.DEFINE_list('summarize', None, 'Measure nothing: print the '
                               'tables of these saved JSON reports.')
_ROW = flags.DEFINE_string('row', None, 'Internal: the one row to run (JSON), '
                           'as --isolate starts it.')

TINY = {'width': 0.05, 'image_size': 67, 'batch_sizes': ['4'],
        'num_classes': 10, 'steps_per_window': 1, 'windows': 2, 'warmup': 1,
        'pause': 0.0, 'ceiling_size': 256}


def _ints(values, flag: str, allow_all: bool = False) -> list[Any]:
  out = []
  for v in values:
    if allow_all and v == 'all':
      out.append(v)
    elif v.isdigit() and int(v) > 0:
      out.append(int(v))
    else:
      raise ValueError(f'--{flag}: {v!r} is not a positive integer'
                       + (" or 'all'" if allow_all else '') + '.')
  return out


def _choices(values, flag: str, allowed) -> list[str]:
  bad = [v for v in values if v not in allowed]
  if bad:
    raise ValueError(f'--{flag}: {bad} not in {tuple(allowed)}.')
  return list(values)


def row_specs() -> list[dict[str, Any]]:
  """Every variant x dtype x devices x batch size, checked before any
  compilation (a variant's config, its image size)."""
  if _WIDTH.value <= 0 or _NUM_CLASSES.value < 2:
    raise ValueError(f'--width={_WIDTH.value} must be > 0 and '
                     f'--num_classes={_NUM_CLASSES.value} >= 2.')
  for flag, low in ((_WARMUP, 0), (_WINDOWS, 1), (_STEPS, 1)):
    if flag.value < low:
      raise ValueError(f'--{flag.name}={flag.value}: expected >= {low}.')
  specs = []
  for variant, dtype, devices, batch in itertools.product(
      _VARIANTS.value,
      _choices(_DTYPES.value, 'dtypes', models.DTYPES),
      _ints(_DEVICES.value, 'devices', allow_all=True),
      _ints(_BATCH_SIZES.value, 'batch_sizes')):
    spec = {'variant': variant, 'dtype': dtype, 'devices': devices,
            'batch_per_device': batch, 'image_size': _IMAGE_SIZE.value,
            'width': _WIDTH.value, 'num_classes': _NUM_CLASSES.value}
    config = harness.variant_config(spec)
    size = config['image_size']
    smallest = models.min_image_size(config['model']['variant'],
                                     config['model']['overlap_pool'])
    if size < smallest:
      raise ValueError(f'--image_size={size}: variant '
                       f'{variant!r} needs at least {smallest}.')
    specs.append(dict(spec, image_size=size))
  return specs


def _timing() -> dict[str, int]:
  return {'warmup': _WARMUP.value, 'windows': _WINDOWS.value,
          'steps': _STEPS.value}


def error_row(spec: dict, e: Exception) -> dict[str, Any]:
  """The spec with the error (an out-of-memory row, say): not fatal."""
  message = f'{type(e).__name__}: {e}'.splitlines()[0][:500]
  print(f'benchmark: row {spec} failed: {message}', file=sys.stderr)
  return dict(spec, error=message)


def run_jax_rows(specs, out_of_time) -> list[dict[str, Any]]:
  """Builds every row, then times them round-robin (with the in-process
  PyTorch rows)."""
  built, failed = [], []
  for spec in specs:
    if out_of_time(0.75):
      failed.append(dict(spec, error='skipped: out of time (--budget_s)'))
      continue
    print(f'benchmark: compiling {spec}', file=sys.stderr, flush=True)
    try:
      built.append(harness.JaxRow(spec))
    except Exception as e:  # pylint: disable=broad-except
      failed.append(error_row(spec, e))
  built += torch_rows_in_process(specs)
  t = _timing()
  rows = harness.time_round_robin(
      built, t['warmup'], t['windows'], t['steps'], _PAUSE.value,
      lambda: out_of_time(1.0), _PROFILE_DIR.value)
  memory = bench_report.process_memory()
  return [dict(r, **memory) for r in rows] + failed


def run_isolated(spec: dict, scratch: str) -> dict[str, Any]:
  """One JAX row in a fresh Python process."""
  out = os.path.join(scratch, 'row.json')
  t = _timing()
  cmd = [sys.executable, '-m', f'{__package__}.benchmark', f'--output={out}',
         f'--row={json.dumps(spec)}', f'--warmup={t["warmup"]}',
         f'--windows={t["windows"]}', f'--steps_per_window={t["steps"]}']
  if _PROFILE_DIR.value:
    cmd.append(f'--profile_dir={_PROFILE_DIR.value}')
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode or not os.path.exists(out):
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(spec, error=' | '.join(tail)[:500]
                or f'exit status {proc.returncode}')
  with open(out) as f:
    return json.load(f)


def torch_specs(specs) -> list[tuple[dict, bool]]:
  """(spec, compile) of the PyTorch rows: at each dtype and batch size."""
  if _TORCH.value == 'none':
    return []
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print('torch is not importable: no PyTorch rows.', file=sys.stderr)
    return []
  seen = {}
  for s in specs:  # The first variant's image size.
    seen.setdefault((s['dtype'], s['batch_per_device']), dict(s, devices=1))
  compiles = (False, True) if _TORCH_COMPILE.value else (False,)
  return [(s, c) for s in seen.values() for c in compiles]


def _torch_device() -> tuple[str, bool]:
  device = _TORCH_DEVICE.value
  if device == 'auto':
    device = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  last = _CHANNELS_LAST.value
  return device, device == 'cuda' if last is None else last


def torch_rows_in_process(specs) -> list[harness.TorchRow]:
  if _TORCH.value != 'inprocess':
    return []
  device, channels_last = _torch_device()
  return [harness.TorchRow(s, c, device, channels_last)
          for s, c in torch_specs(specs)]


def torch_rows_in_children(specs, scratch, out_of_time) -> list[dict]:
  if _TORCH.value != 'subprocess':
    return []
  device, channels_last = _torch_device()
  rows = []
  for spec, compile in torch_specs(specs):
    left = out_of_time.left()
    row = harness.torch_in_child(spec, compile, device, channels_last,
                                 _timing(), scratch,
                                 None if left is None else max(left * 0.4, 30))
    rows += [row] if row else []
  return rows


class Budget:
  """--budget_s: `budget(fraction)` says whether that share has passed."""

  def __init__(self, seconds: float):
    self.seconds, self.start = seconds, time.perf_counter()

  def __call__(self, fraction: float) -> bool:
    return self.seconds > 0 and (
        time.perf_counter() - self.start > fraction * self.seconds)

  def left(self) -> float | None:
    if self.seconds <= 0:
      return None
    return self.seconds - (time.perf_counter() - self.start)


def ceilings(dtypes, before: dict | None = None) -> dict[str, float]:
  """The matmul ceiling per dtype; with `before`, the better of the two."""
  n = _CEILING_SIZE.value or (8192 if jax.default_backend() == 'gpu'
                              else 2048)
  now = {d: harness.matmul_ceiling(d, n) for d in dtypes}
  return {d: max(c, (before or {}).get(d, 0.0)) for d, c in now.items()}


def measure(specs, scratch: str) -> dict[str, Any]:
  budget = Budget(_BUDGET_S.value)
  dtypes = sorted({s['dtype'] for s in specs})
  first = ceilings(dtypes)
  # Children first: no JAX step holds memory or threads while they run.
  rows = torch_rows_in_children(specs, scratch, budget)
  if _ISOLATE.value:
    rows += [run_isolated(s, scratch) for s in specs]
    rows += run_jax_rows([], budget)  # The in-process PyTorch rows.
  else:
    rows += run_jax_rows(specs, budget)
  best = ceilings(dtypes, first)
  bench_report.add_ceiling_and_torch(rows, best)
  machine = bench_report.machine_info()
  return {'machine': machine, 'rows': rows, 'matmul_ceiling_flops': best,
          'settings': {**_timing(), 'steps_per_window': _STEPS.value,
                       'isolate': _ISOLATE.value, 'torch': _TORCH.value},
          'notes': bench_report.notes(rows, machine, best, _ISOLATE.value),
          'command': ' '.join(sys.argv)}


def run_one_row() -> None:
  """--row: the process --isolate started."""
  spec = json.loads(_ROW.value)
  try:
    t = _timing()
    (row,) = harness.time_round_robin(
        [harness.JaxRow(spec)], t['warmup'], t['windows'], t['steps'],
        profile_dir=_PROFILE_DIR.value)
    row.update(bench_report.process_memory())
  except Exception as e:  # pylint: disable=broad-except
    row = error_row(spec, e)
  common.write_json(_OUTPUT.value, row)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _SUMMARIZE.value:
    print(bench_report.summarize(_SUMMARIZE.value))
    return
  if not _OUTPUT.value:
    sys.exit('benchmark: --output is required.')
  if _ROW.value:
    run_one_row()
    return
  if _TINY.value:
    for name, value in TINY.items():
      flags.FLAGS[name].value = value
  try:
    specs = row_specs()
  except ValueError as e:
    sys.exit(f'benchmark: {e}')
  with tempfile.TemporaryDirectory() as tmp:
    report = measure(specs, _SCRATCH.value or tmp)
  common.write_json(_OUTPUT.value, report)
  table = bench_report.markdown(report)
  with open(os.path.splitext(_OUTPUT.value)[0] + '.md', 'w') as f:
    f.write(table)
  print(table)


def run():
  """Console-script entry point (`alexnet-benchmark`)."""
  cli.run_console_script(main, __name__)


if __name__ == '__main__':
  run()
