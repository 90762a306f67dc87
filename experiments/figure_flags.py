"""What the commands that read a trained run (figure3, figure4) share: the
flags naming the run, where to write and the checkpoint's step, and the
frame of their `main` (one-line errors, where they wrote)."""

from __future__ import annotations

import sys
from typing import Any, Callable

from absl import app
from absl import flags

from experiments import common
from experiments import run_loading

RUN = flags.DEFINE_string('run', None, 'The workdir of a training run.')
WORKDIR = flags.DEFINE_string('workdir', None,
                              'Where to write the figure and its JSON.')
STEP = flags.DEFINE_integer('step', None,
                            'The checkpoint to read (default: the newest).')
flags.mark_flags_as_required(['run', 'workdir'])


def _user_errors() -> tuple[type[Exception], ...]:
  """A run that cannot be read, a bad config or data: the user's to fix."""
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  pipeline = sys.modules.get('alexnet_jax.input_pipeline')  # If it was used.
  return (run_loading.RunError, config_lib.ConfigError) + (
      (pipeline.DataError,) if hasattr(pipeline, 'DataError') else ())


def main_of(name: str, produce: Callable[[], dict[str, Any]],
            report: Callable[[dict[str, Any]], None]):
  """absl's `main` for command `name`: `produce()` (its result holding the
  'paths' written), a user's error as one line, `report(result)`, then
  where it wrote."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    common.quiet_libraries()
    try:
      result = produce()
    except Exception as e:  # pylint: disable=broad-except
      if not isinstance(e, _user_errors()):
        raise
      sys.exit(f'{name}: {e}')
    report(result)
    print(f'Wrote {result["paths"]["png"]} and {result["paths"]["json"]}.')

  return main
