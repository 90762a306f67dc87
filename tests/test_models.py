"""The model: parameter counts, layouts, LRN, initialization, input sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models
from alexnet_jax import ops


def _shapes(size=227, **kwargs):
  net = models.AlexNet(**kwargs)
  return jax.eval_shape(lambda: net.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3))))['params']


@pytest.mark.parametrize('kwargs, size, expected', [
    (dict(), 227, 60_965_224),  # The paper's two-tower net (docs/paper.md).
    (dict(groups=1), 227, 62_378_344),
    (dict(variant='owt', groups=1, lrn=False), 224, 61_100_840),
    # torchvision's AlexNet from the variant alone (torchvision: 61,100,840).
    (dict(variant='owt'), 224, 61_100_840),
    # Explicit fields override the variant's: torchvision's channels in two
    # towers. By hand: conv1 11*11*3*64+64, conv2 5*5*32*192+192, conv3
    # 3*3*192*384+384, conv4 3*3*192*256+256, conv5 3*3*128*256+256, fc6
    # 9216*4096+4096, fc7 4096*4096+4096, fc8 4096*1000+1000.
    (dict(variant='owt', groups=2, lrn=True), 224,
     11 * 11 * 3 * 64 + 64 + 5 * 5 * 32 * 192 + 192 + 3 * 3 * 192 * 384 + 384
     + 3 * 3 * 192 * 256 + 256 + 3 * 3 * 128 * 256 + 256 + 9216 * 4096 + 4096
     + 4096 * 4096 + 4096 + 4096 * 1000 + 1000),
])
def test_parameter_counts(kwargs, size, expected):
  assert models.count_params(_shapes(size, **kwargs)) == expected


def test_grouped_kernel_shapes_match_the_two_towers():
  p = _shapes()
  # conv2, conv4, conv5 see half of their input channels (feature_group_count=2).
  assert p['conv1']['kernel'].shape == (11, 11, 3, 96)
  assert p['conv2']['kernel'].shape == (5, 5, 48, 256)
  assert p['conv3']['kernel'].shape == (3, 3, 256, 384)
  assert p['conv4']['kernel'].shape == (3, 3, 192, 384)
  assert p['conv5']['kernel'].shape == (3, 3, 192, 256)
  assert p['fc6']['kernel'].shape == (6 * 6 * 256, 4096)
  assert p['fc8']['kernel'].shape == (4096, 1000)
  # Same parameters as nn.Conv(feature_group_count=2) would create.
  import flax.linen as nn
  ref = nn.Conv(256, (5, 5), feature_group_count=2)
  ref_shape = jax.eval_shape(lambda: ref.init(
      jax.random.key(0), jnp.zeros((1, 27, 27, 96))))['params']['kernel'].shape
  assert ref_shape == p['conv2']['kernel'].shape


def _lrn_numpy(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
  """The paper's formula, written out literally over channels."""
  out = np.empty_like(a)
  channels = a.shape[-1]
  for c in range(channels):
    lo, hi = max(0, c - n // 2), min(channels - 1, c + n // 2)
    s = np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
    out[..., c] = a[..., c] / (k + alpha * s) ** beta
  return out


def test_lrn_matches_the_papers_formula():
  rng = np.random.default_rng(0)
  # Large activations so the alpha term matters (alpha is not divided by n).
  x = rng.normal(0, 60, size=(2, 3, 4, 11)).astype(np.float32)
  got = np.asarray(ops.lrn(jnp.asarray(x)))
  np.testing.assert_allclose(got, _lrn_numpy(x), rtol=1e-5, atol=1e-6)
  # Not Caffe's/PyTorch's convention (alpha / n): that gives other numbers.
  assert not np.allclose(got, _lrn_numpy(x, alpha=1e-4 / 5), rtol=1e-3)


def test_lrn_other_constants():
  x = np.random.default_rng(1).normal(0, 3, size=(1, 2, 2, 7)).astype(np.float32)
  got = ops.lrn(jnp.asarray(x), depth=3, bias=1.0, alpha=0.1, beta=0.5)
  np.testing.assert_allclose(got, _lrn_numpy(x, 3, 1.0, 0.1, 0.5), rtol=1e-5)


@pytest.mark.parametrize('variant, size, dropped', [
    # The paper (section 4.2) drops the outputs of the first two fully
    # connected layers; torchvision's classifier, Dropout before each of
    # its first two Linear layers: pool5's 6x6 maps, then fc6's outputs.
    ('paper', 67, ('fc', 'fc')),
    ('owt', 99, ('pool5', 'fc')),
])
def test_dropout_falls_where_each_variant_puts_it(variant, size, dropped):
  net = models.AlexNet(variant=variant, width=0.1, num_classes=7)
  x = jnp.ones((2, size, size, 3))
  params = net.init(jax.random.key(0), x)['params']
  pool5 = models.features(net, params, x)
  widths = {'pool5': int(np.prod(pool5.shape[1:])),
            'fc': params['fc6']['kernel'].shape[1]}
  assert widths['pool5'] != widths['fc']
  seen = []
  models.head(net, params, pool5,
              dropout=lambda v, j: seen.append((j, v.shape[1])) or v)
  assert seen == [(j, widths[name]) for j, name in enumerate(dropped)]


def test_paper_initialization():
  net = models.AlexNet(width=0.1, num_classes=10)
  p = net.init(jax.random.key(0), jnp.zeros((1, 67, 67, 3)))['params']
  for name in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7'):
    assert np.all(p[name]['bias'] == 1.0), name
  for name in ('conv1', 'conv3', 'fc8'):
    assert np.all(p[name]['bias'] == 0.0), name
  w = np.asarray(p['fc6']['kernel'])
  assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001


@pytest.mark.slow
def test_minimum_input_size_and_error():
  assert models.min_image_size('paper', True) == 67
  assert models.min_image_size('paper', False) == 39
  assert models.feature_map_size(227) == 6
  assert models.feature_map_size(224, 'owt') == 6
  net = models.AlexNet(width=0.05, num_classes=3)
  with pytest.raises(ValueError, match='needs at least 67'):
    net.init(jax.random.key(0), jnp.zeros((1, 66, 66, 3)))
  # The smallest admissible size works and gives logits.
  v = net.init(jax.random.key(0), jnp.zeros((1, 67, 67, 3)))
  assert net.apply(v, jnp.zeros((2, 67, 67, 3))).shape == (2, 3)


def test_switches_change_the_function():
  x = jax.random.normal(jax.random.key(1), (2, 67, 67, 3)) * 50
  base = dict(width=0.1, num_classes=5)
  net = models.AlexNet(**base)
  v = net.init(jax.random.key(0), x)
  y = net.apply(v, x)
  assert not np.allclose(y, models.AlexNet(**base, lrn=False).apply(v, x))
  assert not np.allclose(
      y, models.AlexNet(**base, activation='tanh').apply(v, x))
  # Dropout is active only in training, and depends on the key.
  a = net.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)})
  b = net.apply(v, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(a, b)
  np.testing.assert_allclose(net.apply(v, x, train=False), y)


def test_bfloat16_compute_keeps_float32_params():
  net = models.AlexNet(width=0.1, num_classes=5, dtype='bfloat16')
  x = jnp.ones((1, 67, 67, 3))
  v = net.init(jax.random.key(0), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(v))
  assert net.apply(v, x).dtype == jnp.float32


def test_width_scales_every_layer():
  p = _shapes(67, width=0.25, num_classes=10)
  assert p['conv1']['kernel'].shape[-1] == 24
  assert p['conv2']['kernel'].shape == (5, 5, 12, 64)
  assert p['fc7']['kernel'].shape == (1024, 1024)
  assert p['fc8']['kernel'].shape == (1024, 10)


def test_variant_defaults_through_the_config():
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  train.validate(config)
  built = lambda: models.model_from_config(config.model)
  assert (built().groups, built().lrn) == (2, True)  # The paper's.
  config.model.variant = 'owt'
  config.image_size, config.resize_size = 224, 256
  train.validate(config)
  assert (built().groups, built().lrn) == (1, False)  # torchvision's.
  config.model.groups = 2  # An explicit field still wins.
  train.validate(config)
  assert (built().groups, built().lrn) == (2, False)


def test_model_from_config_leaves_out_older_execution_fields():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  want = models.model_from_config(config.model)
  # Older config.json files held how the operations ran, in config.model
  # (and later config.execution): not the model's fields, left out.
  old = ml_collections.ConfigDict({
      'model': {**config.model.to_dict(), 'conv_impl': 'xla',
                'lrn_impl': 'matmul', 'pool_impl': 'reduce_window',
                'conv1_impl': 'space_to_depth'},
      'execution': {'lrn_impl': 'matmul'}})
  assert models.model_from_config(old.model) == want
  assert want.width == config.model.width
  config.model.no_such_field = 1
  with pytest.raises(ValueError, match='no_such_field'):
    models.model_from_config(config.model)
