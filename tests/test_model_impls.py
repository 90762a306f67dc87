"""The fast implementations compute the same function with the same parameters.

alexnet_jax.ops under every `ops.Execution`: grouped convolutions (split vs
XLA vs flax's nn.Conv), LRN (every impl vs the paper's formula in NumPy), conv1
as space-to-depth, max-pooling, the whole net under every combination, the
PyTorch reference net (same function as the JAX net), and the benchmark
scripts' own logic. Throughput itself is measured by
experiments/benchmark.py, never here.
"""

import functools
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from alexnet_jax import models
from alexnet_jax import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _assert_trees_close(a, b, tol):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    assert x.shape == y.shape, path
    assert _rel(x, y) < tol, (jax.tree_util.keystr(path), _rel(x, y))


# --- Grouped convolution -----------------------------------------------------


@pytest.mark.parametrize('stride, padding', [(1, 2), (2, 1)])
def test_grouped_conv_impls_equal_flax_feature_group_count(stride, padding):
  x = jax.random.normal(jax.random.key(0), (2, 11, 11, 8))
  ref = nn.Conv(6, (5, 5), strides=stride, padding=((padding, padding),) * 2,
                feature_group_count=2)
  params = ref.init(jax.random.key(1), x)['params']
  params = jax.tree_util.tree_map(  # A non-zero bias, so it is checked too.
      lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape),
      params)
  assert params['kernel'].shape == (5, 5, 4, 6)

  def loss(conv):
    def f(p, x):
      y = conv(p, x)
      return jnp.sum(jnp.sin(y)), y  # A loss whose gradient varies per output.
    return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)

  (_, y_ref), g_ref = loss(lambda p, x: ref.apply({'params': p}, x))(params, x)
  # The model's parameter tree is nn.Conv(feature_group_count=2)'s.
  own = models.ConvParams(6, 5, 2, nn.initializers.lecun_normal(),
                          nn.initializers.zeros).init(jax.random.key(1), 8)
  assert jax.tree_util.tree_map(jnp.shape, own['params']) == (
      jax.tree_util.tree_map(jnp.shape, params))
  for impl in ops.CONV_IMPLS:
    conv = functools.partial(ops.conv, stride=stride, padding=padding,
                             groups=2, execution=ops.Execution(conv_impl=impl))
    (_, y), g = loss(lambda p, x, conv=conv: conv(x, p['kernel'], p['bias']))(
        params, x)
    assert _rel(y, y_ref) < 1e-6, impl
    _assert_trees_close(g, g_ref, 1e-6)


def test_bad_execution_and_conv_settings_are_named():
  for field in ops.CHOICES:
    with pytest.raises(ValueError, match=f"execution.{field}='bogus'"):
      ops.Execution(**{field: 'bogus'})
  with pytest.raises(ValueError, match="execution.pool_impl='avg'"):
    models.AlexNet(execution=ops.Execution(pool_impl='avg'))
  x = jnp.zeros((1, 9, 9, 6))
  conv = lambda k, groups, **kw: ops.conv(
      x, jnp.zeros(k), jnp.zeros(k[-1]), stride=2, padding=0, groups=groups,
      **kw)
  with pytest.raises(ValueError, match='divisible by groups=4'):
    conv((3, 3, 1, 4), 4, execution=ops.Execution())
  with pytest.raises(ValueError, match='grouped kernels are not supported'):
    conv((3, 3, 3, 4), 2, first_layer=True,
         execution=ops.Execution(conv1_impl='space_to_depth'))


# --- LRN ---------------------------------------------------------------------


def _lrn_numpy(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
  """The paper's formula, written out over channels, in float64."""
  a = np.asarray(a, np.float64)
  out = np.empty_like(a)
  channels = a.shape[-1]
  for c in range(channels):
    lo, hi = max(0, c - n // 2), min(channels - 1, c + n // 2)
    s = np.sum(a[..., lo:hi + 1] ** 2, -1)
    out[..., c] = a[..., c] / (k + alpha * s) ** beta
  return out


def _lrn_jnp_loops(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
  """The same formula in jnp, one channel at a time: a gradient reference."""
  channels = a.shape[-1]
  cols = []
  for c in range(channels):
    lo, hi = max(0, c - n // 2), min(channels - 1, c + n // 2)
    s = jnp.sum(a[..., lo:hi + 1] ** 2, -1)
    cols.append(a[..., c] / (k + alpha * s) ** beta)
  return jnp.stack(cols, -1)


@pytest.mark.parametrize('impl', ops.LRN_IMPLS)
def test_lrn_impl_matches_the_formula_fp32_and_bf16(impl):
  execution = ops.Execution(lrn_impl=impl)
  rng = np.random.default_rng(0)
  # ReLU outputs of a size where alpha * sum(a^2) is comparable to k = 2.
  x = np.maximum(rng.normal(0, 80, size=(2, 3, 5, 13)), 0).astype(np.float32)
  want = _lrn_numpy(x)
  assert np.max(1e-4 * x ** 2) > 1.0  # The normalisation really acts.
  got = ops.lrn(jnp.asarray(x), execution=execution)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
  got16 = ops.lrn(jnp.asarray(x, jnp.bfloat16), execution=execution)
  assert got16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got16, np.float32), want,
                             rtol=3e-2, atol=3e-2)
  assert _rel(np.asarray(got16, np.float32), want) < 1e-2
  # Other constants (depth 3, beta != 0.75 takes the pow path).
  got = ops.lrn(jnp.asarray(x / 20), depth=3, bias=1.0, alpha=0.1, beta=0.5,
                execution=execution)
  np.testing.assert_allclose(got, _lrn_numpy(x / 20, 3, 1.0, 0.1, 0.5),
                             rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize('impl', ops.LRN_IMPLS)
def test_lrn_impl_gradient_matches_the_formula(impl):
  x = jax.nn.relu(jax.random.normal(jax.random.key(3), (2, 4, 4, 11)) * 80)
  w = jax.random.normal(jax.random.key(4), x.shape)
  f = lambda fn: jax.grad(lambda v: jnp.sum(fn(v) * w))(x)
  want = f(_lrn_jnp_loops)
  got = f(lambda v: ops.lrn(v, execution=ops.Execution(lrn_impl=impl)))
  assert _rel(got, want) < 1e-6


# --- conv1 as space-to-depth -------------------------------------------------


@pytest.mark.parametrize('size, kernel, stride, padding', [
    (227, 11, 4, 0),  # The paper's conv1.
    (224, 11, 4, 2),  # torchvision's ("owt").
    (67, 11, 4, 0),  # The smallest input the paper's net admits.
    (30, 5, 2, 1),
    (29, 4, 4, 1),  # Kernel a multiple of the stride; rows cropped.
])
def test_space_to_depth_conv_equals_the_strided_conv(size, kernel, stride,
                                                     padding):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 8)) * 0.1
  direct = lambda x, w: lax.conv_general_dilated(
      x, w, (stride, stride), ((padding, padding),) * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  s2d = lambda x, w: ops.space_to_depth_conv(x, w, stride, padding)
  y, y_ref = s2d(x, w), direct(x, w)
  assert y.shape == y_ref.shape
  assert _rel(y, y_ref) < 1e-6
  cot = jax.random.normal(jax.random.key(2), y.shape)
  grads = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * cot),
                             argnums=(0, 1))(x, w)
  (gx, gw), (gx_ref, gw_ref) = grads(s2d), grads(direct)
  assert _rel(gw, gw_ref) < 1e-6
  assert _rel(gx, gx_ref) < 1e-6


def test_conv1_impl_keeps_parameters_and_counts():
  shapes = lambda **kw: jax.eval_shape(lambda: models.AlexNet(**kw).init(
      jax.random.key(0), jnp.zeros((1, 227, 227, 3))))['params']
  direct = shapes()
  s2d = shapes(execution=ops.Execution(conv1_impl='space_to_depth'))
  assert jax.tree_util.tree_map(jnp.shape, direct) == jax.tree_util.tree_map(
      jnp.shape, s2d)
  assert models.count_params(s2d) == 60_965_224
  assert s2d['conv1']['kernel'].shape == (11, 11, 3, 96)


# --- Max-pooling -------------------------------------------------------------


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('shape, window, stride', [
    ((2, 13, 13, 5), 3, 2),  # Overlapping (the paper's).
    ((2, 12, 11, 3), 2, 2),  # Non-overlapping, odd width.
    ((1, 27, 27, 4), 3, 2),
])
def test_max_pool_impls_equal_with_ties(dtype, shape, window, stride):
  # Few distinct values: many windows hold several maxima, where the gradient
  # must go to the first one (select_and_scatter's rule), not be shared.
  x = jax.random.randint(jax.random.key(0), shape, 0, 4).astype(dtype)
  y_ref, vjp_ref = jax.vjp(
      lambda v: ops.max_pool(v, window, stride,
                             ops.Execution(pool_impl='reduce_window')), x)
  y, vjp = jax.vjp(lambda v: ops.max_pool(
      v, window, stride, ops.Execution(pool_impl='slices')), x)
  np.testing.assert_array_equal(np.asarray(y, np.float32),
                                np.asarray(y_ref, np.float32))
  g = jax.random.normal(jax.random.key(1), y.shape).astype(dtype)
  (dx,), (dx_ref,) = vjp(g), vjp_ref(g)
  assert dx.dtype == dtype
  # Each input gets the sum of at most 4 window gradients; only their order
  # of addition may differ.
  tol = 1e-6 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.asarray(dx, np.float32),
                             np.asarray(dx_ref, np.float32), atol=tol)
  assert np.count_nonzero(np.asarray(dx, np.float32)) == np.count_nonzero(
      np.asarray(dx_ref, np.float32))


# --- The whole net -----------------------------------------------------------


@pytest.mark.slow
def test_every_implementation_computes_the_same_net():
  # (The owt layout differs in conv1's padding, covered by the
  # space-to-depth test above, and in pooling sizes, by the pooling tests.)
  size = 67
  base = dict(width=0.1, num_classes=7)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3)) * 60
  labels = jnp.array([1, 5])
  # The reference: XLA's grouped convolution, window and pooling primitives.
  ref = dict(conv_impl='xla', lrn_impl='reduce_window', conv1_impl='direct',
             pool_impl='reduce_window')
  ref_net = models.AlexNet(**base, execution=ops.Execution(**ref))
  params = ref_net.init(jax.random.key(1), x)['params']

  def logits_and_grads(net):
    def loss(p):
      logits = net.apply({'params': p}, x, train=True,
                         rngs={'dropout': jax.random.key(2)})
      return jnp.mean(
          -jax.nn.log_softmax(logits)[jnp.arange(2), labels]), logits
    (_, logits), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, g

  want_logits, want_grads = logits_and_grads(ref_net)
  assert np.std(np.asarray(want_grads['conv1']['kernel'])) > 0
  # Each change alone, then the fast combinations.
  combos = [dict(conv_impl='split'), dict(lrn_impl='matmul'),
            dict(lrn_impl='shift'), dict(conv1_impl='space_to_depth'),
            dict(pool_impl='slices'),
            dict(conv_impl='split', lrn_impl='shift',
                 conv1_impl='space_to_depth', pool_impl='slices'),
            dict(conv_impl='split', lrn_impl='matmul',
                 conv1_impl='space_to_depth', pool_impl='slices')]
  assert {k for c in combos for k in c} == set(ops.CHOICES)
  for combo in combos:
    net = models.AlexNet(**base, execution=ops.Execution(**{**ref, **combo}))
    logits, grads = logits_and_grads(net)
    assert _rel(logits, want_logits) < 1e-5, combo
    _assert_trees_close(grads, want_grads, 1e-4)


@pytest.mark.slow
def test_bfloat16_implementations_agree_loosely():
  base = dict(width=0.1, num_classes=7, dtype='bfloat16')
  x = jax.random.normal(jax.random.key(0), (2, 67, 67, 3)) * 60
  ref_net = models.AlexNet(**base, execution=ops.Execution(
      conv_impl='xla', lrn_impl='reduce_window'))
  params = ref_net.init(jax.random.key(1), x)['params']
  want = ref_net.apply({'params': params}, x)
  for lrn in ops.LRN_IMPLS:
    net = models.AlexNet(**base, execution=ops.Execution(
        lrn_impl=lrn, conv1_impl='space_to_depth', pool_impl='slices'))
    assert _rel(net.apply({'params': params}, x), want) < 3e-2, lrn


# --- The PyTorch reference is the same net -----------------------------------


def _torch():
  return pytest.importorskip('torch')


@pytest.mark.parametrize('kwargs, size, expected', [
    (dict(), 227, 60_965_224),
    (dict(groups=1), 227, 62_378_344),
    (dict(variant='owt'), 224, 61_100_840),
])
def test_torch_reference_parameter_counts(kwargs, size, expected):
  _torch()
  from experiments import torch_reference
  net = torch_reference.AlexNet(image_size=size, **kwargs)
  assert torch_reference.count_params(net) == expected


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['paper', 'owt'])
def test_torch_reference_computes_the_jax_function(variant):
  torch = _torch()
  from experiments import torch_reference
  size, width, classes = 67, 0.1, 7
  net = models.AlexNet(variant=variant, width=width, num_classes=classes)
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, size, size, 3)) * 60)
  params = net.init(jax.random.key(1), jnp.asarray(x))['params']
  want = np.asarray(net.apply({'params': params}, jnp.asarray(x)))

  # The variant's own groups and LRN, in both frameworks.
  ref = torch_reference.AlexNet(classes, variant, width=width, image_size=size)
  ref.eval()
  with torch.no_grad():
    for name, layer in ref.features.items():
      if name.startswith('conv'):  # HWIO -> OIHW.
        layer.weight.copy_(torch.from_numpy(
            np.asarray(params[name]['kernel']).transpose(3, 2, 0, 1).copy()))
        layer.bias.copy_(torch.from_numpy(np.array(params[name]['bias'])))
    c = ref.features['conv5'].out_channels
    for name, layer in ref.classifier.items():
      if not name.startswith('fc'):
        continue
      k = np.asarray(params[name]['kernel'])
      if name == 'fc6':  # JAX flattens (H, W, C); torch (C, H, W).
        s = int(round((k.shape[0] // c) ** 0.5))
        k = k.reshape(s, s, c, -1).transpose(2, 0, 1, 3).reshape(k.shape)
      layer.weight.copy_(torch.from_numpy(k.T.copy()))
      layer.bias.copy_(torch.from_numpy(np.array(params[name]['bias'])))
    got = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  assert _rel(got, want) < 1e-5
  assert np.std(want) > 0


def test_torch_reference_trains():
  _torch()
  from experiments import torch_reference
  result = torch_reference.benchmark(
      steps=1, windows=2, warmup=1, batch_size=2, image_size=67, width=0.05,
      num_classes=5)
  assert result['images_per_sec'] > 0
  assert len(result['images_per_sec_windows']) == 2
  assert result['params'] == torch_reference.count_params(
      torch_reference.AlexNet(5, width=0.05, image_size=67))
  with pytest.raises(ValueError, match="dtype='float16'"):
    torch_reference.TrainStep(dtype='float16')


# --- The benchmark scripts ---------------------------------------------------


@pytest.mark.slow
def test_gpu_check_script_is_valid_bash():
  subprocess.run(['bash', '-n', os.path.join(ROOT, 'experiments',
                                             'gpu_check.sh')], check=True)


@pytest.mark.slow
def test_benchmarks_import_without_tensorflow_or_ml_collections():
  # A GPU machine may have neither; the benchmark must still import.
  code = (
      'import sys, importlib.abc\n'
      'class Block(importlib.abc.MetaPathFinder):\n'
      '  def find_spec(self, name, path, target=None):\n'
      '    if name.split(".")[0] in ("ml_collections", "tensorflow",\n'
      '                              "tensorflow_datasets"):\n'
      '      raise ImportError("blocked " + name)\n'
      'sys.meta_path.insert(0, Block())\n'
      'from experiments import benchmark, torch_reference\n'
      'from alexnet_jax import train\n'
      'print("imported")\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                       capture_output=True, text=True,
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert 'imported' in out.stdout
