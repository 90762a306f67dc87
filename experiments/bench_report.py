"""The benchmark's report: the machine, the Markdown table and its notes."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import Any, Sequence

import jax


def machine_info() -> dict[str, Any]:
  import flax  # pylint: disable=g-import-not-at-top
  device = jax.local_devices()[0]
  return {
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'local_devices': jax.local_device_count(),
      'jax': jax.__version__,
      'flax': flax.__version__,
      'python': platform.python_version(),
      'cpu_count': os.cpu_count(),
      'host': platform.node(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'memory_stats': device.memory_stats() is not None,
  }


def process_memory() -> dict[str, int | None]:
  """The allocator's peak on the first device (None on a CPU) and this
  process's peak resident memory on the host: maxima over the process, so a
  row's own only in a process of its own (--isolate)."""
  stats = jax.local_devices()[0].memory_stats()
  try:
    import resource  # pylint: disable=g-import-not-at-top
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = rss if sys.platform == 'darwin' else rss * 1024  # Linux: KiB.
  except ImportError:  # Windows.
    rss = None
  return {'peak_bytes_in_use': (stats or {}).get('peak_bytes_in_use'),
          'process_peak_rss_bytes': rss}


def add_ceiling_and_torch(rows: Sequence[dict], ceilings: dict) -> None:
  """Each row's fraction of the measured matmul ceiling (model FLOPs per
  image x images/s per device / ceiling) and its speed against PyTorch eager
  at the same dtype and batch."""
  eager = {(r['dtype'], r['batch_per_device']): r['images_per_sec_per_device']
           for r in rows if r.get('variant') == 'torch eager'
           and 'error' not in r}
  for r in rows:
    if 'error' in r:
      continue
    gflop = r.get('train_gflop_per_image')
    ceiling = ceilings.get(r['dtype'])
    r['fraction_of_ceiling'] = (
        gflop * 1e9 * r['images_per_sec_per_device'] / ceiling
        if gflop and ceiling else None)
    ref = eager.get((r['dtype'], r['batch_per_device']))
    r['vs_torch_eager'] = (r['images_per_sec_per_device'] / ref
                           if ref else None)


def _num(value, fmt: str) -> str:
  return '—' if value is None else format(value, fmt)


def _mib(value) -> str:
  return '—' if value is None else f'{value / 2**20:,.1f}'


def _mb(value):
  return None if value is None else value / 1e6


HEADER = ('| variant | dtype | devices | batch/dev | img/s/dev | ms/step | '
          'compile s | CPU ms/step | % of matmul ceiling | vs torch eager | '
          'XLA mem MiB | peak mem MiB | host RSS MiB | '
          'MB sent/dev/step (shapes, HLO) |')


def _cells(r: dict) -> list[str]:
  return [
      _num(r.get('images_per_sec_per_device'), ',.1f'),
      _num(r.get('step_ms'), '.2f'), _num(r.get('compile_s'), '.1f'),
      _num(r.get('process_cpu_ms_per_step'), '.0f'),
      _num(r.get('fraction_of_ceiling'), '.1%'),
      _num(r.get('vs_torch_eager'), '.2f'),
      _mib(r.get('xla_memory_bytes')), _mib(r.get('peak_bytes_in_use')),
      _mib(r.get('process_peak_rss_bytes')),
      _num(_mb(r.get('bytes_sent_per_device')), ',.2f') + ', ' +
      _num(_mb(r.get('hlo_bytes_sent_per_device')), ',.2f')]


def markdown(report: dict) -> str:
  m, s = report['machine'], report['settings']
  lines = [
      f'# AlexNet training step: {m.get("device_kind")} ({m.get("backend")}),'
      f' {m.get("date")}', '',
      f'jax {m.get("jax")}, flax {m.get("flax")}, {m.get("local_devices")} '
      f'local device(s); random uint8 images made on the device; median of '
      f'{s["windows"]} windows of {s["steps_per_window"]} steps, taken '
      'round-robin over the rows.', '', HEADER,
      '|' + '---|' * HEADER.count(' | ') + '---|']
  for r in report['rows']:
    head = (f'| {r["variant"]} | {r["dtype"]} | {r.get("devices")} | '
            f'{r["batch_per_device"]} |')
    if 'error' in r:
      message = r['error'][:120].replace('|', '/')
      lines.append(f'{head} failed: {message} |' + ' |' * 9)
    else:
      lines.append(' '.join([head, ' | '.join(_cells(r)), '|']))
  lines += [''] + [f'- {note}' for note in report['notes']]
  return '\n'.join(lines) + '\n'


def notes(rows: Sequence[dict], machine: dict, ceilings: dict,
          isolated: bool) -> list[str]:
  out = [f'Matmul ceiling {d}: {c / 1e12:.3f} TFLOP/s (best of the runs '
         'before and after the rows).' for d, c in ceilings.items()]
  ok = [r for r in rows if 'error' not in r and r.get('framework') == 'jax']
  for r in ok:
    if r['overrides']:
      out.append(f'{r["variant"]}: {json.dumps(r["overrides"])}.')
  out = list(dict.fromkeys(out))  # Each variant once.
  if not machine.get('memory_stats'):
    out.append('Peak memory omitted: this backend reports no memory stats '
               '(CPU); "XLA mem" is the compiled step\'s estimate (arguments '
               '+ outputs + temporaries, per device).')
  if not isolated:
    out.append('Peak memory and host RSS are maxima over the whole process '
               '(rows run in one process); use --isolate for per-row '
               'figures.')
  return out


def summarize(paths: Sequence[str]) -> str:
  """The tables of saved reports; a missing file is named."""
  parts = []
  for path in paths:
    if not os.path.exists(path):
      parts.append(f'{path}: missing (that stage failed or timed out).')
      continue
    with open(path) as f:
      parts.append(markdown(json.load(f)))
  return '\n\n'.join(parts)
