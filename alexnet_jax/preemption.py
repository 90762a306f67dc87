"""SIGTERM (a preemption, a scheduler's time limit) as a request to save a
checkpoint and stop between steps."""

from __future__ import annotations

import signal

import jax
import numpy as np


# A run SIGTERM stopped, to be resumed: sysexits.h's EX_TEMPFAIL ("try again
# later"), so a scheduler can tell it from a finished or failed one.
EXIT_STOPPED = 75


class Stopped(RuntimeError):
  """SIGTERM stopped a run before its last step (its checkpoint is saved)."""


class SigtermFlag:
  """Turns SIGTERM into a flag the loop checks between steps."""
  received = False

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def stop_requested(received: bool, at_shared_step: bool) -> bool:
  """Whether to stop for SIGTERM. It may reach one process only, so processes
  decide together (all-gathering their flags) at steps all of them sync at:
  one leaving alone would leave the others waiting in a collective."""
  if jax.process_count() == 1:
    return received
  if not at_shared_step:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.array(received, np.int32))
  return bool(np.any(flags))
