"""What the command lines share: a quiet console; `--help` that lists the
command's own flags when it runs as a console script; and, for those that
take `--config` (ml_collections), flag parsing with one-line errors.

`parse_flags` is given to `absl.app.run(main, flags_parser=...)`: a config
file that cannot be loaded, a `--config.field` that names no field (with the
close matches) or a bad value gives one line on stderr and exit status 1,
instead of the traceback of the flag library.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from typing import Sequence

from absl import app
from absl import flags


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
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


HELP_ARGS = ('--help', '-h', '-?', '--helpshort')


def wants_help(argv: Sequence[str]) -> bool:
  return any(arg in HELP_ARGS for arg in argv[1:])


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
  """Runs `main` under absl as the command of `module_name`: a quiet console,
  `--help` (exit 0) with the module's description, example and flags (its
  own and those of `flag_modules`), one-line flag errors."""
  quiet_console()
  modules = (module_name, *flag_modules)
  if wants_help(sys.argv if argv is None else argv):
    print(help_text(module_name, modules))
    sys.exit(0)
  for name in modules:
    list_own_flags_in_help(name)
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


def user_errors() -> tuple[type[BaseException], ...]:
  return tuple(getattr(sys.modules[module], name)
               for module, names in _USER_ERRORS.items()
               if module in sys.modules for name in names
               if hasattr(sys.modules[module], name))


def _reporting_user_errors(main):
  def run_main(argv):
    from alexnet_jax import preemption  # pylint: disable=g-import-not-at-top
    try:
      return main(argv)
    except preemption.Stopped as e:
      _exit_with(preemption.EXIT_STOPPED, str(e))
    except Exception as e:  # pylint: disable=broad-except
      if not isinstance(e, user_errors()):
        raise
      _fail(str(e))
  return run_main


CONFIG_FLAG = 'config'


def value_of(argv: Sequence[str], name: str) -> str | None:
  """The value of `--name=V` or `--name V` in argv (the last one)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _load_base_config(argv: Sequence[str], name: str):
  """The config file of `--name`, loaded on its own (no overrides)."""
  path = value_of(argv, name)
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  holder = flags.FlagValues()
  config_flags.DEFINE_config_file(name, None, '', flag_values=holder)
  alone = [argv[0], f'--{name}={path}']
  saved, sys.argv = sys.argv, alone  # config_flags reads overrides there too.
  try:
    holder(alone)
  finally:
    sys.argv = saved
  return holder[name].value


def _missing_field(config, dotted: str) -> str | None:
  """Why `dotted` names no field of `config` (None if it does)."""
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  node, walked = config, []
  for part in dotted.split('.'):
    if not isinstance(node, (config_dict.ConfigDict, dict)):
      return f'{".".join(walked)} is a value, not a group of fields'
    if part not in node:
      where = f'config.{".".join(walked)}' if walked else 'the config'
      close = difflib.get_close_matches(part, list(node.keys()), n=3)
      hint = f'; did you mean {" or ".join(close)}?' if close else ''
      return f'{where} has no field {part!r}{hint}'
    node = node[part]
    walked.append(part)
  return None


def _explain_override(argv: Sequence[str], name: str) -> str | None:
  """Names the first `--name.field` of argv that is not a field."""
  try:
    config = _load_base_config(argv, name)
  except Exception:  # pylint: disable=broad-except
    return None
  for arg in argv[1:]:
    if arg.startswith(f'--{name}.'):
      dotted = arg[len(name) + 3:].split('=', 1)[0]
      why = _missing_field(config, dotted)
      if why:
        return f'--{name}.{dotted}: {why}'
  return None


def _load_error(argv: Sequence[str], name: str) -> str | None:
  """Why the config file of `--name` could not be loaded (None if it was)."""
  if name not in flags.FLAGS or value_of(argv, name) is None:
    return None
  try:
    flags.FLAGS[name].value.get('model')  # An unloadable file raises here.
  except (IOError, AttributeError) as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (f'--{name}={value_of(argv, name)}: cannot load the config file '
            f'({lines[-1] if lines else type(e).__name__})')
  return None


def _fail(message: str) -> None:
  _exit_with(1, 'error: ' + ' '.join(message.split()))


def _exit_with(status: int, line: str) -> None:
  """Prints `line` as the command's last words and exits with `status`."""
  print(line, file=sys.stderr, flush=True)
  sys.exit(status)


def _config_file_error(argv: Sequence[str], name: str) -> str | None:
  """Why the Python file of `--name=FILE[:args]` cannot load: missing, or a
  syntax error (its file:line); None if it compiles."""
  path = value_of(argv, name)
  if path is None:
    return None
  if not os.path.exists(path) and ':' in path:
    path = path.split(':', 1)[0]  # config_flags' FILE:ARGS form.
  try:
    with open(path) as f:
      compile(f.read(), path, 'exec')
  except OSError as e:
    return f'--{name}={path}: cannot load the config file ({e.strerror})'
  except SyntaxError as e:
    return (f'--{name}={path}: the config file does not parse: {e.msg} at '
            f'{e.filename}:{e.lineno}')
  return None


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with one-line errors for `--config` problems."""
  if CONFIG_FLAG in flags.FLAGS:
    message = _config_file_error(argv, CONFIG_FLAG)
    if message:
      _fail(message)
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an override naming no field.
    message = _explain_override(argv, CONFIG_FLAG)
    _fail(message or f'{type(e).__name__}: {str(e).splitlines()[0]}')
  message = _load_error(argv, CONFIG_FLAG)
  if message:
    _fail(message)
  _settle_xla_flags()
  return rest


def _settle_xla_flags() -> None:
  """Puts the config's XLA options into XLA_FLAGS now, before the command's
  code can start a JAX backend (XLA reads them only then)."""
  if CONFIG_FLAG not in flags.FLAGS:
    return
  config = flags.FLAGS[CONFIG_FLAG].value
  if config is None or 'execution' not in config:
    return
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import startup  # pylint: disable=g-import-not-at-top
  try:
    startup.set_xla_flags(config)
  except config_lib.ConfigError as e:
    _fail(str(e))
