"""Data fields are checked once, in config validation; image folders that
would make an empty class are refused, naming the folder."""

import os

import pytest

from alexnet_jax import config_lib
from alexnet_jax import train
from conftest import tiny_config
from test_image_folder import folder_config
from test_image_folder import write_image


def _flat_folder(root, classes=('a', 'b'), per_class=3):
  for c in classes:
    for i in range(per_class):
      write_image(os.path.join(root, c, f'{i}.jpg'), (20, 24), i)
  return root


def test_validation_fraction_zero_is_accepted_everywhere(tmp_path):
  config_lib.validate(tiny_config(validation_fraction=0.0))
  root = _flat_folder(str(tmp_path / 'data'))
  config = folder_config(root, tmp_path, validation_fraction=0.0,
                         eval_split='train', batch_size=2)
  config.model.num_classes = 2
  config_lib.validate(config)
  data = train.create_data(config)
  assert data.num_train_examples == 6  # Nothing held out.


@pytest.mark.parametrize('value', [1.0, -0.1, 1.5])
def test_invalid_validation_fraction_names_the_field(tmp_path, value):
  message = r'config\.validation_fraction=.*\[0\.0, 1\.0\)'
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(tiny_config(validation_fraction=value))
  root = _flat_folder(str(tmp_path / 'data'))
  config = folder_config(root, tmp_path, validation_fraction=value)
  with pytest.raises(config_lib.ConfigError, match=message):  # Same check.
    train.create_data(config)


def test_empty_class_folder_is_refused_naming_it(tmp_path):
  root = _flat_folder(str(tmp_path / 'data'))
  os.makedirs(os.path.join(root, 'c'))
  config = folder_config(root, tmp_path)
  with pytest.raises(config_lib.ConfigError,
                     match=f'class folder {os.path.join(root, "c")} holds no'):
    train.create_data(config)


@pytest.mark.parametrize('split_folders', [False, True])
def test_folder_link_to_its_parent_is_refused_naming_it(tmp_path,
                                                        split_folders):
  root = str(tmp_path / 'data')
  parent = os.path.join(root, 'train') if split_folders else root
  _flat_folder(parent)
  if split_folders:
    _flat_folder(os.path.join(root, 'validation'))
  os.symlink(parent, os.path.join(parent, 'loop'))
  config = folder_config(root, tmp_path)
  loop = os.path.join(parent, 'loop')
  with pytest.raises(config_lib.ConfigError,
                     match=f'class folder {loop} \\(a link to {parent}\\)'):
    train.create_data(config)
