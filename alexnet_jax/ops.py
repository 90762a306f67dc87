"""AlexNet's operations, and the exact ways each can execute.

`Execution` chooses, per operation, between formulations of the same function
with the same parameters (tests/test_model_impls.py checks outputs and
gradients of each against a reference); docs/performance.md gives their
measured speed. models.py says which operations the network applies; this
module says how they run.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

CONV_IMPLS = ('split', 'xla')
CONV1_IMPLS = ('direct', 'space_to_depth')
LRN_IMPLS = ('matmul', 'reduce_window', 'shift')
POOL_IMPLS = ('reduce_window', 'slices')


@dataclasses.dataclass(frozen=True)
class Execution:
  """How the operations run; none changes the function or the parameters.

  conv1_impl: conv1 'direct', or 'space_to_depth' (`space_to_depth_conv`).
  lrn_impl: LRN's channel-window sums by 'shift' (shifted adds), 'matmul'
    (a banded 0/1 matrix) or 'reduce_window'.
  pool_impl: max-pooling by 'slices' (the maximum of strided slices) or
    'reduce_window' (`nn.max_pool`).
  conv_impl: grouped convolutions 'split' (one per group) or 'xla'
    (`feature_group_count`).
  """
  conv1_impl: str = 'direct'
  lrn_impl: str = 'shift'
  pool_impl: str = 'slices'
  conv_impl: str = 'split'

  def __post_init__(self):
    for field, choices in CHOICES.items():
      value = getattr(self, field)
      if value not in choices:
        raise ValueError(f'execution.{field}={value!r}; expected one of '
                         f'{choices}.')


CHOICES = {'conv1_impl': CONV1_IMPLS, 'lrn_impl': LRN_IMPLS,
           'pool_impl': POOL_IMPLS, 'conv_impl': CONV_IMPLS}


# --- Convolution -------------------------------------------------------------


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
  """TensorFlow's 'SAME' padding of one axis: ceil(size / stride) outputs,
  the odd pixel of padding at the end."""
  total = max((-(-size // stride) - 1) * stride + window - size, 0)
  return total // 2, total - total // 2


def conv(x: Array, kernel: Array, bias: Array, *, stride: int,
         padding: int | str, groups: int, execution: Execution,
         first_layer: bool = False) -> Array:
  """A (possibly grouped) 2-D convolution of NHWC `x`, plus `bias`.

  `kernel` has `nn.Conv(feature_group_count=groups)`'s layout (kh, kw,
  in_channels // groups, features): output channel o reads input group
  o // (features / groups), as in PyTorch. `padding`: zeros on every side,
  or 'SAME' (TensorFlow's). `first_layer`: the network's conv1, which
  `execution.conv1_impl` chooses for.
  """
  in_channels, features = x.shape[-1], kernel.shape[-1]
  if in_channels != kernel.shape[2] * groups or features % groups:
    raise ValueError(
        f'conv: {in_channels} input and {features} output channels must both '
        f'be divisible by groups={groups} (kernel {kernel.shape}).')
  pads = tuple(same_pads(n, kernel.shape[0], stride) if padding == 'SAME'
               else (padding, padding) for n in x.shape[1:3])
  direct = functools.partial(
      lax.conv_general_dilated, window_strides=(stride, stride),
      padding=pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if first_layer and execution.conv1_impl == 'space_to_depth':
    y = space_to_depth_conv(x, kernel, stride, pads)
  elif groups == 1:
    y = direct(x, kernel)
  elif execution.conv_impl == 'xla':
    y = direct(x, kernel, feature_group_count=groups)
  else:  # 'split'
    xs = jnp.split(x, groups, axis=-1)
    ks = jnp.split(kernel, groups, axis=-1)
    y = jnp.concatenate([direct(xi, ki) for xi, ki in zip(xs, ks)], axis=-1)
  return y + bias


def space_to_depth_conv(x: Array, kernel: Array, stride: int,
                        padding: int | tuple[tuple[int, int], ...]) -> Array:
  """A strided `conv(x, kernel)` as a stride-1 convolution on blocks.

  The input is cut into `stride` x `stride` blocks stacked on the channels
  (227x227x3 -> 57x57x48 for conv1, after one zero row and column), and the
  kernel, zero-padded to a multiple of the stride (11 -> 12), is cut the same
  way (11x11x3x96 -> 3x3x48x96). Every product of the direct convolution
  appears once, the added taps multiply zeros: the same function and the same
  parameter, with 16 times more input channels for the matrix units.
  """
  n, h, w, c = x.shape
  k, _, kc, features = kernel.shape
  if kc != c:
    raise ValueError(f'space_to_depth_conv: kernel expects {kc} input '
                     f'channels, got {c} (grouped kernels are not '
                     f'supported).')
  s = stride
  (top, bottom), (left, right) = (
      ((padding, padding),) * 2 if isinstance(padding, int) else padding)
  blocks = -(-k // s)  # Kernel extent in blocks.
  out_h = (h + top + bottom - k) // s + 1
  out_w = (w + left + right - k) // s + 1
  need_h, need_w = s * (out_h + blocks - 1), s * (out_w + blocks - 1)
  # Pads (or crops rows no output reads) to whole blocks.
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (top, need_h - h - top, 0),
               (left, need_w - w - left, 0), (0, 0, 0)))
  x = x.reshape(n, need_h // s, s, need_w // s, s, c)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, need_h // s, need_w // s,
                                            s * s * c)
  kernel = jnp.pad(kernel, ((0, blocks * s - k), (0, blocks * s - k),
                            (0, 0), (0, 0)))
  kernel = kernel.reshape(blocks, s, blocks, s, c, features)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5).reshape(blocks, blocks, s * s * c,
                                                      features)
  return lax.conv_general_dilated(x, kernel, window_strides=(1, 1),
                                  padding='VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


# --- Local response normalization --------------------------------------------


def _channel_window_sum(v: Array, depth: int, impl: str) -> Array:
  """Over channels: sum_{|c' - c| <= depth//2} v[..., c'], in float32."""
  half = depth // 2
  channels = v.shape[-1]
  if impl == 'matmul':
    idx = jnp.arange(channels)
    band = (jnp.abs(idx[:, None] - idx[None, :]) <= half).astype(v.dtype)
    return jnp.einsum('...c,cd->...d', v, band,
                      preferred_element_type=jnp.float32)
  v = v.astype(jnp.float32)
  if impl == 'reduce_window':
    return lax.reduce_window(
        v, 0.0, lax.add,
        window_dimensions=(1,) * (v.ndim - 1) + (2 * half + 1,),
        window_strides=(1,) * v.ndim,
        padding=((0, 0),) * (v.ndim - 1) + ((half, half),))
  padded = jnp.pad(v, ((0, 0),) * (v.ndim - 1) + ((half, half),))  # 'shift'
  sums = padded[..., :channels]
  for offset in range(1, 2 * half + 1):
    sums = sums + padded[..., offset:offset + channels]
  return sums


def _inverse_power(scale: Array, beta: float) -> Array:
  if beta == 0.75:  # d**-0.75 == rsqrt(d) * rsqrt(sqrt(d)), cheaper than pow.
    return lax.rsqrt(scale) * lax.rsqrt(jnp.sqrt(scale))
  return jnp.power(scale, -beta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _lrn(x, depth, bias, alpha, beta, impl):
  return _lrn_fwd(x, depth, bias, alpha, beta, impl)[0]


def _lrn_fwd(x, depth, bias, alpha, beta, impl):
  # The banded matmul squares in the compute dtype (bf16 feeds the matrix
  # units); the other forms square in float32.
  squares = jnp.square(x if impl == 'matmul' else x.astype(jnp.float32))
  scale = bias + alpha * _channel_window_sum(squares, depth, impl)
  y = (x * _inverse_power(scale, beta).astype(x.dtype)).astype(x.dtype)
  return y, (x, scale)


def _lrn_bwd(depth, bias, alpha, beta, impl, res, g):
  """d/da of a * s**-beta, s = bias + alpha * window_sum(a**2):
  g * s**-beta - 2 alpha beta a * window_sum(g * a * s**(-beta-1))
  (the channel window is symmetric, so the transpose is the same sum)."""
  del bias
  x, scale = res
  inv = _inverse_power(scale, beta)
  gf, xf = g.astype(jnp.float32), x.astype(jnp.float32)
  t = gf * xf * inv / scale
  if impl == 'matmul':
    t = t.astype(x.dtype)
  window = _channel_window_sum(t, depth, impl)
  dx = gf * inv - (2.0 * alpha * beta) * xf * window
  return (dx.astype(x.dtype),)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def lrn(x: Array, *, depth: int = 5, bias: float = 2.0, alpha: float = 1e-4,
        beta: float = 0.75, groups: int = 1,
        execution: Execution = Execution()) -> Array:
  """The paper's local response normalization over the channels of NHWC `x`.

  b[c] = a[c] / (bias + alpha * sum_{c'=max(0, c-depth//2)}^{min(C-1, c+depth//2)}
  a[c']^2) ** beta. Unlike Caffe and PyTorch, alpha is not divided by depth
  (models.py divides it where `lrn_convention='cuda_convnet'`). `depth` is
  odd (the window is centred on the channel).
  `groups`: the channels are cut into this many equal blocks and each is
  normalized on its own (the window stops at a block's edge), as the paper's
  two GPUs each normalized their own maps (cuda-convnet's rnorm1a/rnorm1b).

  `execution.lrn_impl` selects how the channel-window sums are taken, in the
  forward pass and in the gradient (written out analytically: one more window
  sum). All are exact; sums are accumulated in float32.
  """
  channels = x.shape[-1]
  if groups < 1 or channels % groups:
    raise ValueError(f'lrn: {channels} channels are not divisible by '
                     f'groups={groups}.')
  if depth < 1 or depth % 2 == 0:  # An even window has no centre channel.
    raise ValueError(f'lrn: depth={depth}; expected an odd number >= 1 (the '
                     f'window spans depth//2 channels on each side).')
  # Every impl sums over the last axis only: (..., C) -> (..., groups, C/groups)
  # keeps each window inside its block.
  y = _lrn(x.reshape(x.shape[:-1] + (groups, channels // groups)), depth,
           float(bias), float(alpha), float(beta), execution.lrn_impl)
  return y.reshape(x.shape)


# --- Pooling -----------------------------------------------------------------


def _pool_taps(x: Array, window: int,
               stride: int) -> list[tuple[int, int, Array]]:
  """The window's taps of a VALID NHWC max-pool: (i, j, strided slice)."""
  n, h, w, c = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  return [(i, j, lax.slice(x, (0, i, j, 0),
                           (n, i + stride * (oh - 1) + 1,
                            j + stride * (ow - 1) + 1, c),
                           (1, stride, stride, 1)))
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_slices(x: Array, window: int, stride: int) -> Array:
  return _max_pool_slices_fwd(x, window, stride)[0]


def _max_pool_slices_fwd(x, window, stride):
  y = functools.reduce(jnp.maximum, [t for _, _, t in
                                     _pool_taps(x, window, stride)])
  return y, (x, y)


def _max_pool_slices_bwd(window, stride, res, g):
  """select_and_scatter's gradient: each window's first maximum (in row-major
  window order) takes the window's gradient, as for `lax.reduce_window`.

  Written per output phase, so that all the work is at the pooled size: input
  row stride * Y + r gets the taps i = stride * q + r at output row Y - q.
  """
  x, y = res
  n, h, w, c = x.shape
  oh, ow = y.shape[1:3]
  taps = _pool_taps(x, window, stride)
  index = jnp.int8 if len(taps) < 127 else jnp.int32
  first = jnp.full(y.shape, len(taps), index)  # The first maximum's tap.
  for k in reversed(range(len(taps))):
    first = jnp.where(taps[k][2] == y, index(k), first)
  s, q = stride, -(-window // stride)  # q: taps per phase along each axis.
  zero = jnp.zeros((), g.dtype)
  rows = []
  for ri in range(s):
    cols = []
    for rj in range(s):
      acc = jnp.zeros((n, oh + q - 1, ow + q - 1, c), g.dtype)
      for qi in range(q):
        for qj in range(q):
          i, j = qi * s + ri, qj * s + rj
          if i >= window or j >= window:
            continue
          hit = jnp.where(first == i * window + j, g, zero)
          acc = acc + jnp.pad(hit, ((0, 0), (qi, q - 1 - qi),
                                    (qj, q - 1 - qj), (0, 0)))
      cols.append(acc)
    rows.append(jnp.stack(cols, axis=3))  # (n, oh+q-1, ow+q-1, s, c)
  dx = jnp.stack(rows, axis=2)  # (n, oh+q-1, s, ow+q-1, s, c)
  dx = dx.reshape(n, (oh + q - 1) * s, (ow + q - 1) * s, c)
  # Crop to the input, or zero-pad rows no window covers.
  dx = lax.pad(dx, zero, ((0, 0, 0), (0, h - dx.shape[1], 0),
                          (0, w - dx.shape[2], 0), (0, 0, 0)))
  return (dx,)


_max_pool_slices.defvjp(_max_pool_slices_fwd, _max_pool_slices_bwd)


def max_pool(x: Array, window: int, stride: int,
             execution: Execution = Execution(),
             padding: str = 'VALID') -> Array:
  """Max-pooling of NHWC `x` (window x window, stride x stride), 'VALID' or
  'SAME' (TensorFlow's: the borders padded with -inf, so they never win).

  'reduce_window' is `nn.max_pool` (XLA's reduce_window; its gradient is a
  select_and_scatter). 'slices' takes the maximum of the window's
  `window**2` strided slices, an elementwise form that fuses with the ReLU
  and LRN before it, with a custom gradient equal to select_and_scatter's
  (the first maximum of each window takes its gradient). Its output passes
  through `lax.optimization_barrier`, so it is computed once and stored:
  otherwise XLA re-fuses the slices (and the ReLU and LRN before them) into
  each consumer, such as the transposes of the next convolution's weight
  gradient on the CPU.
  """
  if padding == 'SAME':
    pads = [same_pads(n, window, stride) for n in x.shape[1:3]]
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  if execution.pool_impl == 'reduce_window':
    return nn.max_pool(x, (window, window), strides=(stride, stride),
                       padding='VALID')
  return lax.optimization_barrier(_max_pool_slices(x, window, stride))


def adaptive_avg_pool(x: Array, out: int) -> Array:
  """torch.nn.AdaptiveAvgPool2d((out, out)) on NHWC."""
  h, w = x.shape[1:3]
  if (h, w) == (out, out):
    return x
  rows = []
  for i in range(out):
    h0, h1 = (i * h) // out, -((-(i + 1) * h) // out)
    cols = []
    for j in range(out):
      w0, w1 = (j * w) // out, -((-(j + 1) * w) // out)
      cols.append(jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)
