r"""Training-step throughput of implementation variants, side by side, one run.

  python -m experiments.perf_variants --output=/tmp/perf_cpu.json
  python -m experiments.perf_variants --tiny   # Seconds: checks the script.
  python -m experiments.perf_variants --batch_size=256 \
      --dtypes=bfloat16,float32 --torch_compile --output=$OUT/perf_gpu.json

Every JAX row times the training loop's own step (`train.make_pmapped_steps`
on this host's devices, the state replicated as the loop keeps it, random
uint8 batches from `fake_data.FakeData`), for the paper's net with one choice
of implementation per variant. A variant is written CONV/LRN/CONV1[/EXTRA...]
or default[/EXTRA...]:

  CONV   grouped convolutions: 'split' (one per tower) or 'xla'
         (feature_group_count); 'nogroups' runs the one-tower net (groups=1,
         more parameters: not the same net, a reference point).
  LRN    'matmul', 'reduce_window', 'shift' (models.LRN_IMPLS) or 'none'
         (no LRN: not the same net).
  CONV1  'direct' or 'space_to_depth' ('s2d').
  EXTRA  any of 'pool=reduce_window|slices' (models.POOL_IMPLS);
         'prng=threefry2x32|rbg|unsafe_rbg', the dropout key's implementation
         (JAX's default is threefry2x32); 'cpuconv=eigen|xla_default', the
         training config's `xla_cpu_conv_library` (XLA:CPU's convolution
         library; the loop's default is 'eigen'; ignored off the CPU).

'default' is `models.AlexNet`'s own defaults (what the training loop runs
unless the config says otherwise). Every row is compiled with the XLA options
the loop uses (`train.compiler_options`). Each variant runs at each of
`--dtypes`. With torch importable, the PyTorch reference
(experiments/torch_reference.py, eager, and compiled with `--torch_compile`)
is timed in the same run: in this process, its windows interleaved with the
JAX windows (`--torch=inprocess`, the fairest on a shared CPU), or in a child
process per configuration (`--torch=subprocess`).

All steps are built and compiled first; then the timed windows go round-robin
over the rows, so a change in the machine's load hits every row alike. A row's
figure is the median over its windows. The table (printed last) gives
images/s, ms per step, compile time, the fraction of the device's measured
matmul ceiling (training FLOPs per image x images/s / ceiling), and the
speed relative to PyTorch eager at the same dtype. No TensorFlow is imported;
ml_collections is not needed (the config is a SimpleNamespace).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

# Let PyTorch share a GPU with JAX in one process (set before JAX starts).
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
from alexnet_jax import fake_data  # pylint: disable=g-import-not-at-top
from alexnet_jax import models  # pylint: disable=g-import-not-at-top
from alexnet_jax import optim  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VARIANTS = (
    # Straightforward Flax (the reference baseline), then one change at a time.
    'xla/reduce_window/direct/pool=reduce_window',
    'split/reduce_window/direct/pool=reduce_window',
    'split/matmul/direct/pool=reduce_window',
    'split/reduce_window/direct',
    'split/matmul/direct',
    'default',  # split/shift/direct/pool=slices, Eigen convolutions on CPU.
    'split/shift/s2d',
    'default/cpuconv=xla_default',
)
PRNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')
CPU_CONV_LIBRARIES = config_lib.XLA_CPU_CONV_LIBRARIES  # cpuconv= values.
_ALIASES = {'s2d': 'space_to_depth'}


def parse_variant(spec: str) -> dict:
  """'CONV/LRN/CONV1[/EXTRA...]' or 'default[/EXTRA...]' -> AlexNet overrides,
  and 'prng' and 'xla_cpu_conv_library' for the row."""
  parts = spec.split('/')
  out = {}
  if parts[0] == 'default':
    _parse_extras(spec, parts[1:], out)
    return out
  if len(parts) < 3:
    raise ValueError(f'variant {spec!r}: expected CONV/LRN/CONV1[/EXTRA...] '
                     f"or 'default[/EXTRA...]'.")
  conv, lrn, conv1 = (_ALIASES.get(p, p) for p in parts[:3])
  if conv == 'nogroups':
    out['groups'] = 1
  elif conv in models.CONV_IMPLS:
    out['conv_impl'] = conv
  else:
    raise ValueError(f'variant {spec!r}: CONV={conv!r}; expected one of '
                     f'{models.CONV_IMPLS + ("nogroups",)}.')
  if lrn == 'none':
    out['lrn'] = False
  elif lrn in models.LRN_IMPLS:
    out['lrn_impl'] = lrn
  else:
    raise ValueError(f'variant {spec!r}: LRN={lrn!r}; expected one of '
                     f'{models.LRN_IMPLS + ("none",)}.')
  if conv1 not in models.CONV1_IMPLS:
    raise ValueError(f'variant {spec!r}: CONV1={conv1!r}; expected one of '
                     f'{models.CONV1_IMPLS} or s2d.')
  out['conv1_impl'] = conv1
  _parse_extras(spec, parts[3:], out)
  return out


def _parse_extras(spec: str, extras: list[str], out: dict) -> None:
  for extra in extras:
    key, _, value = extra.partition('=')
    if key == 'pool' and value in models.POOL_IMPLS:
      out['pool_impl'] = value
    elif key == 'prng' and value in PRNG_IMPLS:
      out['prng'] = value
    elif key == 'cpuconv' and value in CPU_CONV_LIBRARIES:
      out['xla_cpu_conv_library'] = value
    else:
      raise ValueError(
          f'variant {spec!r}: {extra!r}; expected pool=one of '
          f'{models.POOL_IMPLS}, prng=one of {PRNG_IMPLS} or cpuconv=one of '
          f'{CPU_CONV_LIBRARIES}.')


def train_flops_per_image(image_size: int, variant: str = 'paper',
                          groups: int = 2, width: float = 1.0,
                          num_classes: int = 1000) -> float:
  """FLOPs of one image's training step: 3x the forward multiply-adds x 2,
  less conv1's input gradient, which is never computed (4.14 G for the paper's
  net at 227). Pooling, LRN and the update are not counted."""
  size, in_ch, macs, conv1_macs = image_size, 3, 0, 0
  for i, spec in enumerate(models.conv_specs(variant)):
    out_ch = models.scaled_width(spec.features, width, groups)
    g = groups if spec.grouped else 1
    size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
    layer = size * size * out_ch * spec.kernel ** 2 * in_ch // g
    macs += layer
    if i == 0:
      conv1_macs = layer
    if i in (0, 1, 4):
      size = (size - 3) // 2 + 1
    in_ch = out_ch
  if variant == 'owt':
    size = 6
  fc = models.scaled_width(4096, width, 1)
  macs += size * size * in_ch * fc + fc * fc + fc * num_classes
  return 2.0 * (3 * macs - conv1_macs)


def matmul_ceiling(dtype: str, n: int, repeats: int = 5) -> float:
  """FLOP/s of an n x n x n matmul on the default device (best of repeats:
  a ceiling, so the fastest run counts)."""
  key = jax.random.key(0)
  a = jax.random.normal(key, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.fold_in(key, 1), (n, n),
                        jnp.float32).astype(dtype)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, b))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - t0)
  return 2.0 * n ** 3 / min(times)


def _config(args, dtype: str, overrides: dict):
  """The fields of an ml_collections config that the step and FakeData read."""
  ns = types.SimpleNamespace
  model = dict(num_classes=args.num_classes, variant=args.variant,
               width=args.width, dtype=dtype,
               **{k: v for k, v in overrides.items()
                  if k not in ('prng', 'xla_cpu_conv_library')})
  return ns(
      model=ns(**model), seed=0, batch_size=args.batch_size,
      xla_cpu_conv_library=overrides.get('xla_cpu_conv_library', 'eigen'),
      log_every_steps=10, eval_batch_size=args.batch_size,
      image_size=args.image_size,
      fake_data=ns(num_train_examples=1_281_167, eval_steps=1),
      normalization=ns(mean=(123.68, 116.78, 103.94), std=(1.0, 1.0, 1.0)),
      optimizer=ns(rule='paper', learning_rate=0.01, momentum=0.9,
                   weight_decay=5e-4, schedule='constant', warmup_epochs=0.0,
                   lr_drop_epochs=(), lr_drop_factor=0.1))


class JaxRow:
  """One variant at one dtype: the training loop's compiled step and state."""

  def __init__(self, args, spec: str, dtype: str):
    from alexnet_jax import train  # pylint: disable=g-import-not-at-top
    self.name = f'jax {spec}'
    self.spec, self.dtype = spec, dtype
    overrides = parse_variant(spec)
    self.prng = overrides.get('prng', 'threefry2x32')
    config = _config(args, dtype, overrides)
    self.xla_options = train.compiler_options(config)
    model = models.AlexNet(**vars(config.model))
    tx = optim.create_optimizer(config.optimizer, 10_000, 1_000_000)
    self.batch_size = args.batch_size
    with jax.default_prng_impl(self.prng):
      state = train.create_train_state(config, model, tx)
      self.params = models.count_params(state.params)
      self.state = train.replicate(state)
      self.batch = next(fake_data.FakeData(config).train_batches())
      p_train, _ = train.make_pmapped_steps(model, tx, config)
      t0 = time.perf_counter()
      # The loop's step, compiled with the loop's XLA options.
      self.p_train = p_train.lower(self.state, self.batch).compile(
          self.xla_options or None)
      self.state, metrics = self.p_train(self.state, self.batch)
      jax.block_until_ready(metrics)
    self.compile_s = time.perf_counter() - t0
    self.metrics = metrics
    self.info = {'framework': 'jax', 'variant_spec': spec,
                 'model': {k: v for k, v in vars(config.model).items()},
                 'prng': self.prng, 'xla_options': self.xla_options,
                 'dtype': dtype, 'params': self.params,
                 'compile_s': self.compile_s}

  def run(self, steps: int) -> float:
    with jax.default_prng_impl(self.prng):  # Part of the step's cache key.
      t0 = time.perf_counter()
      for _ in range(steps):
        self.state, self.metrics = self.p_train(self.state, self.batch)
      jax.block_until_ready((self.state, self.metrics))
      return time.perf_counter() - t0

  def check_finite(self) -> None:
    loss = float(np.asarray(self.metrics['train_loss'])[0])
    if not np.isfinite(loss):
      raise RuntimeError(f'{self.name} {self.dtype}: non-finite loss {loss}.')

  def close(self) -> None:
    del self.state, self.batch, self.p_train, self.metrics


class TorchRow:
  """The PyTorch reference, timed in this process."""

  def __init__(self, args, dtype: str, compile: bool):
    # pylint: disable-next=g-import-not-at-top
    from experiments import torch_reference
    self.name = 'torch compile' if compile else 'torch eager'
    self.dtype = dtype
    self.step = torch_reference.TrainStep(
        device=args.torch_device, batch_size=args.batch_size, dtype=dtype,
        compile=compile, image_size=args.image_size,
        num_classes=args.num_classes, variant=args.variant,
        width=args.width, channels_last=args.torch_channels_last)
    self.batch_size = args.batch_size
    self.compile_s = self.step.run(1)
    self.params = self.step.info['params']
    self.info = {**self.step.info, 'compile_s': self.compile_s}

  def run(self, steps: int) -> float:
    return self.step.run(steps)

  def check_finite(self) -> None:
    self.step.check_finite()

  def close(self) -> None:
    del self.step


def _torch_subprocess(args, dtype: str, compile: bool,
                      timeout: float | None) -> dict | None:
  """The reference in a child process (its own CUDA context and threads)."""
  out = os.path.join(args.scratch, f'torch_{dtype}_{int(compile)}.json')
  cmd = [sys.executable, '-m', 'experiments.torch_reference',
         f'--device={args.torch_device}', f'--batch_size={args.batch_size}',
         f'--dtype={dtype}', f'--steps={args.steps}',
         f'--windows={args.windows}', f'--warmup={args.warmup}',
         f'--image_size={args.image_size}', f'--num_classes={args.num_classes}',
         f'--variant={args.variant}', f'--width={args.width}',
         '--compile' if compile else '--no-compile',
         ('--channels_last' if args.torch_channels_last
          else '--no-channels_last'),
         f'--output={out}']
  print('+', ' '.join(cmd), flush=True)
  try:
    proc = subprocess.run(cmd, cwd=ROOT, check=False, timeout=timeout)
  except subprocess.TimeoutExpired:
    print(f'torch reference timed out after {timeout:.0f} s; row left out.',
          flush=True)
    return None
  if proc.returncode:
    print(f'torch reference failed (exit {proc.returncode}); row left out.',
          flush=True)
    return None
  with open(out) as f:
    result = json.load(f)
  result['compile_s'] = result['first_step_s']
  return result


def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def _release():
  gc.collect()
  jax.clear_caches()


def measure(args) -> dict:
  dtypes = [d for d in args.dtypes.split(',') if d]
  for d in dtypes:
    if d not in models.DTYPES:
      raise ValueError(f'--dtypes: {d!r}; expected some of {models.DTYPES}.')
  specs = [v for v in args.variants.split(',') if v]
  for spec in specs:
    parse_variant(spec)  # Fails early on a typo.
  backend = jax.default_backend()
  if args.torch_device == 'auto':
    args.torch_device = 'cuda' if backend == 'gpu' else 'cpu'
  torch_mode = args.torch
  if torch_mode != 'none' and not _torch_available():
    print('torch is not importable: no PyTorch rows.', flush=True)
    torch_mode = 'none'

  ceilings = {}
  ceiling_n = args.ceiling_size or (8192 if backend == 'gpu' else 2048)
  for d in dtypes:
    ceilings[d] = matmul_ceiling(d, ceiling_n)
    print(f'matmul ceiling {d} ({ceiling_n}^3): {ceilings[d] / 1e12:.3f} '
          'TFLOP/s',
          flush=True)
  flops = train_flops_per_image(args.image_size, args.variant, 2, args.width,
                                args.num_classes)

  # Children first: no JAX step holds memory or threads while they run.
  start = time.perf_counter()
  results = []
  if torch_mode == 'subprocess':
    for d in dtypes:
      for compile in (False, True) if args.torch_compile else (False,):
        left = (args.budget_s - (time.perf_counter() - start)
                if args.budget_s > 0 else None)
        r = _torch_subprocess(args, d, compile,
                              None if left is None else max(left * 0.4, 30))
        if r is not None:
          r['name'] = 'torch compile' if compile else 'torch eager'
          results.append(r)

  rows, skipped = [], []
  over = lambda frac: args.budget_s > 0 and (
      time.perf_counter() - start > frac * args.budget_s)
  for d in dtypes:
    if torch_mode == 'inprocess':
      for compile in (False, True) if args.torch_compile else (False,):
        print(f'building torch {"compile" if compile else "eager"} {d}',
              flush=True)
        rows.append(TorchRow(args, d, compile))
    for spec in specs:
      if over(0.75):
        print(f'out of time (--budget_s): jax {spec} {d} skipped', flush=True)
        skipped.append(f'jax {spec} {d}')
        continue
      print(f'compiling jax {spec} {d}', flush=True)
      row = JaxRow(args, spec, d)
      print(f'  compiled in {row.compile_s:.1f} s', flush=True)
      rows.append(row)
  for row in rows:  # Warm-up: past first-run effects (autotuning, caches).
    row.run(args.warmup)

  rates = {id(r): [] for r in rows}
  cpu = {id(r): [] for r in rows}
  for w in range(args.windows):
    if w and over(1.0):
      print(f'out of time (--budget_s) after {w} windows', flush=True)
      break
    for row in rows:
      time.sleep(args.pause)
      cpu0 = time.process_time()
      seconds = row.run(args.steps)
      cpu[id(row)].append(1000 * (time.process_time() - cpu0) / args.steps)
      rates[id(row)].append(args.steps * row.batch_size / seconds)
    print(f'window {w + 1}/{args.windows}: ' + ', '.join(
        f'{r.name} {r.dtype} {rates[id(r)][-1]:.1f}' for r in rows), flush=True)
  for row in rows:
    row.check_finite()
  for row in rows:
    rate = statistics.median(rates[id(row)])
    results.append({**row.info, 'name': row.name, 'dtype': row.dtype,
                    'images_per_sec': rate,
                    'images_per_sec_windows': rates[id(row)],
                    'step_ms': 1000 * args.batch_size / rate,
                    # CPU time of this process's threads (all frameworks'
                    # threads are in it): less sensitive than wall time to
                    # other processes' load, but counts spinning threads.
                    'process_cpu_ms_per_step': statistics.median(cpu[id(row)])})
    row.close()
  _release()
  for d in dtypes:  # Again at the end: the better of the two is the ceiling.
    ceilings[d] = max(ceilings[d], matmul_ceiling(d, ceiling_n))

  for r in results:
    r['train_gflop_per_image'] = flops / 1e9
    r['fraction_of_ceiling'] = (flops * r['images_per_sec']
                                / ceilings[r['dtype']])
    ref = [t for t in results if t['name'] == 'torch eager'
           and t['dtype'] == r['dtype']]
    r['vs_torch_eager'] = (r['images_per_sec'] / ref[0]['images_per_sec']
                           if ref else None)
  device = jax.devices()[0]
  return {
      'date': datetime.date.today().isoformat(),
      'machine': {'backend': backend, 'device': device.device_kind,
                  'devices': jax.device_count(), 'host': platform.node(),
                  'cpus': os.cpu_count(), 'python': platform.python_version(),
                  'jax': jax.__version__,
                  'xla_flags': os.environ.get('XLA_FLAGS', ''),
                  'load_average_end': os.getloadavg()},
      'settings': {k: v for k, v in vars(args).items()},
      'matmul_ceiling_flops': ceilings,
      'rows': results,
      'skipped': skipped,
  }


def table(report: dict) -> str:
  s = report['settings']
  m = report['machine']
  on_cpu = m['backend'] == 'cpu'  # Process CPU time means little on a GPU.
  cpu_head, cpu_sep = (' CPU ms/step |', '---|') if on_cpu else ('', '')
  lines = [
      f"Training step, {s['variant']} net, width {s['width']}, "
      f"{s['image_size']}x{s['image_size']}, batch {s['batch_size']}, "
      f"{s['num_classes']} classes; {m['device']} ({m['backend']}), "
      f"jax {m['jax']}, {report['date']}; median of {s['windows']} windows "
      f"of {s['steps']} steps.",
      '',
      '| implementation | dtype | images/s | ms/step | compile s | '
      '% of matmul ceiling | vs torch eager |' + cpu_head,
      '|---|---|---|---|---|---|---|' + cpu_sep,
  ]
  for r in report['rows']:
    vs = f"{r['vs_torch_eager']:.2f}x" if r['vs_torch_eager'] else '-'
    cpu_ms = r.get('process_cpu_ms_per_step')
    cpu_cell = ('' if not cpu_head else
                f' {cpu_ms:.0f} |' if cpu_ms is not None else ' - |')
    lines.append(
        f"| {r['name']} | {r['dtype']} | {r['images_per_sec']:,.1f} | "
        f"{r['step_ms']:.1f} | {r['compile_s']:.1f} | "
        f"{100 * r['fraction_of_ceiling']:.1f} | {vs} |" + cpu_cell)
  return '\n'.join(lines)


def _same_net(row: dict) -> bool:
  """False for reference rows that change the network (no groups, no LRN)."""
  if row['framework'] != 'jax':
    return True
  model = row['model']
  return model.get('groups', 2) == 2 and model.get('lrn', True)


def goals(reports: list[dict]) -> list[str]:
  """The issue's goals, checked on the rows of the paper's net.

  On a GPU: bf16 at least 43,000 images/s and twice torch.compile's; fp32 at
  least twice torch eager's. On a CPU (fp32): at least torch eager's.
  """
  rows = [r for rep in reports for r in rep['rows']]
  gpu = any(rep['machine']['backend'] == 'gpu' for rep in reports)
  lines = []

  def best(dtype, framework='jax', name=None):
    cands = [r for r in rows if r['dtype'] == dtype and
             r['framework'] == framework and _same_net(r) and
             (name is None or r['name'] == name)]
    return max(cands, key=lambda r: r['images_per_sec']) if cands else None

  def check(label, row, target):
    if row is None or target is None:
      lines.append(f'- {label}: not measured')
      return
    ok = 'MET' if row['images_per_sec'] >= target else 'NOT MET'
    lines.append(f"- {label}: {row['name']} {row['images_per_sec']:,.0f} "
                 f'images/s vs target {target:,.0f}: {ok}')

  times = lambda row, k: None if row is None else k * row['images_per_sec']
  if gpu:
    b = best('bfloat16')
    check('bf16 >= 43,000 images/s', b, 43_000.0)
    check('bf16 >= 2x torch.compile bf16', b,
          times(best('bfloat16', 'torch', 'torch compile'), 2))
    check('fp32 >= 2x torch eager fp32', best('float32'),
          times(best('float32', 'torch', 'torch eager'), 2))
  else:
    check('fp32 >= torch eager fp32', best('float32'),
          times(best('float32', 'torch', 'torch eager'), 1))
  return lines


def summarize(paths: list[str]) -> str:
  """The tables of saved reports (missing files are named), and the goals."""
  reports, parts = [], []
  for path in paths:
    if not os.path.exists(path):
      parts.append(f'{path}: missing (that stage failed or timed out).')
      continue
    with open(path) as f:
      reports.append(json.load(f))
    parts.append(table(reports[-1]))
  if reports:
    parts.append('Goals (rows of the paper\'s net only):\n' +
                 '\n'.join(goals(reports)))
  return '\n\n'.join(parts)


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                 help='Comma-separated CONV/LRN/CONV1[/EXTRA...] or default.')
  p.add_argument('--dtypes', default='float32',
                 help='Comma-separated: float32, bfloat16.')
  p.add_argument('--image_size', type=int, default=227)
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--num_classes', type=int, default=1000)
  p.add_argument('--width', type=float, default=1.0)
  p.add_argument('--variant', default='paper', choices=models.VARIANTS)
  p.add_argument('--steps', type=int, default=5, help='Steps per window.')
  p.add_argument('--windows', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--pause', type=float, default=0.5,
                 help='Seconds of idle before each window (lets the other '
                      "framework's threads go to sleep).")
  p.add_argument('--torch', default='inprocess',
                 choices=('inprocess', 'subprocess', 'none'))
  p.add_argument('--torch_compile', action=argparse.BooleanOptionalAction,
                 default=False, help='Also time torch.compile.')
  p.add_argument('--torch_device', default='auto',
                 choices=('auto', 'cpu', 'cuda'))
  p.add_argument('--torch_channels_last', action=argparse.BooleanOptionalAction,
                 default=None,
                 help='Default: channels_last on CUDA, NCHW on CPU (faster '
                      'there, see docs/performance.md).')
  p.add_argument('--ceiling_size', type=int, default=0,
                 help='Matmul size for the ceiling (0: 8192 GPU, 2048 CPU).')
  p.add_argument('--budget_s', type=float, default=0,
                 help='Soft time limit (0: none): no compilation starts after '
                      '75%% of it, no window after all of it; the report is '
                      'written either way.')
  p.add_argument('--tiny', action='store_true',
                 help='A seconds-long check of the script: width 0.05, 67x67, '
                      'batch 4, 10 classes, 2 windows of 1 step.')
  p.add_argument('--scratch', default='/tmp',
                 help='Directory for the torch subprocesses\' JSON.')
  p.add_argument('--output', default=None, help='Write the report as JSON.')
  p.add_argument('--summarize', nargs='+', default=None, metavar='JSON',
                 help='Measure nothing: print the tables and goals of saved '
                      'reports.')
  args = p.parse_args(argv)
  if args.tiny:
    args.width, args.image_size, args.batch_size = 0.05, 67, 4
    args.num_classes, args.steps, args.windows, args.warmup = 10, 1, 2, 1
    args.pause, args.ceiling_size = 0.0, args.ceiling_size or 256
  return args


def main(argv=None) -> dict | None:
  args = _parse(argv)
  if args.summarize:
    print(summarize(args.summarize))
    return None
  if args.torch_channels_last is None:
    args.torch_channels_last = jax.default_backend() == 'gpu'
  report = measure(args)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w') as f:
      json.dump(report, f, indent=2)
  print()
  print(table(report))
  print()
  print('\n'.join(goals([report])))
  return report


if __name__ == '__main__':
  main(sys.argv[1:])
