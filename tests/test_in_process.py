"""Cheap in-process checks of what the slow tests reach only through
commands or several processes, so that the fast tier (`pytest -m 'not slow'`)
exercises every module: the training command's and prepare_dataset's
`main`, the command-line helpers, and the per-worker ("one weird trick")
step on one worker."""

import functools
import importlib
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import cli
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import owt
from alexnet_jax import steps
from conftest import tiny_config


# The flags the command modules define (absl's flags are process-wide).
_COMMAND_FLAGS = ('config', 'workdir', 'coordinator_address', 'num_processes',
                  'process_id', 'output_dir', 'splits', 'examples_per_shard',
                  'central_square', 'jpeg_quality')


@pytest.fixture
def command(request):
  """Imports the command module `request.param` for the test: flags of the
  commands' names that modules imported before defined (experiments'
  `config`, `workdir`) are set aside meanwhile, and its own taken away
  after."""
  aside = {name: flags.FLAGS[name] for name in list(flags.FLAGS)
           if name in _COMMAND_FLAGS or name.startswith('config.')}
  for name in aside:
    delattr(flags.FLAGS, name)
  before = set(flags.FLAGS)
  try:
    yield importlib.import_module(request.param)
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
    for name, flag in aside.items():
      flags.FLAGS[name] = flag
    sys.modules.pop(request.param, None)


@pytest.mark.parametrize('command', ['alexnet_jax.main'], indirect=True)
def test_training_command_refuses_stray_arguments_and_lone_process_flags(
    command):
  argv = cli.parse_flags(['alexnet-train', '--config=configs/default.py',
                          '--workdir=/nonexistent', 'stray'])
  assert argv == ['alexnet-train', 'stray']
  with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['stray'"):
    command.main(argv)
  flags.FLAGS['num_processes'].value = 2  # Without the other two.
  try:
    with pytest.raises(app.UsageError, match='go together'):
      command.main(argv[:1])
  finally:
    flags.FLAGS['num_processes'].value = None


@pytest.mark.parametrize('command', ['alexnet_jax.tools.prepare_dataset'],
                         indirect=True)
def test_prepare_dataset_without_the_tars_names_them(command, tmp_path,
                                                    monkeypatch):
  from alexnet_jax.input_pipeline import options  # pylint: disable=g-import-not-at-top
  argv = ['alexnet-prepare-dataset', '--config=configs/imagenet_paper.py',
          f'--output_dir={tmp_path / "out"}',
          f'--config.manual_dir={tmp_path / "tars"}']
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads overrides there.
  argv = cli.parse_flags(argv)
  with pytest.raises(options.DataError, match='ILSVRC2012_img_train.tar'):
    command.main(argv)


def test_flag_helpers():
  argv = ['x', '--config=a.py', '--workdir', 'w', '--config=b.py', '-h']
  assert cli.value_of(argv, 'config') == 'b.py'
  assert cli.value_of(argv, 'workdir') == 'w'
  assert cli.value_of(argv, 'seed') is None
  assert cli.wants_help(argv) and not cli.wants_help(argv[:-1])
  text = cli.help_text('alexnet_jax.cli', [])
  assert text.startswith('What the command lines share') and 'flags:' in text


def test_a_user_error_without_a_message_still_fails_the_command(capsys):
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top

  def main(argv):
    raise config_lib.ConfigError()

  with pytest.raises(SystemExit) as e:
    cli._reporting_user_errors(main)(['x'])  # pylint: disable=protected-access
  assert e.value.code == 1
  assert capsys.readouterr().err == 'error: ConfigError\n'


def test_one_worker_per_worker_step_is_the_ordinary_step():
  config = tiny_config(**{'model.dropout_rate': 0.0})
  model = models.model_from_config(config.model)
  tx = optim.create_optimizer(config.optimizer)
  state = steps.create_train_state(model, tx, 67, config.seed)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(4, 67, 67, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, size=4))
  step = jax.jit(functools.partial(owt.per_worker_update, model=model,
                                   tx=tx, workers=1))
  loss, _, grads, (params, _) = step(state, images, labels, jax.random.key(0))

  def plain_loss(p):  # The network's own forward pass.
    logits = model.apply({'params': p}, images)
    return jnp.mean(steps.cross_entropy(logits, labels))

  want_loss, want_grads = jax.jit(jax.value_and_grad(plain_loss))(
      state.params)
  updates, _ = tx.update(want_grads, state.opt_state, state.params)
  want_params = jax.tree_util.tree_map(jnp.add, state.params, updates)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  for got, want in ((grads, want_grads), (params, want_params)):
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
        got, want)
