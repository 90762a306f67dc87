"""Metrics to TensorBoard (tensorboardX) and to `workdir/metrics.jsonl`."""

from __future__ import annotations

import json
import os
from typing import Mapping


class MetricsWriter:
  """One JSON object per logged step, and the same scalars for TensorBoard.

  `enabled=False` (processes other than 0) writes nothing. A run resumed
  from the checkpoint of `resume_step` first drops the rows a crashed run
  wrote after that step, so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, enabled: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(path):
      rows = read_metrics(workdir)
      keep = [r for r in rows if resume_step and r['step'] <= resume_step]
      if len(keep) != len(rows):
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
          f.writelines(json.dumps(r) + '\n' for r in keep)
        os.replace(tmp, path)
    self._jsonl = open(path, 'a')
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {'step': int(step)}
    row.update({k: (float(v) if not isinstance(v, int) else v)
                for k, v in metrics.items() if k != 'step'})
    self._jsonl.write(json.dumps(row) + '\n')
    self._jsonl.flush()
    for name, value in row.items():
      if name != 'step':
        self._tb.add_scalar(name, value, global_step=int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()


CLASS_NAMES_FILE = 'class_names.txt'  # One class name per line, by label.


def write_class_names(workdir: str, names) -> None:
  with open(os.path.join(workdir, CLASS_NAMES_FILE), 'w') as f:
    f.write(''.join(f'{name}\n' for name in names))


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]
