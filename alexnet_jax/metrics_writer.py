"""Metrics to `workdir/metrics.jsonl` and TensorBoard (tensorboardX): the
scalars under `train/` and `eval/`, the config in the text tab and the HParams
dashboard."""

from __future__ import annotations

import json
import os
from typing import Mapping

from absl import logging

from alexnet_jax import config_fields


class MetricsWriter:
  """One JSON object per logged step, and the same scalars for TensorBoard;
  `enabled=False` (processes other than 0) writes nothing. A run starting at
  `resume_step` first drops the rows a crashed run wrote after it, so the
  file reads as one run; `resume_step=None` keeps every row."""

  def __init__(self, workdir: str, enabled: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(path) and resume_step is not None:
      keep = [r for r in read_metrics(workdir) if r['step'] <= resume_step]
      with open(path) as f:
        text = f.read()
      # Rows dropped, a torn last line, or one without its newline.
      lines = [line for line in text.splitlines() if line.strip()]
      if len(keep) != len(lines) or not text.endswith('\n'):
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
      tag = tensorboard_tag(name)
      if tag:
        self._tb.add_scalar(tag, value, global_step=int(step))
    self._tb.flush()

  def write_config(self, record: dict) -> None:
    """The resolved config record, as text and as hyperparameters (the
    HParams dashboard compares runs by them and HPARAM_METRICS)."""
    if not self.enabled:
      return
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    text = json.dumps(record, indent=2, sort_keys=True)
    # Indented four spaces: a Markdown code block in TensorBoard's text tab.
    self._tb.add_text('config', '\n'.join('    ' + line
                                         for line in text.splitlines()))
    # Sequences and None as text.
    hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
               for k, v in config_fields.flatten(record).items()}
    experiment, session_start, _ = summary.hparams(
        hparams, dict.fromkeys(HPARAM_METRICS, 0.0))
    self._tb.file_writer.add_summary(experiment)
    self._tb.file_writer.add_summary(session_start)
    self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()


# The scalars the HParams dashboard shows beside each run's config.
HPARAM_METRICS = ('eval/top1', 'eval/top5', 'eval/loss', 'train/loss',
                  'train/top1')


def tensorboard_tag(name: str) -> str | None:
  """eval_* under 'eval/', the rest under 'train/'; None for no curve."""
  if name in ('step', 'eval_examples'):
    return None
  if name.startswith('eval_'):
    return 'eval/' + name[len('eval_'):]
  return 'train/' + name.removeprefix('train_')


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`, without a torn last line (a write
  cut short by a crash); any other line that is no JSON raises."""
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if number < len(lines):
        raise ValueError(f'{path}, line {number}: not a JSON object: '
                         f'{line[:80]!r}') from None
      logging.warning('%s: dropped its last line (%d), cut short by a crash.',
                      path, number)
  return rows
