"""AlexNet's operations, each in the form measured fastest
(docs/performance.md); experiments/op_variants.py swaps in the others for
`convolve`, `channel_window_sum` and `valid_max_pool`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
NHWC = ('NHWC', 'HWIO', 'NHWC')


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
  """TensorFlow's 'SAME' padding of one axis (the odd pixel at the end)."""
  total = max((-(-size // stride) - 1) * stride + window - size, 0)
  return total // 2, total - total // 2


def conv(x: Array, kernel: Array, bias: Array, *, stride: int,
         padding: int | str, groups: int) -> Array:
  """A grouped 2-D convolution of NHWC `x` plus `bias` (`kernel` laid out as
  `nn.Conv(feature_group_count=groups)`'s); `padding`: zeros, or 'SAME'."""
  in_channels, features = x.shape[-1], kernel.shape[-1]
  if in_channels != kernel.shape[2] * groups or features % groups:
    raise ValueError(
        f'conv: {in_channels} input and {features} output channels must both '
        f'be divisible by groups={groups} (kernel {kernel.shape}).')
  pads = tuple(same_pads(n, kernel.shape[0], stride) if padding == 'SAME'
               else (padding, padding) for n in x.shape[1:3])
  return convolve(x, kernel, stride=stride, pads=pads, groups=groups) + bias


def convolve(x: Array, kernel: Array, *, stride: int,
             pads: tuple[tuple[int, int], ...], groups: int) -> Array:
  """One convolution per group, concatenated: 3-4x faster to train on the CPU
  than XLA's `feature_group_count`, and faster on the H200."""
  ys = [lax.conv_general_dilated(xi, ki, (stride, stride), pads,
                                 dimension_numbers=NHWC)
        for xi, ki in zip(jnp.split(x, groups, axis=-1),
                          jnp.split(kernel, groups, axis=-1))]
  return ys[0] if groups == 1 else jnp.concatenate(ys, axis=-1)


def channel_window_sum(v: Array, depth: int, dtype) -> Array:
  """sum_{|c' - c| <= depth//2} v[..., c'] of float32 `v` as shifted adds,
  which fuse with the ReLU and pooling. `dtype` is for other forms' use."""
  del dtype
  half, channels = depth // 2, v.shape[-1]
  padded = jnp.pad(v, ((0, 0),) * (v.ndim - 1) + ((half, half),))
  sums = padded[..., :channels]
  for offset in range(1, 2 * half + 1):
    sums = sums + padded[..., offset:offset + channels]
  return sums


def _inverse_power(scale: Array, beta: float) -> Array:
  if beta == 0.75:  # d**-0.75 == rsqrt(d) * rsqrt(sqrt(d)), cheaper than pow.
    return lax.rsqrt(scale) * lax.rsqrt(jnp.sqrt(scale))
  return jnp.power(scale, -beta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, depth, bias, alpha, beta):
  return _lrn_fwd(x, depth, bias, alpha, beta)[0]


def _lrn_fwd(x, depth, bias, alpha, beta):
  squares = jnp.square(x.astype(jnp.float32))
  scale = bias + alpha * channel_window_sum(squares, depth, x.dtype)
  y = (x * _inverse_power(scale, beta).astype(x.dtype)).astype(x.dtype)
  return y, (x, scale)


def _lrn_bwd(depth, bias, alpha, beta, res, g):
  """d/da of a * s**-beta, s = bias + alpha * window_sum(a**2), is g * s**-beta
  - 2 alpha beta a * window_sum(g * a * s**(-beta-1)) (a symmetric window);
  autodiff of the sum would build slices and pads, twice as slow."""
  del bias
  x, scale = res
  inv = _inverse_power(scale, beta)
  gf, xf = g.astype(jnp.float32), x.astype(jnp.float32)
  window = channel_window_sum(gf * xf * inv / scale, depth, x.dtype)
  dx = gf * inv - (2.0 * alpha * beta) * xf * window
  return (dx.astype(x.dtype),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def lrn(x: Array, *, depth: int = 5, bias: float = 2.0, alpha: float = 1e-4,
        beta: float = 0.75, groups: int = 1) -> Array:
  """The paper's LRN over the channels of NHWC `x` (docs/paper.md; alpha not
  divided by depth), summed in float32. Each of `groups` equal channel blocks
  is normalized on its own, as each of the paper's GPUs did its own maps."""
  channels = x.shape[-1]
  if groups < 1 or channels % groups:
    raise ValueError(f'lrn: {channels} channels are not divisible by '
                     f'groups={groups}.')
  if depth < 1 or depth % 2 == 0:  # An even window has no centre channel.
    raise ValueError(f'lrn: depth={depth}; expected an odd number >= 1 (the '
                     f'window spans depth//2 channels on each side).')
  # (..., C) -> (..., groups, C/groups): each window stays in its block.
  y = _lrn(x.reshape(x.shape[:-1] + (groups, channels // groups)), depth,
           float(bias), float(alpha), float(beta))
  return y.reshape(x.shape)


def _pool_taps(x: Array, window: int, stride: int) -> list[Array]:
  """A VALID NHWC max-pool's taps as strided slices, row-major."""
  n, h, w, c = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  return [lax.slice(x, (0, i, j, 0), (n, i + stride * (oh - 1) + 1,
                                      j + stride * (ow - 1) + 1, c),
                    (1, stride, stride, 1))
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: Array, window: int, stride: int) -> Array:
  return _max_pool_slices_fwd(x, window, stride)[0]


def _max_pool_slices_fwd(x, window, stride):
  y = functools.reduce(jnp.maximum, _pool_taps(x, window, stride))
  return y, (x, y)


def _max_pool_slices_bwd(window, stride, res, g):
  """select_and_scatter's gradient (each window's first maximum takes it),
  per output phase so all the work is at the pooled size: input row
  stride * Y + r gets the taps i = stride * q + r at output row Y - q."""
  x, y = res
  (n, h, w, c), (oh, ow) = x.shape, y.shape[1:3]
  taps = _pool_taps(x, window, stride)
  index = jnp.int8 if len(taps) < 127 else jnp.int32
  first = jnp.full(y.shape, len(taps), index)  # The first maximum's tap.
  for k in reversed(range(len(taps))):
    first = jnp.where(taps[k] == y, index(k), first)
  s, q = stride, -(-window // stride)  # q: taps per phase along each axis.
  zero = jnp.zeros((), g.dtype)

  def phase(ri, rj):  # Input rows s * Y + ri, columns s * X + rj.
    acc = jnp.zeros((n, oh + q - 1, ow + q - 1, c), g.dtype)
    for i in range(ri, window, s):
      for j in range(rj, window, s):
        hit = jnp.where(first == i * window + j, g, zero)
        acc = acc + jnp.pad(hit, ((0, 0), (i // s, q - 1 - i // s),
                                  (j // s, q - 1 - j // s), (0, 0)))
    return acc
  # (n, oh+q-1, s, ow+q-1, s, c)
  dx = jnp.stack([jnp.stack([phase(ri, rj) for rj in range(s)], axis=3)
                  for ri in range(s)], axis=2)
  dx = dx.reshape(n, (oh + q - 1) * s, (ow + q - 1) * s, c)
  # Crop to the input, or zero-pad rows no window covers.
  dx = lax.pad(dx, zero, ((0, 0, 0), (0, h - dx.shape[1], 0),
                          (0, w - dx.shape[2], 0), (0, 0, 0)))
  return (dx,)


_max_pool_slices.defvjp(_max_pool_slices_fwd, _max_pool_slices_bwd)


def valid_max_pool(x: Array, window: int, stride: int) -> Array:
  """VALID max-pooling as the max of strided slices (fused with the ReLU and
  LRN before it; custom gradient: 5x faster backward on the CPU). The barrier
  stores it once, where XLA would re-fuse it into each consumer."""
  return lax.optimization_barrier(_max_pool_slices(x, window, stride))


def max_pool(x: Array, window: int, stride: int,
             padding: str = 'VALID') -> Array:
  """Max-pooling of NHWC `x`, 'VALID' or 'SAME' (TensorFlow's: -inf borders)."""
  if padding == 'SAME':
    pads = [same_pads(n, window, stride) for n in x.shape[1:3]]
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  return valid_max_pool(x, window, stride)


def adaptive_avg_pool(x: Array, out: int) -> Array:
  """torch.nn.AdaptiveAvgPool2d((out, out)) on NHWC."""
  h, w = x.shape[1:3]
  if (h, w) == (out, out):
    return x
  # torch's bins: [floor(i * n / out), ceil((i + 1) * n / out)).
  bins = lambda n: [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]
  rows = [[jnp.mean(x[:, h0:h1, w0:w1], axis=(1, 2)) for w0, w1 in bins(w)]
          for h0, h1 in bins(h)]
  return jnp.stack([jnp.stack(row, axis=1) for row in rows], axis=1)
