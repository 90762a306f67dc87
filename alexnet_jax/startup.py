"""What a command sets before JAX starts: XLA:CPU's convolution library
(config.execution.xla_cpu_conv_library) and quiet library logs. XLA reads
XLA_FLAGS once, when JAX starts its first backend, so `set_xla_flags` comes
before that (cli.parse_flags calls it before the command's code runs)."""

from __future__ import annotations

import logging as logging_lib
import os

from absl import logging

from alexnet_jax import config_lib

# XLA options by library (other backends ignore xla_cpu_* options). jax 0.10's
# XLA:CPU runs convolutions with YNNPACK; Eigen is 1.3-3.9x faster on
# AlexNet's (docs/performance.md), so 'eigen' keeps YNNPACK for dots only.
XLA_CPU_CONV_LIBRARIES = {
    'eigen': {'xla_cpu_experimental_ynn_fusion_type':
              'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'},
    'xla_default': {},
}
_OPTION_NAMES = {name for options in XLA_CPU_CONV_LIBRARIES.values()
                 for name in options}


def _conv_options(library: str) -> dict[str, str]:
  if library not in XLA_CPU_CONV_LIBRARIES:
    raise config_lib.ConfigError(
        f'config.execution.xla_cpu_conv_library={library!r}; expected one of '
        f'{sorted(XLA_CPU_CONV_LIBRARIES)}.')
  return dict(XLA_CPU_CONV_LIBRARIES[library])


def compiler_options(library: str, backend: str | None = None
                     ) -> dict[str, str]:
  """The options of `library` for an ahead-of-time compile on `backend`
  (default JAX's): a benchmark compares the libraries in one process."""
  if backend is None:
    import jax  # pylint: disable=g-import-not-at-top
    backend = jax.default_backend()
  return _conv_options(library) if backend == 'cpu' else {}


# The options this process has put into XLA_FLAGS (None: none yet). JAX has
# no public way to tell whether its backend has started (and read them).
_settled: dict[str, str] | None = None


def set_xla_flags(library: str) -> None:
  """Puts `library`'s XLA options into XLA_FLAGS, once per process."""
  global _settled
  options = _conv_options(library)
  if _settled is not None and options != _settled:
    raise RuntimeError(
        f'config.execution.xla_cpu_conv_library={library!r} needs other XLA '
        f'options than this process set already ({_settled}), and XLA reads '
        f'them only when JAX starts: run it in a new process.')
  _settled = options
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if f.split('=', 1)[0].lstrip('-') not in _OPTION_NAMES]
  os.environ['XLA_FLAGS'] = ' '.join(
      kept + [f'--{k}={v}' for k, v in options.items()])


class _QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax and TFDS; their warnings still show."""

  def filter(self, record):
    noisy = any(f'{os.sep}{name}{os.sep}' in record.pathname
                for name in ('orbax', 'tensorflow_datasets', 'etils'))
    return record.levelno >= logging_lib.WARNING or not noisy


def quiet_library_logs() -> None:
  """Keeps the console to this project's progress lines and real warnings."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
