"""SIGTERM (a preemption, a scheduler's time limit) as a request to save a
checkpoint and stop between steps."""

from __future__ import annotations

import signal

import jax
import numpy as np


# The exit status of a command whose run SIGTERM stopped before its last step,
# its checkpoint saved: sysexits.h's EX_TEMPFAIL ("try again later"), so a
# scheduler can tell a preempted run, to be resumed, from a finished or a
# failed one.
EXIT_STOPPED = 75


class Stopped(RuntimeError):
  """SIGTERM stopped a run before its last step (its checkpoint is saved)."""


class SigtermFlag:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def stop_requested(received: bool, at_shared_step: bool) -> bool:
  """Whether to stop for SIGTERM. The signal may reach one process only, so
  several processes decide together (an all-gather of their flags) at steps
  that all of them log, evaluate or checkpoint: one leaving the loop alone
  would leave the others waiting in a collective."""
  if jax.process_count() == 1:
    return received
  if not at_shared_step:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.array(received, np.int32))
  return bool(np.any(flags))
