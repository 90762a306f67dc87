"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) in Flax linen.

The paper's network has two towers (one per GPU); conv2, conv4 and conv5 only see
the channels of their own tower. Here that is a convolution with
`feature_group_count=2`: the kernel of a grouped layer has shape
(kh, kw, in_channels / 2, out_channels), exactly as `nn.Conv(feature_group_count=2)`
stores it, so checkpoints do not depend on how the convolution is executed.
Local response normalization stays within each tower's maps, as each GPU
normalized its own (`lrn_across_towers=True`: the window crosses the towers).

Every architectural choice the paper's ablations touch is a field: `groups`,
`lrn`, `overlap_pool`, `dropout_rate`, `activation`; `variant='owt'` gives
torchvision's single-tower "one weird trick" network (its `groups` and `lrn`
default to torchvision's, 1 and False, as the paper variant's default to 2 and
True); `width` scales every layer for small CPU configurations.

The implementation fields `conv_impl`, `conv1_impl`, `lrn_impl` and `pool_impl`
choose between exact formulations of the same function with the same
parameters; docs/performance.md gives their measured speed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

Array = jax.Array

VARIANTS = ('paper', 'owt')
ACTIVATIONS = ('relu', 'tanh')
INITS = ('paper', 'he')
CONV_IMPLS = ('split', 'xla')
CONV1_IMPLS = ('direct', 'space_to_depth')
LRN_IMPLS = ('matmul', 'reduce_window', 'shift')
POOL_IMPLS = ('reduce_window', 'slices')
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  features: int
  kernel: int
  stride: int
  padding: int
  grouped: bool  # True: this layer is split into the two towers.
  bias_one: bool  # Paper init: bias 1 (else 0).


# The paper's layer table (docs/paper.md); conv3 crosses the towers.
_PAPER_CONVS = (
    ConvSpec(96, 11, 4, 0, False, False),
    ConvSpec(256, 5, 1, 2, True, True),
    ConvSpec(384, 3, 1, 1, False, False),
    ConvSpec(384, 3, 1, 1, True, True),
    ConvSpec(256, 3, 1, 1, True, True),
)
# torchvision's AlexNet ("one weird trick"): conv1 padded by 2 at 224 input.
_OWT_CONVS = (
    ConvSpec(64, 11, 4, 2, False, False),
    ConvSpec(192, 5, 1, 2, True, True),
    ConvSpec(384, 3, 1, 1, False, False),
    ConvSpec(256, 3, 1, 1, True, True),
    ConvSpec(256, 3, 1, 1, True, True),
)
_FC_FEATURES = 4096
FC_FEATURES = _FC_FEATURES  # fc6 and fc7 neurons at width 1.
_OWT_POOL_OUTPUT = 6  # torchvision's AdaptiveAvgPool2d((6, 6)).
DEFAULT_IMAGE_SIZE = {'paper': 227, 'owt': 224}
# What a variant means for the fields left None: the paper's two towers with
# LRN; torchvision's single tower without LRN.
VARIANT_DEFAULTS = {
    'paper': {'groups': 2, 'lrn': True},
    'owt': {'groups': 1, 'lrn': False},
}


def resolve_variant_defaults(variant: str, groups: int | None = None,
                             lrn: bool | None = None) -> dict[str, Any]:
  """{'groups': ..., 'lrn': ...}: the values given, else the variant's."""
  if variant not in VARIANTS:
    raise ValueError(f'model.variant={variant!r}; expected one of {VARIANTS}.')
  given = {'groups': groups, 'lrn': lrn}
  return {k: VARIANT_DEFAULTS[variant][k] if v is None else v
          for k, v in given.items()}


def conv_specs(variant: str) -> Sequence[ConvSpec]:
  if variant not in VARIANTS:
    raise ValueError(f'model.variant={variant!r}; expected one of {VARIANTS}.')
  return _PAPER_CONVS if variant == 'paper' else _OWT_CONVS


def scaled_width(channels: int, width: float, groups: int) -> int:
  """`channels * width`, rounded to a positive multiple of `groups`."""
  return max(1, int(round(channels * width / groups))) * groups


def _pool_out(size: int, overlap: bool) -> int:
  window, stride = (3, 2) if overlap else (2, 2)
  return (size - window) // stride + 1 if size >= window else 0


def feature_map_size(image_size: int, variant: str = 'paper',
                     overlap_pool: bool = True) -> int:
  """Spatial size after pool5 (0 or less: the image is too small)."""
  convs = conv_specs(variant)
  size = image_size
  for i, spec in enumerate(convs):
    size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
    if size <= 0:
      return 0
    if i in (0, 1, 4):
      size = _pool_out(size, overlap_pool)
      if size <= 0:
        return 0
  return size


def min_image_size(variant: str = 'paper', overlap_pool: bool = True) -> int:
  """The smallest square input the topology admits."""
  for size in range(1, 1024):
    if feature_map_size(size, variant, overlap_pool) >= 1:
      return size
  raise AssertionError('unreachable')


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
  if impl == 'shift':
    padded = jnp.pad(v, ((0, 0),) * (v.ndim - 1) + ((half, half),))
    sums = padded[..., :channels]
    for offset in range(1, 2 * half + 1):
      sums = sums + padded[..., offset:offset + channels]
    return sums
  raise ValueError(f'lrn impl={impl!r}; expected one of {LRN_IMPLS}.')


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


def local_response_norm(x: Array, depth: int = 5, bias: float = 2.0,
                        alpha: float = 1e-4, beta: float = 0.75,
                        impl: str = 'shift', groups: int = 1) -> Array:
  """The paper's local response normalization over the channels of NHWC `x`.

  b[c] = a[c] / (bias + alpha * sum_{c'=max(0, c-depth//2)}^{min(C-1, c+depth//2)}
  a[c']^2) ** beta. Unlike Caffe and PyTorch, alpha is not divided by depth.
  `groups`: the channels are cut into this many equal blocks and each is
  normalized on its own (the window stops at a block's edge), as the paper's
  two GPUs each normalized their own maps (cuda-convnet's rnorm1a/rnorm1b).

  `impl` selects how the sum over the channel window is taken, in the
  forward pass and in the gradient (written out analytically, one more window
  sum): 'matmul' multiplies by a banded 0/1 matrix over channels;
  'reduce_window' slides a window; 'shift' adds `depth` shifted copies of the
  zero-padded input, a purely elementwise form. All are exact; sums are
  accumulated in float32.
  """
  if impl not in LRN_IMPLS:
    raise ValueError(f'lrn impl={impl!r}; expected one of {LRN_IMPLS}.')
  channels = x.shape[-1]
  if groups < 1 or channels % groups:
    raise ValueError(f'local_response_norm: {channels} channels are not '
                     f'divisible by groups={groups}.')
  # Every impl sums over the last axis only: (..., C) -> (..., groups, C/groups)
  # keeps each window inside its block.
  y = _lrn(x.reshape(x.shape[:-1] + (groups, channels // groups)), depth,
           float(bias), float(alpha), float(beta), impl)
  return y.reshape(x.shape)


def space_to_depth_conv(x: Array, kernel: Array, stride: int,
                        padding: int) -> Array:
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
  blocks = -(-k // s)  # Kernel extent in blocks.
  out_h = (h + 2 * padding - k) // s + 1
  out_w = (w + 2 * padding - k) // s + 1
  need_h, need_w = s * (out_h + blocks - 1), s * (out_w + blocks - 1)
  # Pads (or crops rows no output reads) to whole blocks.
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (padding, need_h - h - padding, 0),
               (padding, need_w - w - padding, 0), (0, 0, 0)))
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
             impl: str = 'slices') -> Array:
  """VALID max-pooling of NHWC `x` (window x window, stride x stride).

  'reduce_window' is `nn.max_pool` (XLA's reduce_window; its gradient is a
  select_and_scatter). 'slices' takes the maximum of the window's
  `window**2` strided slices, an elementwise form that fuses with the ReLU
  and LRN before it, with a custom gradient equal to select_and_scatter's
  (the first maximum of each window takes its gradient). Its output passes
  through `lax.optimization_barrier`, so it is computed once and stored:
  otherwise XLA re-fuses the nine slices (and the ReLU and LRN before them)
  into each consumer, such as the transposes of the next convolution's weight
  gradient on the CPU (docs/performance.md: about 3% of the CPU step).
  """
  if impl == 'reduce_window':
    return nn.max_pool(x, (window, window), strides=(stride, stride),
                       padding='VALID')
  if impl == 'slices':
    return lax.optimization_barrier(_max_pool_slices(x, window, stride))
  raise ValueError(f'pool impl={impl!r}; expected one of {POOL_IMPLS}.')


class Conv(nn.Module):
  """A (possibly grouped) 2-D convolution with `nn.Conv`'s parameter layout.

  Parameters are 'kernel' (kh, kw, in_channels // groups, features) and 'bias'
  (features,), as `nn.Conv(feature_group_count=groups)` creates them.
  `impl='xla'` runs XLA's grouped convolution; `impl='split'` runs one
  convolution per group on channel slices and concatenates (the same function).
  `space_to_depth=True` runs a strided ungrouped convolution as
  `space_to_depth_conv` (the same function).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  impl: str = 'split'
  space_to_depth: bool = False
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_channels = x.shape[-1]
    if in_channels % self.groups or self.features % self.groups:
      raise ValueError(
          f'{self.name}: {in_channels} input and {self.features} output channels '
          f'must both be divisible by groups={self.groups}.')
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, in_channels // self.groups, self.features),
                        jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    conv = functools.partial(
        lax.conv_general_dilated,
        window_strides=(self.stride, self.stride),
        padding=((self.padding, self.padding),) * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.space_to_depth:
      if self.groups != 1:
        raise ValueError(f'{self.name}: space_to_depth needs groups=1, got '
                         f'groups={self.groups}.')
      y = space_to_depth_conv(x, kernel, self.stride, self.padding)
    elif self.groups == 1:
      y = conv(x, kernel)
    elif self.impl == 'xla':
      y = conv(x, kernel, feature_group_count=self.groups)
    elif self.impl == 'split':
      xs = jnp.split(x, self.groups, axis=-1)
      ks = jnp.split(kernel, self.groups, axis=-1)
      y = jnp.concatenate([conv(xi, ki) for xi, ki in zip(xs, ks)], axis=-1)
    else:
      raise ValueError(f'conv impl={self.impl!r}; expected one of {CONV_IMPLS}.')
    return y + bias


def _adaptive_avg_pool(x: Array, out: int) -> Array:
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


class AlexNet(nn.Module):
  """AlexNet; call as `apply(variables, images_nhwc, train=bool, rngs=...)`.

  Images are float NHWC, already normalised. With `train=True` and
  `dropout_rate > 0`, pass `rngs={'dropout': key}`.
  """
  num_classes: int = 1000
  variant: str = 'paper'  # 'paper' (two towers, 227 input) or 'owt' (224).
  # groups and lrn: None takes the variant's value (VARIANT_DEFAULTS).
  groups: int | None = None  # 2: two towers (conv2, conv4, conv5); 1: none.
  lrn: bool | None = None  # Local response normalization after conv1, conv2.
  overlap_pool: bool = True  # Max-pool 3/2 (paper) or 2/2.
  dropout_rate: float = 0.5  # On fc6 and fc7.
  activation: str = 'relu'  # 'relu' or 'tanh'.
  width: float = 1.0  # Multiplier on every layer's width.
  dtype: Any = 'float32'  # Compute dtype; parameters stay float32.
  initialization: str = 'paper'  # 'paper': N(0, 0.01), biases 1/0; 'he'.
  conv_impl: str = 'split'  # How grouped convolutions execute (same params).
  conv1_impl: str = 'direct'  # conv1 as is, or 'space_to_depth' (same params).
  lrn_impl: str = 'shift'  # How LRN's channel sums run (same function).
  # With groups=2, LRN normalizes each tower's maps on their own, as the
  # paper's GPUs did; True lets the channel window cross the tower boundary.
  lrn_across_towers: bool = False
  pool_impl: str = 'slices'  # How max-pooling runs (same function).
  # LRN constants (paper: k=2, n=5, alpha=1e-4, beta=0.75).
  lrn_depth: int = 5
  lrn_bias: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75

  def __post_init__(self):
    # Resolved once, here, so `model.groups` and `model.lrn` read as built.
    if self.variant in VARIANTS:
      for field, value in resolve_variant_defaults(
          self.variant, self.groups, self.lrn).items():
        object.__setattr__(self, field, value)
    super().__post_init__()

  def _inits(self, bias_one: bool, output_layer: bool = False):
    if self.initialization == 'paper':
      return (nn.initializers.normal(0.01),
              nn.initializers.ones if bias_one else nn.initializers.zeros)
    if self.initialization == 'he':
      # He-normal hidden layers; the classifier keeps the paper's N(0, 0.01),
      # so initial logits are small and the first updates do not kill ReLUs.
      if output_layer:
        return nn.initializers.normal(0.01), nn.initializers.zeros
      return nn.initializers.he_normal(), nn.initializers.zeros
    raise ValueError(f'model.initialization={self.initialization!r}; '
                     f'expected one of {INITS}.')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    if x.ndim != 4:
      raise ValueError(f'AlexNet expects NHWC images, got shape {x.shape}.')
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f'model.activation={self.activation!r}; expected one of {ACTIVATIONS}.')
    if self.groups not in (1, 2):
      raise ValueError(f'model.groups={self.groups}; expected 1 or 2.')
    if self.conv1_impl not in CONV1_IMPLS:
      raise ValueError(f'model.conv1_impl={self.conv1_impl!r}; expected one of '
                       f'{CONV1_IMPLS}.')
    smallest = min_image_size(self.variant, self.overlap_pool)
    if min(x.shape[1:3]) < smallest:
      raise ValueError(
          f'Input images of {x.shape[1]}x{x.shape[2]} are too small for '
          f'variant={self.variant!r} with overlap_pool={self.overlap_pool}: '
          f'the minimum is {smallest}x{smallest}.')
    dtype = jnp.dtype(self.dtype)
    act = nn.relu if self.activation == 'relu' else jnp.tanh
    if self.pool_impl not in POOL_IMPLS:
      raise ValueError(f'model.pool_impl={self.pool_impl!r}; expected one of '
                       f'{POOL_IMPLS}.')
    window, stride = (3, 2) if self.overlap_pool else (2, 2)
    pool = functools.partial(max_pool, window=window, stride=stride,
                             impl=self.pool_impl)
    lrn = functools.partial(
        local_response_norm, depth=self.lrn_depth, bias=self.lrn_bias,
        alpha=self.lrn_alpha, beta=self.lrn_beta, impl=self.lrn_impl,
        groups=1 if self.lrn_across_towers else self.groups)

    x = x.astype(dtype)
    for i, spec in enumerate(conv_specs(self.variant)):
      kernel_init, bias_init = self._inits(spec.bias_one)
      groups = self.groups if spec.grouped else 1
      x = Conv(features=scaled_width(spec.features, self.width, self.groups),
               kernel_size=spec.kernel, stride=spec.stride,
               padding=spec.padding, groups=groups, impl=self.conv_impl,
               space_to_depth=i == 0 and self.conv1_impl == 'space_to_depth',
               dtype=dtype, kernel_init=kernel_init, bias_init=bias_init,
               name=f'conv{i + 1}')(x)
      x = act(x)
      if i in (0, 1):
        if self.lrn:
          x = lrn(x)
        x = pool(x)
      elif i == 4:
        x = pool(x)

    if self.variant == 'owt':
      x = _adaptive_avg_pool(x, _OWT_POOL_OUTPUT)
    x = x.reshape((x.shape[0], -1))  # Flattened in (H, W, C) order.

    dropout = nn.Dropout(rate=self.dropout_rate, deterministic=not train)
    fc = scaled_width(_FC_FEATURES, self.width, 1)
    for name in ('fc6', 'fc7'):
      kernel_init, bias_init = self._inits(True)
      if self.variant == 'owt':  # torchvision drops the inputs of fc6, fc7.
        x = dropout(x)
      x = nn.Dense(fc, dtype=dtype, param_dtype=jnp.float32,
                   kernel_init=kernel_init, bias_init=bias_init, name=name)(x)
      x = act(x)
      if self.variant == 'paper':  # The paper drops the outputs of fc6, fc7.
        x = dropout(x)
    kernel_init, bias_init = self._inits(False, output_layer=True)
    x = nn.Dense(self.num_classes, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=kernel_init, bias_init=bias_init, name='fc8')(x)
    return x.astype(jnp.float32)


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(AlexNet)
                     if f.name not in ('parent', 'name'))


def model_from_config(model_config) -> AlexNet:
  """Builds `AlexNet` from `config.model` (an ml_collections ConfigDict)."""
  unknown = set(model_config.keys()) - set(MODEL_FIELDS)
  if unknown:
    raise ValueError(f'Unknown config.model fields {sorted(unknown)}; '
                     f'AlexNet takes {MODEL_FIELDS}.')
  return AlexNet(**dict(model_config.items()))


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
