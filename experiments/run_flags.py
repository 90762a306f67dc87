"""The flags of the experiments that train (ablate, figure1): the base config,
the work directory and the seeds per variant."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from alexnet_jax import cli

WORKDIR = flags.DEFINE_string('workdir', None,
                              'Directory for the runs and what they produce.')
CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The base config file, e.g. configs/default.py.',
    lock_config=True)
SEEDS = flags.DEFINE_integer('seeds', 1, 'Runs per variant (the config\'s '
                             'seed + k for run k).')
flags.mark_flags_as_required(['config', 'workdir'])


def describe_config() -> str:
  """'`configs/default.py` with `--config.a=1`' for the Markdown."""
  text = f'`{config_flags.get_config_filename(flags.FLAGS["config"])}`'
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  if overrides:
    text += ' with ' + ' '.join(f'`--config.{k}={v}`'
                                for k, v in overrides.items())
  return text


def start(module_name: str, main) -> None:
  """Runs `main` as a console script: --help lists `module_name`'s flags and
  these as the program's own; a bad --config.x=y is one line, not a
  traceback."""
  cli.run_console_script(main, module_name, __name__)
