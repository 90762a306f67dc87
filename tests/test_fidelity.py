"""Where the paper's text and the authors' code differ: LRN's alpha, and the
printed 224 input the paper variant's conv1 does not tile."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import config_lib
from alexnet_jax import models
from alexnet_jax import train
from conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _logits(size=67, **fields):
  model = models.AlexNet(num_classes=10, width=0.25, initialization='he',
                         **fields)
  images = jax.random.uniform(jax.random.key(1), (2, size, size, 3)) * 255
  params = model.init(jax.random.key(0), images[:1])['params']
  return np.asarray(model.apply({'params': params}, images))


def test_cuda_convnet_convention_divides_alpha_by_the_window():
  # cuda-convnet's layer.py: scale /= size for cross-map normalization, so
  # alpha 1e-4 over n = 5 channels is 2e-5 on each square.
  divided = _logits(lrn_convention='cuda_convnet', lrn_alpha=1e-4)
  np.testing.assert_allclose(divided, _logits(lrn_alpha=2e-5), rtol=1e-5,
                             atol=1e-5 * np.abs(divided).max())
  # The conventions differ on this net's activations (so the test can fail).
  printed = _logits(lrn_alpha=1e-4)
  assert np.abs(printed - divided).max() > 0.01 * np.abs(printed).max()


def test_config_refuses_an_unknown_convention():
  config = tiny_config(**{'model.lrn_convention': 'caffe'})
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.model\.lrn_convention='caffe'"):
    train.validate(config)


def test_paper_variant_at_224_is_refused_naming_227():
  # (224 - 11) / 4 is not whole: a VALID conv1 would drop a column and
  # build fc6 on 5x5x256 inputs (49.4 M parameters) without a word.
  with pytest.raises(ValueError, match='227'):
    models.AlexNet().init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  # 227 builds the paper's fc6 (6x6x256 inputs); the other variants take
  # 224: torchvision's pads conv1, tflearn's pads every layer ('SAME': 224 ->
  # 56 -> 28 -> 14 -> 7, so 7x7x256).
  for variant, size, inputs in (('paper', 227, 9216), ('owt', 224, 9216),
                                ('tflearn', 224, 12544)):
    params = jax.eval_shape(lambda v=variant, s=size: models.AlexNet(
        variant=v).init(jax.random.key(0), jnp.zeros((1, s, s, 3))))
    assert params['params']['fc6']['kernel'].shape[0] == inputs


def test_training_command_refuses_224_in_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/default.py',
       f'--workdir={tmp_path}', '--config.dataset=fake',
       '--config.image_size=224', '--config.resize_size=256',
       '--config.model.width=0.05', '--config.num_train_steps=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: config.image_size=224 is invalid'), last
  assert '227' in last
  assert not os.listdir(tmp_path)  # Refused before anything was written.


def test_final_ten_crop_evaluation_is_logged_beside_the_centre_crop(
    tmp_path):
  from test_image_folder import folder_config  # pylint: disable=g-import-not-at-top
  from test_image_folder import write_flowers_folder  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'flowers'
  write_flowers_folder(str(root), per_class=8, corrupt=False)
  config = folder_config(root, tmp_path, num_train_steps=4,
                         eval_every_steps=2, final_ten_crop=True,
                         validation_fraction=0.3)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  rows = [json.loads(line) for line in open(tmp_path / 'run' /
                                            'metrics.jsonl')]
  evals = {r['step']: r for r in rows if 'eval_top1' in r}
  assert sorted(evals) == [2, 4]
  assert not any(k.startswith('eval10_') for k in evals[2])  # Periodic.
  final = evals[4]
  assert final['eval10_examples'] == final['eval_examples'] > 0
  # Corner crops of 72x72 squares at 67 differ from the centre crop: the
  # softmax averaged over them gives another loss.
  assert final['eval10_loss'] != pytest.approx(final['eval_loss'], rel=1e-6)
