"""Metrics to TensorBoard (tensorboardX) and to `workdir/metrics.jsonl`.

TensorBoard (`tensorboard --logdir WORKDIR`) finds the scalars under
`train/` and `eval/`, the config in the text tab and the HParams dashboard.
"""

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
      tag = tensorboard_tag(name)
      if tag:
        self._tb.add_scalar(tag, value, global_step=int(step))
    self._tb.flush()

  def write_config(self, config) -> None:
    """The resolved config, as text and as hyperparameters (TensorBoard's
    HParams dashboard, which compares runs by them and HPARAM_METRICS)."""
    if not self.enabled:
      return
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    # Indented four spaces: a Markdown code block in TensorBoard's text tab.
    self._tb.add_text('config', '\n'.join('    ' + line
                                         for line in text.splitlines()))
    experiment, session_start, _ = summary.hparams(
        flat_hparams(config), dict.fromkeys(HPARAM_METRICS, 0.0))
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
  """The TensorBoard tag of a metrics.jsonl field: eval_* under 'eval/',
  the rest under 'train/'. None for fields that are no curve (the step, the
  number of evaluated examples, a constant of the dataset)."""
  if name in ('step', 'eval_examples'):
    return None
  if name.startswith('eval_'):
    return 'eval/' + name[len('eval_'):]
  return 'train/' + name.removeprefix('train_')


def flat_hparams(config) -> dict[str, bool | int | float | str]:
  """The config's leaves by dotted name; sequences and None as text."""
  flat = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      flat.update({f'{key}.{k}': v for k, v in flat_hparams(value).items()})
    elif isinstance(value, (bool, int, float, str)):
      flat[key] = value
    else:
      flat[key] = str(value)
  return flat


CLASS_NAMES_FILE = 'class_names.txt'  # One class name per line, by label.


def write_class_names(workdir: str, names) -> None:
  with open(os.path.join(workdir, CLASS_NAMES_FILE), 'w') as f:
    f.write(''.join(f'{name}\n' for name in names))


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]
