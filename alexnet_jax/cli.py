"""What the command lines share: a quiet console, `--help` listing the
command's own flags, and for `--config` (ml_collections) one-line errors: a
file that cannot load, a `--config.field` that names no field (with close
matches) or a bad value prints one line and exits with status 1."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from typing import Sequence

from absl import app
from absl import flags


class _NoTpuProbeNotice(logging.Filter):
  """Drops JAX's INFO line about the TPU backend it did not find."""

  def filter(self, record):
    return not record.getMessage().startswith(
        "Unable to initialize backend 'tpu'")


def quiet_console() -> None:
  """Silences start-up notices; call before TensorFlow is imported. A
  variable the user has set is left as it is."""
  # TensorFlow's C++ INFO lines (oneDNN, CPU feature guard); warnings show.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  # TensorFlow only decodes and crops, where oneDNN's operations do not
  # matter; off, it does not announce them either.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  logging.getLogger('jax._src.xla_bridge').addFilter(_NoTpuProbeNotice())


def wants_help(argv: Sequence[str]) -> bool:
  return any(arg in ('--help', '-h', '-?', '--helpshort') for arg in argv[1:])


def help_text(module_name: str, flag_modules: Sequence[str]) -> str:
  """The command's description and example (its module docstring up to the
  first example command) and its own flags."""
  doc = (sys.modules[module_name].__doc__ or '').strip()
  shown = []
  for paragraph in doc.split('\n\n'):
    shown.append(paragraph.rstrip())
    if 'python -m' in paragraph:
      break
  own = '\n'.join(filter(None, map(flags.FLAGS.module_help, flag_modules)))
  return '\n\n'.join(shown) + f'\n\nflags:\n{own}\n'


def run_console_script(main, module_name: str, *flag_modules: str,
                       argv: Sequence[str] | None = None) -> None:
  """Runs `main` under absl as the command of `module_name`."""
  quiet_console()
  modules = (module_name, *flag_modules)
  if wants_help(sys.argv if argv is None else argv):
    print(help_text(module_name, modules))
    sys.exit(0)
  # absl's --help lists the flags of sys.argv[0]'s module; a console script
  # defines none, so the modules' flags become the script's own.
  for name in modules:
    for flag in flags.FLAGS.get_key_flags_for_module(name):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  from alexnet_jax import startup  # pylint: disable=g-import-not-at-top
  startup.quiet_library_logs()
  app.run(_reporting_user_errors(main), argv=argv, flags_parser=parse_flags)


# Errors a user causes and can fix, by module: shown as one line, without a
# traceback. Looked up in the modules the command has imported.
_USER_ERRORS = {
    'alexnet_jax.config_lib': ('ConfigError',),
    'alexnet_jax.input_pipeline.options': ('DataError',),
    'alexnet_jax.tools.checkpoint_params': ('CheckpointNotFoundError',
                                      'CheckpointUnreadableError'),
    'alexnet_jax.checkpointing': ('IncompatibleCheckpointError',
                                  'UnreadableCheckpointError',
                                  'CheckpointWriteError'),
    'alexnet_jax.tools.convert': ('ConversionError',),
    'alexnet_jax.workdir': ('WorkdirBusyError', 'RecordsError'),
    'alexnet_jax.train': ('NonFiniteLossError',),
    'experiments.run_loading': ('RunError',),
    'alexnet_jax.experiments.run_loading': ('RunError',),
}


def _reporting_user_errors(main):
  def run_main(argv):
    from alexnet_jax import preemption  # pylint: disable=g-import-not-at-top
    try:
      return main(argv)
    except preemption.Stopped as e:
      _fail(str(e), preemption.EXIT_STOPPED)
    except Exception as e:  # pylint: disable=broad-except
      if not isinstance(e, user_errors()):
        raise
      _fail(str(e) or type(e).__name__)
  return run_main


def user_errors() -> tuple[type[BaseException], ...]:
  return tuple(getattr(sys.modules[module], name)
               for module, names in _USER_ERRORS.items()
               if module in sys.modules for name in names
               if hasattr(sys.modules[module], name))


def value_of(argv: Sequence[str], name: str) -> str | None:
  """The value of `--name=V` or `--name V` in argv (the last one)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _missing_field(config, dotted: str) -> str | None:
  """Why `dotted` names no field of `config` (None if it does)."""
  node, walked = config, []
  for part in dotted.split('.'):
    if not hasattr(node, 'keys'):
      return f'{".".join(walked)} is a value, not a group of fields'
    if part not in node:
      where = f'config.{".".join(walked)}' if walked else 'the config'
      close = difflib.get_close_matches(part, list(node.keys()), n=3)
      hint = f'; did you mean {" or ".join(close)}?' if close else ''
      return f'{where} has no field {part!r}{hint}'
    node = node[part]
    walked.append(part)
  return None


def _explain_override(argv: Sequence[str]) -> str | None:
  """Names the first `--config.field` of argv that is not a field."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  holder = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=holder)
  alone = [argv[0], f'--config={value_of(argv, "config")}']
  saved, sys.argv = sys.argv, alone  # config_flags reads overrides there too.
  try:
    holder(alone)  # The config file on its own, without the overrides.
    config = holder['config'].value
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    sys.argv = saved
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      dotted = arg[len('--config.'):].split('=', 1)[0]
      why = _missing_field(config, dotted)
      if why:
        return f'--config.{dotted}: {why}'
  return None


def _config_file_error(argv: Sequence[str]) -> str | None:
  """Why the Python file of `--config=FILE[:args]` cannot load: missing, or
  a syntax error (its file:line); None if it compiles."""
  path = value_of(argv, 'config')
  if path is None:
    return None
  if not os.path.exists(path) and ':' in path:
    path = path.split(':', 1)[0]  # config_flags' FILE:ARGS form.
  try:
    with open(path) as f:
      compile(f.read(), path, 'exec')
  except OSError as e:
    return f'--config={path}: cannot load the config file ({e.strerror})'
  except SyntaxError as e:
    return (f'--config={path}: the config file does not parse: {e.msg} at '
            f'{e.filename}:{e.lineno}')
  return None


def _fail(message: str, status: int = 1) -> None:
  """Prints `message` as the command's last line (an error's, but for a
  stopped run) and exits with `status`."""
  prefix = 'error: ' if status == 1 else ''
  print(prefix + ' '.join(message.split()), file=sys.stderr, flush=True)
  sys.exit(status)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with one-line errors for `--config` problems; then
  the config's XLA options into XLA_FLAGS, before the command can start a
  JAX backend (XLA reads them only then)."""
  has_config = 'config' in flags.FLAGS
  if has_config and (error := _config_file_error(argv)):
    _fail(error)
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e) or type(e).__name__)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an override naming no field.
    _fail(_explain_override(argv) or
          f'{type(e).__name__}: {str(e).splitlines()[0]}')
  if not has_config:
    return rest
  try:
    config = flags.FLAGS['config'].value
    if value_of(argv, 'config') is not None:
      config.get('model')  # An unloadable file raises here.
  except (IOError, AttributeError) as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    _fail(f'--config={value_of(argv, "config")}: cannot load the config file '
          f'({lines[-1] if lines else type(e).__name__})')
  if config is not None and 'execution' in config:
    from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
    from alexnet_jax import startup  # pylint: disable=g-import-not-at-top
    try:
      startup.set_xla_flags(config.execution.xla_cpu_conv_library)
    except config_lib.ConfigError as e:
      _fail(str(e))
  return rest
