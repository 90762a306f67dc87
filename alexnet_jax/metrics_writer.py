"""Metrics to TensorBoard (tensorboardX) and to `workdir/metrics.jsonl`."""

from __future__ import annotations

import json
import os
from typing import Mapping


class MetricsWriter:
  """One JSON object per logged step, and the same scalars for TensorBoard.

  `enabled=False` (processes other than 0) writes nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
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


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]
