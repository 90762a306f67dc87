r"""Command line: train and evaluate AlexNet from an ml_collections config.

  python -m alexnet_jax.main --config=configs/default.py --workdir=DIR \
      [--config.model.lrn=False ...]

Only flags live here; the work is `train.train_and_evaluate(config, workdir)`.
"""

import logging as logging_lib
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from alexnet_jax import checkpointing
from alexnet_jax import config_lib
from alexnet_jax import train

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and the config.')
config_flags.DEFINE_config_file(
    'config', None, 'A config file (get_config), e.g. configs/default.py.',
    lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax and TFDS; their warnings still show."""

  def filter(self, record):
    noisy = any(f'{os.sep}{name}{os.sep}' in record.pathname
                for name in ('orbax', 'tensorflow_datasets', 'etils'))
    return record.levelno >= logging_lib.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.info('JAX %s, %d process(es), local devices: %s', jax.__version__,
               jax.process_count(), jax.local_devices())
  try:
    train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  except (config_lib.ConfigError, checkpointing.IncompatibleCheckpointError,
          train.NonFiniteLossError) as e:
    # A message the user can act on, without a traceback.
    sys.exit(f'error: {e}')


def run():
  """Console-script entry point (`alexnet-train`)."""
  app.run(main)


if __name__ == '__main__':
  run()
