r"""Command line: train and evaluate AlexNet from an ml_collections config.

  python -m alexnet_jax.main --config=configs/default.py --workdir=DIR \
      [--config.model.lrn=False ...]
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from alexnet_jax import cli
from alexnet_jax import train

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and the config.')
config_flags.DEFINE_config_file(
    'config', None, 'A config file (get_config), e.g. configs/default.py.',
    lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0, for a multi-process run (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process\'s index in a multi-process run.')

# What JAX's cluster detection recognises: SLURM, Open MPI, TPU pods, JobSet.
_CLUSTER_MARKERS = ('SLURM_JOB_ID', 'OMPI_MCA_orte_hnp_uri',
                    'TPU_WORKER_HOSTNAMES', 'JOBSET_NAME')


def initialize_distributed() -> None:
  """Starts JAX's distributed runtime when this is a multi-process job."""
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError('--coordinator_address, --num_processes and '
                           '--process_id go together.')
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      raise app.UsageError(f'--process_id={_PROCESS_ID.value} must be in '
                           f'[0, --num_processes={_NUM_PROCESSES.value}).')
    # Cross-process collectives on CPU devices (no effect on GPU/TPU).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  elif any(os.environ.get(k) for k in _CLUSTER_MARKERS):
    jax.distributed.initialize()  # JAX detects the cluster's parameters.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  initialize_distributed()
  logging.info('JAX %s, %d process(es), local devices: %s', jax.__version__,
               jax.process_count(), jax.local_devices())
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


def run():
  """Console-script entry point (`alexnet-train`)."""
  cli.run_console_script(main, __name__)


if __name__ == '__main__':
  run()
