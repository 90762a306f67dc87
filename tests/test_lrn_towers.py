"""LRN within each tower (the paper's GPUs normalized their own maps).

The reference is PyTorch's `nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75,
k=2)` (PyTorch divides alpha by n: the paper's 1e-4) applied to each half of
the channels separately.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import models
from alexnet_jax import ops
from alexnet_jax.tools import convert
from experiments import op_variants


def _torch_halves(x_nhwc: np.ndarray, groups: int):
  """PyTorch's LRN on each of `groups` channel blocks, and its input grad for
  the loss sum(y * w), w fixed."""
  torch = pytest.importorskip('torch')
  lrn = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
  x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()).double()
  x.requires_grad_(True)
  y = torch.cat([lrn(t) for t in x.chunk(groups, dim=1)], dim=1)
  w = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
  (y * w).sum().backward()
  to_nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)
  return to_nhwc(y), to_nhwc(x.grad), to_nhwc(w)


# The library's window sums, then each other form's (experiments/op_variants).
@pytest.mark.parametrize('forms', [(), ('lrn_matmul',), ('lrn_banded',)])
def test_lrn_within_towers_matches_torch_per_half(forms):
  # 48 channels per tower (conv1's); values large enough that the window
  # matters (a**2 * alpha ~ 1).
  x = np.random.default_rng(0).normal(scale=60, size=(2, 3, 3, 96))
  x = x.astype(np.float32)
  want, want_grad, w = _torch_halves(x, 2)
  f = lambda a: ops.lrn(jnp.asarray(a), groups=2)
  with op_variants.swapped(forms):
    y = f(x)
    grad = jax.grad(lambda a: jnp.sum(f(a) * w.astype(np.float32)))(x)
    across = np.asarray(ops.lrn(jnp.asarray(x)))
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
  # The window at channels 47/48 differs from one across the boundary.
  assert not np.allclose(across[..., 46:50], want[..., 46:50], rtol=1e-4)
  np.testing.assert_allclose(across, _torch_halves(x, 1)[0], rtol=1e-5,
                             atol=1e-6)


def test_convert_torch_lrn_is_the_per_half_reference():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(1).normal(scale=60, size=(2, 2, 2, 32))
  x = x.astype(np.float32)
  with torch.no_grad():
    got = convert.torch_lrn(2)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(got.numpy().transpose(0, 2, 3, 1),
                             _torch_halves(x, 2)[0], rtol=1e-5, atol=1e-6)
  assert not list(convert.torch_lrn(2).parameters())  # state_dict unchanged.


def test_model_field_lrn_across_towers():
  x = jax.random.normal(jax.random.key(1), (2, 67, 67, 3)) * 50
  # He init: activations large enough for the LRN window to matter.
  base = dict(width=0.1, num_classes=5, initialization='he')
  net = models.AlexNet(**base)
  v = net.init(jax.random.key(0), x)
  towers = net.apply(v, x)
  across = models.AlexNet(**base, lrn_across_towers=True).apply(v, x)
  assert not np.allclose(towers, across, rtol=1e-4)
  # One tower: the field changes nothing.
  one = models.AlexNet(**base, groups=1)
  v1 = one.init(jax.random.key(0), x)
  np.testing.assert_array_equal(
      one.apply(v1, x),
      models.AlexNet(**base, groups=1, lrn_across_towers=True).apply(v1, x))
