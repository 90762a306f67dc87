"""Configs load, and invalid values fail before compilation, naming the field."""

import glob
import os
import subprocess
import sys

import pytest

from alexnet_jax import config_lib
from alexnet_jax import train
from conftest import ROOT, tiny_config


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))))
def test_every_config_file_is_valid_and_documents_its_command(path):
  name = os.path.basename(path)[:-3]
  if name == '__init__':
    return
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'configs.{name}')
  assert 'python -m' in module.__doc__, f'{name}: docstring lacks the command'
  config = module.get_config()
  train.validate(config)


@pytest.mark.parametrize('field, value, message', [
    ('optimizer.learning_rate', -0.1, r'config\.optimizer\.learning_rate=-0\.1'),
    ('model.dropout_rate', 1.0, r'config\.model\.dropout_rate=1\.0.*\[0\.0, 1\.0\)'),
    ('model.variant', 'vgg', r"config\.model\.variant='vgg'.*'paper', 'owt'"),
    ('model.groups', 3, r'config\.model\.groups=3'),
    ('image_size', 60, r'config\.image_size=60.*at least 67'),
    ('model.dtype', 'float16', r'config\.model\.dtype'),
    ('optimizer.schedule', 'linear', r'config\.optimizer\.schedule'),
    ('batch_size', 0, r'config\.batch_size=0'),
    ('nonfinite', 'ignore', r'config\.nonfinite'),
    ('execution.xla_cpu_conv_library', 'mkl',
     r"config\.execution\.xla_cpu_conv_library='mkl'.*'eigen'"),
    ('execution.conv1_impl', 'patches', r"config\.execution\.conv1_impl='patches'"),
    ('execution.lrn_impl', 'cumsum', r"config\.execution\.lrn_impl='cumsum'"),
    ('execution.pool_impl', 'avg', r"config\.execution\.pool_impl='avg'"),
    ('execution.conv_impl', 'cudnn', r"config\.execution\.conv_impl='cudnn'"),
    ('execution.lrn_imp', 'shift', r"config\.execution\.lrn_imp='shift'.*unknown"),
    ('resize_size', 50, r'config\.resize_size=50.*image_size'),
])
def test_invalid_values_name_the_field(field, value, message):
  config = tiny_config(**{field: value})
  with pytest.raises(config_lib.ConfigError, match=message):
    train.validate(config)


@pytest.mark.parametrize('field, value', [('model.dropout_rate', -0.5),
                                          ('execution.lrn_impl', 'cumsum')])
def test_invalid_config_fails_before_any_work(tmp_path, monkeypatch, field,
                                              value):
  # create_data would be the first expensive call; it must not be reached.
  monkeypatch.setattr(train, 'create_data', lambda c: pytest.fail('reached'))
  config = tiny_config(**{field: value})
  with pytest.raises(config_lib.ConfigError, match=f'config.{field}='):
    train.train_and_evaluate(config, str(tmp_path))


def test_unwritable_workdir_fails_at_once(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(config_lib.ConfigError, match='workdir'):
    config_lib.check_workdir(str(blocker / 'sub'))


class _Data:
  num_classes = 10


def test_num_classes_must_match_the_dataset():
  config = tiny_config(**{'model.num_classes': 7})
  with pytest.raises(config_lib.ConfigError,
                     match='model.num_classes=7.*has 10 classes'):
    config_lib.validate_against_data(config, _Data())
  config_lib.validate_against_data(tiny_config(), _Data())


def test_cli_rejects_unknown_keys_and_bad_values(tmp_path):
  base = [sys.executable, '-m', 'alexnet_jax.main',
          '--config=configs/default.py', f'--workdir={tmp_path}']
  out = subprocess.run(base + ['--config.model.no_such_field=1'],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode != 0 and 'no_such_field' in out.stderr
  out = subprocess.run(base + ['--config.optimizer.learning_rate=-1'],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode != 0
  assert 'config.optimizer.learning_rate=-1' in out.stderr
