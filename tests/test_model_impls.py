"""The other forms of the operations (experiments/op_variants.py) compute the
same function with the same parameters as the library's.

Grouped convolutions (split vs XLA's feature_group_count vs flax's nn.Conv),
LRN (every form of the window sum vs the paper's formula in NumPy), conv1 as
space-to-depth, max-pooling, the whole net under every combination, the
swap itself, the PyTorch reference net (same function as the JAX net), and
the benchmark scripts' own logic. Throughput itself is measured by
experiments/benchmark.py, never here.
"""

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
from experiments import op_variants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
swapped = op_variants.swapped
# The library's own form, then each other form of the window sum.
LRN_FORMS = [(), ('lrn_matmul',), ('lrn_banded',)]


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
@pytest.mark.parametrize('forms', [(), ('conv_xla',)])
def test_grouped_conv_forms_equal_flax_feature_group_count(stride, padding,
                                                           forms):
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
  own = models.Params((5, 5, 4, 6), nn.initializers.lecun_normal(),
                      nn.initializers.zeros).init(jax.random.key(1))
  assert jax.tree_util.tree_map(jnp.shape, own['params']) == (
      jax.tree_util.tree_map(jnp.shape, params))
  with swapped(forms):
    (_, y), g = loss(lambda p, x: ops.conv(
        x, p['kernel'], p['bias'], stride=stride, padding=padding, groups=2))(
            params, x)
  assert _rel(y, y_ref) < 1e-6
  _assert_trees_close(g, g_ref, 1e-6)


def test_bad_conv_settings_and_forms_are_named():
  x = jnp.zeros((1, 9, 9, 6))
  conv = lambda k, groups: ops.conv(x, jnp.zeros(k), jnp.zeros(k[-1]),
                                    stride=2, padding=0, groups=groups)
  with pytest.raises(ValueError, match='divisible by groups=4'):
    conv((3, 3, 1, 4), 4)
  with swapped(['s2d']), pytest.raises(
      ValueError, match='grouped kernels are not supported'):
    conv((3, 3, 3, 4), 2)
  with pytest.raises(ValueError, match=r"op variants \['lrn_fast'\]"):
    with swapped(['lrn_fast']):
      pass


def test_swapped_forms_are_compiled_and_then_restored():
  """A step compiled inside `swapped` has the other form (jit traces at call
  time, and no cached trace is reused); the library's is back after."""
  net = models.AlexNet(width=0.1, num_classes=7)
  x = jnp.zeros((1, 67, 67, 3))
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), x))
  step = jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, x))))
  hlo = lambda: step.lower(params).as_text()
  library = hlo()
  originals = (ops.convolve, ops.channel_window_sum, ops.valid_max_pool)
  assert 'feature_group_count = 2' not in library
  assert 'reduce_window' not in library and 'select_and_scatter' not in library
  with swapped(['conv_xla', 'lrn_banded', 'pool_reduce_window']):
    other = hlo()
  assert 'feature_group_count = 2' in other
  assert 'reduce_window' in other and 'select_and_scatter' in other
  with swapped(['s2d']):  # conv1's 67x67x3 input as 17x17 blocks of 4x4x3.
    assert '1x17x17x48xf32' in hlo() and '1x17x17x48xf32' not in library
  assert hlo() == library
  with pytest.raises(RuntimeError), swapped(['s2d', 'conv_xla']):
    assert ops.convolve is not originals[0]
    raise RuntimeError
  assert (ops.convolve, ops.channel_window_sum, ops.valid_max_pool) == (
      originals)


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


@pytest.mark.parametrize('forms', LRN_FORMS)
def test_lrn_forms_match_the_formula_fp32_and_bf16(forms):
  rng = np.random.default_rng(0)
  # ReLU outputs of a size where alpha * sum(a^2) is comparable to k = 2.
  x = np.maximum(rng.normal(0, 80, size=(2, 3, 5, 13)), 0).astype(np.float32)
  want = _lrn_numpy(x)
  assert np.max(1e-4 * x ** 2) > 1.0  # The normalisation really acts.
  with swapped(forms):
    got = ops.lrn(jnp.asarray(x))
    got16 = ops.lrn(jnp.asarray(x, jnp.bfloat16))
    # Other constants (depth 3, beta != 0.75 takes the pow path).
    other = ops.lrn(jnp.asarray(x / 20), depth=3, bias=1.0, alpha=0.1,
                    beta=0.5)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
  assert got16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got16, np.float32), want,
                             rtol=3e-2, atol=3e-2)
  assert _rel(np.asarray(got16, np.float32), want) < 1e-2
  np.testing.assert_allclose(other, _lrn_numpy(x / 20, 3, 1.0, 0.1, 0.5),
                             rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize('forms', LRN_FORMS)
def test_lrn_forms_gradient_matches_the_formula(forms):
  x = jax.nn.relu(jax.random.normal(jax.random.key(3), (2, 4, 4, 11)) * 80)
  w = jax.random.normal(jax.random.key(4), x.shape)
  f = lambda fn: jax.grad(lambda v: jnp.sum(fn(v) * w))(x)
  want = f(_lrn_jnp_loops)
  with swapped(forms):
    got = f(ops.lrn)
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
  s2d = lambda x, w: op_variants.space_to_depth_conv(x, w, stride, padding)
  y, y_ref = s2d(x, w), direct(x, w)
  assert y.shape == y_ref.shape
  assert _rel(y, y_ref) < 1e-6
  cot = jax.random.normal(jax.random.key(2), y.shape)
  grads = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * cot),
                             argnums=(0, 1))(x, w)
  (gx, gw), (gx_ref, gw_ref) = grads(s2d), grads(direct)
  assert _rel(gw, gw_ref) < 1e-6
  assert _rel(gx, gx_ref) < 1e-6


# --- Max-pooling -------------------------------------------------------------


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('shape, window, stride', [
    ((2, 13, 13, 5), 3, 2),  # Overlapping (the paper's).
    ((2, 12, 11, 3), 2, 2),  # Non-overlapping, odd width.
    ((1, 27, 27, 4), 3, 2),
])
def test_max_pool_forms_equal_with_ties(dtype, shape, window, stride):
  # Few distinct values: many windows hold several maxima, where the gradient
  # must go to the first one (select_and_scatter's rule), not be shared.
  x = jax.random.randint(jax.random.key(0), shape, 0, 4).astype(dtype)
  y_ref, vjp_ref = jax.vjp(lambda v: nn.max_pool(
      v, (window, window), strides=(stride, stride), padding='VALID'), x)
  g = jax.random.normal(jax.random.key(1), y_ref.shape).astype(dtype)
  (dx_ref,) = vjp_ref(g)
  for forms in ((), ('pool_reduce_window',)):
    with swapped(forms):
      y, vjp = jax.vjp(lambda v: ops.max_pool(v, window, stride), x)
      (dx,) = vjp(g)
    np.testing.assert_array_equal(np.asarray(y, np.float32),
                                  np.asarray(y_ref, np.float32))
    assert dx.dtype == dtype
    # Each input gets the sum of at most 4 window gradients; only their
    # order of addition may differ.
    tol = 1e-6 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(dx, np.float32),
                               np.asarray(dx_ref, np.float32), atol=tol)
    assert np.count_nonzero(np.asarray(dx, np.float32)) == np.count_nonzero(
        np.asarray(dx_ref, np.float32))


# --- The whole net -----------------------------------------------------------


@pytest.mark.slow
def test_every_form_computes_the_same_net():
  # (The owt layout differs in conv1's padding, covered by the
  # space-to-depth test above, and in pooling sizes, by the pooling tests.)
  size = 67
  net = models.AlexNet(width=0.1, num_classes=7)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3)) * 60
  labels = jnp.array([1, 5])
  params = net.init(jax.random.key(1), x)['params']

  def logits_and_grads(forms):
    def loss(p):
      logits = net.apply({'params': p}, x, train=True,
                         rngs={'dropout': jax.random.key(2)})
      return jnp.mean(
          -jax.nn.log_softmax(logits)[jnp.arange(2), labels]), logits
    with swapped(forms):
      (_, logits), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, g

  # The reference: XLA's grouped convolution, window and pooling primitives.
  reference = ('conv_xla', 'lrn_banded', 'pool_reduce_window')
  want_logits, want_grads = logits_and_grads(reference)
  assert np.std(np.asarray(want_grads['conv1']['kernel'])) > 0
  # The library's forms, each other form alone, and the fast combinations.
  combos = [(), ('lrn_matmul',), ('s2d',), ('s2d', 'lrn_matmul'),
            reference[:1], reference[1:2], reference[2:],
            reference + ('s2d',), ('s2d',) + reference]
  assert {n for c in combos for n in c} == set(op_variants.SWAPS)
  for combo in combos:
    logits, grads = logits_and_grads(combo)
    assert _rel(logits, want_logits) < 1e-5, combo
    _assert_trees_close(grads, want_grads, 1e-4)


@pytest.mark.slow
def test_bfloat16_forms_agree_loosely():
  net = models.AlexNet(width=0.1, num_classes=7, dtype='bfloat16')
  x = jax.random.normal(jax.random.key(0), (2, 67, 67, 3)) * 60
  params = net.init(jax.random.key(1), x)['params']
  with swapped(['conv_xla', 'lrn_banded']):
    want = net.apply({'params': params}, x)
  for lrn in LRN_FORMS:
    with swapped(('s2d',) + lrn):
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
