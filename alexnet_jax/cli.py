"""What the command lines share: a quiet console, and `--help` that lists
the command's own flags when it runs as a console script."""

from __future__ import annotations

import logging
import os
import sys


class _NoTpuProbeNotice(logging.Filter):
  """Drops JAX's INFO line about the TPU backend it probes for and, on a
  machine without one, does not find; its other messages still show."""

  def filter(self, record):
    message = record.getMessage()
    return not message.startswith("Unable to initialize backend 'tpu'")


def quiet_console() -> None:
  """Silences start-up notices that say nothing about the run. Call before
  TensorFlow is imported; a variable the user has set is left as it is."""
  # TensorFlow's C++ INFO lines (its oneDNN notice, CPU feature guard) and
  # the "log messages before absl::InitializeLog()" line they trigger.
  # Warnings and errors still show.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  # TensorFlow runs only the input pipeline (decoding, resizing, cropping),
  # where oneDNN's custom operations do not matter; off, TensorFlow also
  # does not announce them.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  logging.getLogger('jax._src.xla_bridge').addFilter(_NoTpuProbeNotice())


def list_own_flags_in_help(module_name: str) -> None:
  """absl's --help lists the flags of the module named by sys.argv[0]; a
  console script's argv[0] is the script, which defines none. This makes
  `module_name`'s flags the script's own."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
