"""What the commands that read a trained run (figure3, figure4) share: the
flags naming the run, where to write and the checkpoint's step, and the
frame of their `main` (one-line errors, where they wrote)."""

from __future__ import annotations

from typing import Any, Callable

from absl import app
from absl import flags


def define() -> None:
  """--run, --workdir and --step, defined when the command runs: absl allows
  one --workdir per process, and tools import every experiment together."""
  flags.DEFINE_string('run', None, 'The workdir of a training run.')
  flags.DEFINE_string('workdir', None,
                      'Where to write the figure and its JSON.')
  flags.DEFINE_integer('step', None,
                       'The checkpoint to read (default: the newest).')
  flags.mark_flags_as_required(['run', 'workdir'])


def values() -> tuple[str, str, int | None]:
  """(run, workdir, step) as the command line gave them."""
  return flags.FLAGS.run, flags.FLAGS.workdir, flags.FLAGS.step


def main_of(produce: Callable[[], dict[str, Any]],
            report: Callable[[dict[str, Any]], None]):
  """absl's `main`: `produce()` (its result holding the 'paths' written),
  `report(result)`, then where it wrote."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    result = produce()  # A user's error: one line (cli.run_console_script).
    report(result)
    print(f'Wrote {result["paths"]["png"]} and {result["paths"]["json"]}.')

  return main
