"""Files that cache what is costly to compute (folder scans, means), named by
a digest of what they depend on. A cache that cannot be read is recomputed;
one that cannot be written is only logged."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

from absl import logging
import numpy as np


def digest(*parts: Any) -> str:
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_npy(path: str) -> np.ndarray | None:
  try:
    return np.load(path)
  except (OSError, ValueError):
    return None


def _write_atomically(path: str, suffix: str, write: Callable[[str], None]
                      ) -> None:
  """`write(tmp)` then renames tmp to `path`: readers never see half a file."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}{suffix}'
    write(tmp)
    os.replace(tmp, path)
  except OSError as e:
    logging.warning('Could not write the cache file %s: %s', path, e)


def write_json(path: str, value: Any) -> None:
  def write(tmp):
    with open(tmp, 'w') as f:
      json.dump(value, f, indent=1)
  _write_atomically(path, '', write)


def write_npy(path: str, value: np.ndarray) -> None:
  # np.save appends '.npy' to a name without it.
  _write_atomically(path, '.npy', lambda tmp: np.save(tmp, value))
