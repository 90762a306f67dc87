"""Training progress: a run's wall time across resumes, a smoothed rate, an
ETA counting the evaluations to come, and a profiler trace of a few steps."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

from absl import logging
import jax

from alexnet_jax import metrics_writer


def resumed_elapsed(workdir: str, step: int) -> float:
  """`elapsed_s` of the last metrics.jsonl row at or before `step` (0 if
  none): read there so that checkpoints keep the training state alone."""
  if not step or not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    return 0.0
  rows = [r for r in metrics_writer.read_metrics(workdir)
          if r.get('step', 0) <= step and 'elapsed_s' in r]
  return float(rows[-1]['elapsed_s']) if rows else 0.0


class Progress:
  """The loop's rate between log steps (`start_window` once the first step
  has compiled, `end_window` at each log step) without the evaluations it
  wraps in `timing_eval` (timed apart for the ETA). The rate is smoothed by
  an exponential moving average (0.3 on the newest window); before
  a window is timed it is that of the time since start, compilation in."""

  def __init__(self, total_steps: int, eval_every_steps: int,
               elapsed_before: float = 0.0,
               clock: Callable[[], float] | None = None, start_step: int = 0):
    self.total_steps = total_steps
    self.start_step = start_step
    self._first_rate: float | None = None  # Compilation included.
    self.eval_every_steps = eval_every_steps
    self._clock = clock or time.perf_counter
    self._started = self._clock()
    self._elapsed_before = elapsed_before
    self._window: tuple[int, float] | None = None
    self.steps_per_sec: float | None = None  # Smoothed.
    self.eval_seconds: float | None = None  # The last evaluation's.

  def elapsed(self) -> float:
    """Wall seconds of the run, before this resume and since."""
    return self._elapsed_before + self._clock() - self._started

  @property
  def timing(self) -> bool:  # Whether `start_window` has been called.
    return self._window is not None

  def start_window(self, step: int) -> None:
    self._window = (step, self._clock())

  def end_window(self, step: int) -> float:
    """The rate (steps/s) since `start_window`; starts the next window."""
    (start_step, start_time), now = self._window, self._clock()
    rate = 0.0
    if step > start_step and now > start_time:
      rate = (step - start_step) / (now - start_time)
      self.steps_per_sec = rate if self.steps_per_sec is None else (
          0.3 * rate + 0.7 * self.steps_per_sec)
    elif step > self.start_step and now > self._started:
      rate = self._first_rate = (step - self.start_step) / (now - self._started)
    self._window = (step, now)
    return rate

  @contextlib.contextmanager
  def timing_eval(self) -> Iterator[None]:
    """Times the evaluation it wraps; the training window resumes after."""
    start = self._clock()
    yield
    now = self._clock()
    self.eval_seconds = now - start
    if self._window is not None:
      self._window = (self._window[0], self._window[1] + now - start)

  def remaining_evals(self, step: int) -> int:
    """Evaluations at `step` (logged before it evaluates) and after."""
    if step > self.total_steps:
      return 0
    every = self.eval_every_steps
    if every <= 0:
      return 1
    periodic = self.total_steps // every - (step - 1) // every
    return periodic + (1 if self.total_steps % every else 0)

  def eta(self, step: int) -> float | None:
    """Seconds to the end (None before a rate); untimed evaluations: 0."""
    rate = self.steps_per_sec or self._first_rate
    if not rate:
      return None
    return ((self.total_steps - step) / rate +
            self.remaining_evals(step) * (self.eval_seconds or 0.0))


def format_eta(seconds: float) -> str:
  """1h02m03s, or 2m03s under an hour."""
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class StepTrace:
  """A jax.profiler trace of `num_steps` training steps (0: none) from the
  first log step on (past the warm-up), into `logdir` (TensorBoard)."""

  def __init__(self, logdir: str, num_steps: int):
    self.logdir = logdir
    self.num_steps = num_steps
    self._first: int | None = None  # The step the trace started after.
    self._done = not num_steps

  def after_step(self, step: int, logged: bool, outputs) -> None:
    if self._done:
      return
    if self._first is None:
      if logged:
        jax.profiler.start_trace(self.logdir)
        self._first = step
    elif step - self._first >= self.num_steps:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:  # A trace still running: a run shorter than it.
    if self._first is not None and not self._done:
      jax.profiler.stop_trace()
      logging.info('Wrote a jax.profiler trace of steps %d-%d to %s '
                   '(tensorboard --logdir %s, the profile tab).',
                   self._first + 1, self._first + self.num_steps, self.logdir,
                   self.logdir)
    self._done = True
