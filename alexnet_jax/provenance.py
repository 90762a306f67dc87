"""What made a run: one JSON line per start or resume in
`workdir/provenance.jsonl` (appended, never rewritten), naming the package
versions, the machine, the code's git commit and the command line."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from typing import Any

import jax

FILE = 'provenance.jsonl'
# Distributions by name; tensorflow only where the run imported it.
PACKAGES = ('alexnet_jax', 'jax', 'jaxlib', 'flax', 'optax',
            'orbax-checkpoint', 'numpy')


def package_versions() -> dict[str, str | None]:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  tf = sys.modules.get('tensorflow')
  if tf is not None:  # Its distribution may be tensorflow or tensorflow-cpu.
    versions['tensorflow'] = getattr(tf, '__version__', None)
  return versions


def _git(args: list[str], cwd: str) -> str | None:
  try:
    done = subprocess.run(['git', *args], cwd=cwd, capture_output=True,
                          text=True, timeout=10, check=True)
  except (OSError, subprocess.SubprocessError):  # No git, no repo, too slow.
    return None
  return done.stdout.strip()


def git_state() -> dict[str, Any] | None:
  """The commit of the git checkout holding this package and whether tracked
  files differ from it; None outside a checkout."""
  path = os.path.dirname(os.path.abspath(__file__))
  commit = _git(['rev-parse', 'HEAD'], path)
  if not commit:
    return None
  status = _git(['status', '--porcelain', '--untracked-files=no'], path)
  return {'commit': commit, 'dirty': None if status is None else bool(status)}


def record(workdir: str, start_step: int) -> dict[str, Any]:
  """Appends this start's line to `workdir/provenance.jsonl`; returns it."""
  devices = jax.devices()
  row = {
      'time_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'start_step': int(start_step),
      'command': list(sys.argv),
      'hostname': socket.gethostname(),
      'python': platform.python_version(),
      'packages': package_versions(),
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': len(devices),
      'process_count': jax.process_count(),
      'git': git_state(),
  }
  with open(os.path.join(workdir, FILE), 'a') as f:
    f.write(json.dumps(row) + '\n')
  return row


def read(workdir: str) -> list[dict[str, Any]]:
  with open(os.path.join(workdir, FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]
