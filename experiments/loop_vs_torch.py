r"""The training loop against PyTorch eager, alternating, in one run.

  python -m experiments.loop_vs_torch --output=/tmp/loop_vs_torch.json
  python -m experiments.loop_vs_torch --rounds=1 --steps=4 --width=0.05 \
      --image_size=67 --batch_size=8     # Seconds: checks the script.

The training loop against PyTorch eager on the CPU, as one program. Each
round runs, in child processes one after the other (the order alternates
between rounds, so a drift in the machine's load hits both alike):

* the training loop itself: `python -m alexnet_jax.main
  --config=configs/fake_benchmark.py` (random uint8 images, the paper's net,
  fp32, batch 32, the loop's XLA options), `--steps` steps logged every
  `--log_every` steps; its figure is the median of the `images_per_sec` rows
  of `metrics.jsonl` (the first step, which compiles, is never timed);
* `experiments/torch_reference.py` on the CPU, the same net and batch, in each
  of `--torch_formats` (channels-last and/or NCHW memory format), with
  `--log_every`-step windows.

The table printed last gives every round's figures, the medians over rounds,
each program's peak resident memory (the largest over rounds, from the
child's rusage) and the loop's median against the faster PyTorch format's. Needs torch and
ml_collections (the loop's config file); no TensorFlow is imported.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import types

from absl import app
from absl import flags

from alexnet_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_FORMATS = {'channels_last': '--channels_last',
                 'nchw': '--no-channels_last'}

_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds (the order alternates).')
_STEPS = flags.DEFINE_integer('steps', 30, 'Training-loop steps per round '
                              '(PyTorch times as many).')
_LOG_EVERY = flags.DEFINE_integer('log_every', 10, 'Steps per timed window, '
                                  'in both programs.')
_CPU_CONV = flags.DEFINE_enum(
    'xla_cpu_conv_library', 'eigen', ['eigen', 'xla_default'],
    "The loop's config.execution.xla_cpu_conv_library.")
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Batch size.')
_TORCH_FORMATS = flags.DEFINE_list(
    'torch_formats', list(TORCH_FORMATS),
    f'PyTorch memory formats, of {tuple(TORCH_FORMATS)}.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 227, 'Input side.')
_WIDTH = flags.DEFINE_float('width', 1.0, 'Width multiplier.')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the JSON here.')


def _run(cmd: list[str], env: dict[str, str]) -> int:
  """Runs `cmd`; returns its peak resident memory in bytes."""
  with tempfile.TemporaryFile('w+') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
      log.seek(0)
      raise RuntimeError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                         f'{log.read()[-3000:]}')
  return usage.ru_maxrss * 1024  # Linux reports kilobytes.


def run_loop(args, workdir: str, env: dict[str, str]) -> dict:
  """The training loop on fake data; images/s from its metrics.jsonl."""
  cmd = [sys.executable, '-m', 'alexnet_jax.main',
         '--config=configs/fake_benchmark.py', f'--workdir={workdir}',
         f'--config.num_train_steps={args.steps}',
         f'--config.log_every_steps={args.log_every}',
         f'--config.batch_size={args.batch_size}',
         f'--config.eval_batch_size={args.batch_size}',
         f'--config.image_size={args.image_size}',
         f'--config.resize_size={args.image_size}',
         f'--config.model.width={args.width}',
         '--config.execution.xla_cpu_conv_library='
         f'{args.xla_cpu_conv_library}']
  peak_rss = _run(cmd, env)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  # A row's images/s covers the steps since the previous row; the first
  # row's excludes step 1 (compilation). A short last window is dropped.
  windows = [r['images_per_sec'] for r in rows
             if r['step'] % args.log_every == 0]
  if not windows:
    raise RuntimeError(f'No images_per_sec rows in {workdir}/metrics.jsonl.')
  return {'images_per_sec': statistics.median(windows),
          'images_per_sec_windows': windows, 'peak_rss_bytes': peak_rss}


def run_torch(args, fmt: str, env: dict[str, str]) -> dict:
  with tempfile.NamedTemporaryFile(suffix='.json') as out:
    cmd = [sys.executable, '-m', f'{__package__}.torch_reference',
           '--device=cpu', f'--batch_size={args.batch_size}',
           f'--image_size={args.image_size}', f'--width={args.width}',
           f'--steps={args.log_every}',
           f'--windows={max(1, args.steps // args.log_every)}', '--warmup=2',
           TORCH_FORMATS[fmt], f'--output={out.name}']
    peak_rss = _run(cmd, env)
    result = json.load(open(out.name))
  return {'images_per_sec': result['images_per_sec'],
          'images_per_sec_windows': result['images_per_sec_windows'],
          'torch_version': result['torch_version'],
          'threads': result['threads'], 'peak_rss_bytes': peak_rss}


def main(args) -> dict:
  """Runs the rounds that `args` (the flags' values) describe."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  names = ['jax loop'] + [f'torch eager {f}' for f in args.torch_formats]
  rounds = []
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(args.rounds):
      order = names if i % 2 == 0 else names[::-1]
      results = {}
      for name in order:
        if name == 'jax loop':
          results[name] = run_loop(args, os.path.join(tmp, f'loop{i}'), env)
        else:
          results[name] = run_torch(args, name.split()[-1], env)
        print(f'round {i + 1}/{args.rounds}: {name} '
              f'{results[name]["images_per_sec"]:.1f} img/s', flush=True)
      rounds.append({'order': order, 'results': results})

  medians = {n: statistics.median(r['results'][n]['images_per_sec']
                                  for r in rounds) for n in names}
  best_torch = max((n for n in names if n != 'jax loop'), key=medians.get)
  ratio = medians['jax loop'] / medians[best_torch]
  summary = {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'machine': {'platform': platform.platform(),
                  'processor': platform.processor() or platform.machine(),
                  'cpus': os.cpu_count(), 'python': platform.python_version(),
                  'load_average_at_end': os.getloadavg()},
      'settings': vars(args), 'rounds': rounds, 'medians': medians,
      'best_torch': best_torch, 'loop_vs_best_torch': ratio,
  }
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(summary, f, indent=2)
  print(table(summary))
  return summary


def table(summary: dict) -> str:
  names = list(summary['medians'])
  lines = ['| round | ' + ' | '.join(names) + ' |',
           '|---|' + '---|' * len(names)]
  for i, r in enumerate(summary['rounds'], start=1):
    lines.append(f'| {i} | ' + ' | '.join(
        f"{r['results'][n]['images_per_sec']:.1f}" for n in names) + ' |')
  lines.append('| median | ' + ' | '.join(
      f"{summary['medians'][n]:.1f}" for n in names) + ' |')
  lines.append('| peak RSS (GB) | ' + ' | '.join(
      f"{max(r['results'][n]['peak_rss_bytes'] for r in summary['rounds']) / 1e9:.2f}"
      for n in names) + ' |')
  s = summary['settings']
  lines.append(
      f"\nimages/s, batch {s['batch_size']}, {s['image_size']}px, width "
      f"{s['width']}, fp32, {summary['machine']['cpus']} CPUs, "
      f"{summary['date']}. Loop / {summary['best_torch']}: "
      f"{summary['loop_vs_best_torch']:.2f}x.")
  return '\n'.join(lines)


def _check_flags() -> None:
  for f in _TORCH_FORMATS.value:
    if f not in TORCH_FORMATS:
      raise app.UsageError(f'--torch_formats: {f!r} is not one of '
                           f'{tuple(TORCH_FORMATS)}.')
  if _STEPS.value < _LOG_EVERY.value:
    raise app.UsageError(f'--steps={_STEPS.value} must be at least '
                         f'--log_every={_LOG_EVERY.value}.')


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _check_flags()
  main(types.SimpleNamespace(
      rounds=_ROUNDS.value, steps=_STEPS.value, log_every=_LOG_EVERY.value,
      batch_size=_BATCH_SIZE.value, image_size=_IMAGE_SIZE.value,
      width=_WIDTH.value, xla_cpu_conv_library=_CPU_CONV.value,
      torch_formats=_TORCH_FORMATS.value, output=_OUTPUT.value))


def run():
  """Console-script entry point (`alexnet-loop-vs-torch`)."""
  cli.run_console_script(_main, __name__)


if __name__ == '__main__':
  run()
