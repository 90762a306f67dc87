"""Shared test setup: CPU only, fast compiles, tiny configs."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# A persistent compilation cache of the session's own, inherited by the
# commands the tests start: many of them compile the same tiny steps again,
# each in a new process.
_JIT_CACHE = tempfile.mkdtemp(prefix='alexnet_jax_tests_jit_')
atexit.register(shutil.rmtree, _JIT_CACHE, ignore_errors=True)
os.environ['JAX_COMPILATION_CACHE_DIR'] = _JIT_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.2'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` and `experiments` import from the root.
  sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

jax.config.update('jax_disable_most_optimizations', True)


def tiny_config(**overrides):
  """configs/default.py shrunk to compile and run in seconds on a CPU."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model.width = 0.05
  config.image_size = 67
  config.resize_size = 72
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 0
  config.fake_data.eval_steps = 1
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def corrupt_checkpoint(step_dir):
  """Overwrites the array data of an orbax step directory with garbage."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  data = [os.path.join(d, f) for d, _, files in os.walk(step_dir)
          for f in files if os.sep + 'd' + os.sep in os.path.join(d, f)]
  assert data
  for path in data:
    with open(path, 'wb') as f:
      f.write(np.random.default_rng(0).bytes(2000))


@pytest.fixture
def tiny():
  return tiny_config
