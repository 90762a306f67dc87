"""variant='tflearn': tflearn's AlexNet example, against TensorFlow's own ops,
its initializers, and configs/flowers17_tflearn.py run as a user runs it."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models
from test_image_folder import write_flowers_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _init(model, size, seed=0):
  return model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))[
      'params']


def test_parameter_count_at_1000_classes():
  # SAME padding keeps ceil(size / stride): 227 -> 57 -> 29 -> 29 -> 15 ->
  # 15 -> 8, so fc6 reads 8 x 8 x 256 = 16,384 inputs. By hand: convolutions
  # 34,944 + 614,656 + 885,120 + 1,327,488 + 884,992; fc6 67,112,960,
  # fc7 16,781,312, fc8 4,097,000.
  params = jax.eval_shape(
      lambda: _init(models.AlexNet(num_classes=1000, variant='tflearn'), 227))
  assert models.count_params(params) == 91_738_472
  assert sorted(params) == ['conv1', 'conv2', 'conv3', 'conv4', 'conv5',
                            'fc6', 'fc7', 'fc8']
  assert all(sorted(p) == ['bias', 'kernel'] for p in params.values())
  assert params['fc6']['kernel'].shape == (16_384, 4096)


def _tensorflow_logits(params, images, alpha):
  """tflearn's graph written with TensorFlow's ops, on the same params."""
  tf = pytest.importorskip('tensorflow')
  p = jax.tree_util.tree_map(np.asarray, params)
  x = tf.constant(images)

  def conv(x, name, stride):
    y = tf.nn.conv2d(x, p[name]['kernel'], strides=stride, padding='SAME')
    return tf.nn.relu(y + p[name]['bias'])

  def pool_lrn(x):
    x = tf.nn.max_pool2d(x, ksize=3, strides=2, padding='SAME')
    return tf.nn.local_response_normalization(
        x, depth_radius=5, bias=1.0, alpha=alpha, beta=0.75)

  x = pool_lrn(conv(x, 'conv1', 4))
  x = pool_lrn(conv(x, 'conv2', 1))
  x = conv(conv(conv(x, 'conv3', 1), 'conv4', 1), 'conv5', 1)
  x = tf.reshape(pool_lrn(x), (x.shape[0], -1))
  for name in ('fc6', 'fc7'):
    x = tf.nn.relu(tf.matmul(x, p[name]['kernel']) + p[name]['bias'])
  return (tf.matmul(x, p['fc8']['kernel']) + p['fc8']['bias']).numpy()


# 227: TensorFlow's SAME padding is 4/4 in conv1; 102: 4/5 in conv1, 0/1 in
# pool1 (the odd pixel at the end). alpha 0.01 makes the LRN change the
# logits by far more than the tolerance (checked below).
@pytest.mark.slow
@pytest.mark.parametrize('size,alpha', [(227, 1e-4), (102, 1e-2)])
def test_logits_equal_tensorflow_ops(size, alpha):
  model = models.AlexNet(num_classes=7, variant='tflearn', width=0.25,
                         lrn_alpha=alpha)
  params = _init(model, size, seed=1)
  # Biases made nonzero, so their placement is checked too.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.05 if path[-1].key == 'bias' else x, params)
  images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)
                                            ).astype(np.float32)
  ours = np.asarray(model.apply({'params': params}, jnp.asarray(images)))
  want = _tensorflow_logits(params, images, alpha)
  np.testing.assert_allclose(ours, want, rtol=2e-4, atol=2e-4 * np.abs(
      want).max())
  if alpha == 1e-2:  # The LRN matters at this alpha.
    no_lrn = models.AlexNet(num_classes=7, variant='tflearn', width=0.25,
                            lrn=False).apply({'params': params}, images)
    assert np.abs(np.asarray(no_lrn) - want).max() > 0.05 * np.abs(want).max()


def test_tflearn_defaults_are_tensorflows_lrn_and_initializers():
  model = models.AlexNet(variant='tflearn')
  assert (model.groups, model.lrn, model.initialization) == (1, True,
                                                             'tflearn')
  assert (model.lrn_depth, model.lrn_bias, model.lrn_alpha,
          model.lrn_beta) == (11, 1.0, 1e-4, 0.75)
  # A field given explicitly is kept.
  assert models.AlexNet(variant='tflearn', lrn_depth=5).lrn_depth == 5


@pytest.mark.slow
def test_tflearn_initializers():
  """uniform_scaling: U(-sqrt(3 / fan_in), +sqrt(3 / fan_in)), so std
  sqrt(1 / fan_in); truncated_normal(0.02) cut at 2 std: std 0.02 x 0.8796
  (the std of a unit normal cut at +-2); biases 0."""
  params = _init(models.AlexNet(num_classes=1000, variant='tflearn',
                                width=0.5), 67)
  for name in ('conv1', 'conv2', 'conv3', 'conv5'):
    w = np.asarray(params[name]['kernel'])
    fan_in = np.prod(w.shape[:3])
    limit = np.sqrt(3.0 / fan_in)
    assert np.abs(w).max() <= limit * (1 + 1e-6)  # float32 rounding.
    assert np.abs(w).max() > 0.99 * limit
    np.testing.assert_allclose(w.std(), np.sqrt(1.0 / fan_in), rtol=0.05)
  for name in ('fc6', 'fc7', 'fc8'):
    w = np.asarray(params[name]['kernel'])
    assert np.abs(w).max() <= 0.04
    np.testing.assert_allclose(w.std(), 0.02 * 0.8796, rtol=0.02)
  for layer in params.values():
    assert not np.any(np.asarray(layer['bias']))


@pytest.mark.slow  # The training command, about 20 s.
def test_flowers17_tflearn_config_trains_on_a_flowers_folder(tmp_path):
  root = tmp_path / 'flowers'
  write_flowers_folder(str(root), per_class=10, corrupt=False)
  workdir = tmp_path / 'run'
  out = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main',
       '--config=configs/flowers17_tflearn.py', f'--workdir={workdir}',
       f'--config.dataset_dir={root}', f'--config.data_dir={tmp_path}/tfds',
       '--config.model.num_classes=3', '--config.model.width=0.05',
       '--config.image_size=40', '--config.resize_size=40',
       '--config.batch_size=4', '--config.eval_batch_size=4',
       '--config.num_train_steps=3', '--config.log_every_steps=3',
       '--config.eval_every_steps=0', '--config.checkpoint_every_steps=0'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / 'config.json') as f:
    recorded = json.load(f)
  assert recorded['model']['variant'] == 'tflearn'
  assert recorded['resize_mode'] == 'squash'
  assert recorded['normalization']['std'] == [255.0, 255.0, 255.0]
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  final = [r for r in rows if 'eval_top1' in r][-1]
  assert final['step'] == 3
  assert 0 < final['eval_examples'] < 30  # The held-out tenth.


@pytest.mark.slow
def test_other_forms_of_the_ops_compute_the_same_tflearn_net():
  """conv1 by space_to_depth and pooling by reduce_window, with the
  asymmetric 'SAME' padding of 102x102 inputs (4/5 in conv1, 0/1 in pool1)."""
  from experiments import op_variants  # pylint: disable=g-import-not-at-top
  base = models.AlexNet(num_classes=5, variant='tflearn', width=0.125)
  params = _init(base, 102)
  images = jax.random.uniform(jax.random.key(2), (2, 102, 102, 3)) * 255
  want = base.apply({'params': params}, images)
  for forms in (['s2d'], ['pool_reduce_window', 'lrn_matmul']):
    with op_variants.swapped(forms):
      got = base.apply({'params': params}, images)
    np.testing.assert_allclose(got, want,
                               rtol=1e-4, atol=1e-4 * float(
                                   jnp.abs(want).max()))
