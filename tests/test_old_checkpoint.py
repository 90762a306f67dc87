"""A workdir written by the code of commit 7a777af still evaluates, predicts
and converts, with the results that code computed.

tests/fixtures/checkpoint_7a777af/ (its README says how it was made) holds a
2-step training run of the paper's two-tower net (width 0.05, 67px, 5
classes, lrn_alpha 0.01) and what the old code computed from its checkpoint:
the eval loss in metrics.jsonl, logits.npy for `make_fixture.inputs()` and
predict_probs.npy for `make_fixture.image()`. The commands are run as users
run them.

The old code's LRN window crossed the two towers; today that is
`model.lrn_across_towers=True` (the default normalizes within each tower).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

from etils import epath
import jax
import numpy as np
from PIL import Image
import pytest

from alexnet_jax import models
from alexnet_jax.tools import convert
from conftest import ROOT

FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'checkpoint_7a777af')
_spec = importlib.util.spec_from_file_location(
    'make_fixture', os.path.join(FIXTURE, 'make_fixture.py'))
make_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixture)
# Execution choices the old config.json kept in config.model; the model's
# architecture is the rest.
EXECUTION = ('conv1_impl', 'lrn_impl', 'pool_impl', 'conv_impl')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """evaluate, predict and convert on a copy of the fixture (so that none can
  change the committed one), run side by side: name -> (returncode, stdout,
  stderr, the directory of their inputs and outputs)."""
  tmp = tmp_path_factory.mktemp('old')
  workdir = str(tmp / 'workdir')
  shutil.copytree(FIXTURE, workdir)
  Image.fromarray(make_fixture.image()).save(tmp / 'image.png')
  args = {
      'evaluate': [
          f'--config={ROOT}/configs/imagenet_eval.py',
          f'--workdir={tmp / "eval"}', f'--config.checkpoint={workdir}',
          '--config.dataset=fake', '--config.seed=7',  # The run's images.
          '--config.model.variant=paper', '--config.model.num_classes=5',
          '--config.model.width=0.05', '--config.model.lrn_alpha=0.01',
          '--config.model.lrn_across_towers=True', '--config.image_size=67',
          '--config.batch_size=8', '--config.eval_batch_size=8',
          '--config.fake_data.eval_steps=1',
          '--config.normalization.mean=(123.68, 116.78, 103.94)',
          '--config.normalization.std=(58.393, 57.12, 57.375)'],
      'predict': [f'--workdir={workdir}', str(tmp / 'image.png')],
      'convert': ['--variant=paper', f'--input={workdir}',
                  f'--output={tmp / "weights.pth"}'],
  }
  procs = {name: subprocess.Popen(
      [sys.executable, '-m', f'alexnet_jax.tools.{name}', *a], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for name, a in args.items()}
  outputs = {name: p.communicate(timeout=300) for name, p in procs.items()}
  return {name: (p.returncode, *outputs[name], tmp)
          for name, p in procs.items()}


def _output(runs, name: str):
  returncode, stdout, stderr, tmp = runs[name]
  assert returncode == 0, stderr[-3000:]
  return stdout, tmp


@pytest.fixture(scope='module')
def old_config():
  with open(os.path.join(FIXTURE, 'config.json')) as f:
    return json.load(f)


def _model(old_config) -> models.AlexNet:
  """Today's model of the old run's architecture (its LRN across towers)."""
  arch = {k: v for k, v in old_config['model'].items() if k not in EXECUTION}
  return models.AlexNet(**arch, lrn_across_towers=True)


@pytest.mark.slow
def test_evaluate_gives_the_old_runs_eval_loss(runs):
  _, tmp = _output(runs, 'evaluate')
  with open(os.path.join(FIXTURE, 'metrics.jsonl')) as f:
    old = [json.loads(line) for line in f][-1]
  with open(tmp / 'eval' / 'metrics.jsonl') as f:
    new = [json.loads(line) for line in f][-1]
  assert new['step'] == old['step'] == 2
  assert new['eval_examples'] == old['eval_examples'] == 8
  np.testing.assert_allclose(new['eval_loss'], old['eval_loss'], rtol=1e-6)


def _predicted(runs) -> tuple[np.ndarray, np.ndarray]:
  """predict's probabilities, best first (its classes in the old order), and
  the old ones."""
  out, _ = _output(runs, 'predict')
  ranked = re.findall(r'^\s+\d\. (\d+)\s+([\d.]+)$', out, re.MULTILINE)
  old = np.load(os.path.join(FIXTURE, 'predict_probs.npy'))
  assert [int(c) for c, _ in ranked] == list(np.argsort(-old, kind='stable'))
  return np.array([float(p) for _, p in ranked]), np.sort(old)[::-1]


@pytest.mark.slow
def test_predict_reads_the_old_workdir(runs):
  got, old = _predicted(runs)
  np.testing.assert_allclose(got, old, atol=0.01)  # See the next test.


@pytest.mark.slow
def test_predict_gives_the_old_probabilities(runs):
  # The old config.json has no model.lrn_across_towers: its run normalised
  # across the towers, and predict must too.
  got, old = _predicted(runs)
  np.testing.assert_allclose(got, old, atol=1e-4)  # Printed with 4 decimals.


def test_checkpoint_holds_the_parameter_tree_of_todays_model(old_config):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  item = epath.Path(FIXTURE) / 'checkpoints' / '2' / 'default'
  handler = ocp.PyTreeCheckpointHandler()
  try:
    stored = handler.metadata(item).tree['params']
  finally:
    handler.close()
  size = old_config['image_size']
  wanted = jax.eval_shape(lambda: _model(old_config).init(
      jax.random.key(0), np.zeros((1, size, size, 3), np.float32),
      train=False))['params']
  shapes = lambda tree: {
      jax.tree_util.keystr(p): tuple(x.shape)
      for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert shapes(stored) == shapes(wanted)
  assert len(shapes(stored)) == 16  # conv1..conv5, fc6..fc8: kernel, bias.


@pytest.mark.slow
def test_converted_weights_give_the_old_logits(runs, old_config):
  torch = pytest.importorskip('torch')
  from experiments import torch_reference  # pylint: disable=g-import-not-at-top
  _, tmp = _output(runs, 'convert')
  state_dict = torch.load(tmp / 'weights.pth', weights_only=True)
  old_logits = np.load(os.path.join(FIXTURE, 'logits.npy'))
  x = make_fixture.inputs()

  # PyTorch: the reference network, its modules named by layer, with
  # PyTorch's LRN over all channels (it divides alpha by n).
  net = torch_reference.AlexNet(
      old_config['model']['num_classes'], 'paper',
      width=old_config['model']['width'], image_size=old_config['image_size'])
  for lrn in ('lrn1', 'lrn2'):
    net.features[lrn] = torch.nn.LocalResponseNorm(
        5, alpha=5 * old_config['model']['lrn_alpha'], beta=0.75, k=2.0)
  renamed = {}
  for layer, module in convert.TORCH_LAYOUTS['paper'].items():
    part = 'features' if layer.startswith('conv') else 'classifier'
    for leaf in ('weight', 'bias'):
      renamed[f'{part}.{layer}.{leaf}'] = state_dict[f'{module}.{leaf}']
  net.load_state_dict(renamed, strict=True)
  net.eval()
  with torch.no_grad():
    got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(got, old_logits, rtol=1e-5, atol=1e-6)

  # JAX: today's model on the weights converted back.
  params = convert.torch_to_flax(state_dict, 'paper')
  got = _model(old_config).apply({'params': params}, x, train=False)
  np.testing.assert_allclose(np.asarray(got), old_logits, rtol=1e-5,
                             atol=1e-6)
