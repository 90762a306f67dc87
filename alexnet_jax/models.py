"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) in Flax linen.

The paper's network has two towers (one per GPU); conv2, conv4 and conv5 only see
the channels of their own tower. Here that is a convolution with
`feature_group_count=2`: the kernel of a grouped layer has shape
(kh, kw, in_channels / 2, out_channels), exactly as `nn.Conv(feature_group_count=2)`
stores it, so checkpoints do not depend on how the convolution is executed.

Every architectural choice the paper's ablations touch is a field: `groups`,
`lrn`, `overlap_pool`, `dropout_rate`, `activation`; `variant='owt'` gives
torchvision's single-tower "one weird trick" layout; `width` scales every layer
for small CPU configurations.
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
LRN_IMPLS = ('matmul', 'reduce_window')
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  features: int
  kernel: int
  stride: int
  padding: int
  grouped: bool  # True: this layer is split into the two towers.
  bias_one: bool  # Paper init: bias 1 (else 0).


# The paper's layer table (SPEC.md); conv3 crosses the towers.
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
_OWT_POOL_OUTPUT = 6  # torchvision's AdaptiveAvgPool2d((6, 6)).
DEFAULT_IMAGE_SIZE = {'paper': 227, 'owt': 224}


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


def local_response_norm(x: Array, depth: int = 5, bias: float = 2.0,
                        alpha: float = 1e-4, beta: float = 0.75,
                        impl: str = 'matmul') -> Array:
  """The paper's local response normalization over the channels of NHWC `x`.

  b[c] = a[c] / (bias + alpha * sum_{c'=max(0, c-depth//2)}^{min(C-1, c+depth//2)}
  a[c']^2) ** beta. Unlike Caffe and PyTorch, alpha is not divided by depth.

  `impl` selects an exact formulation: 'matmul' multiplies the squares by a
  banded 0/1 matrix over channels; 'reduce_window' sums a sliding window.
  """
  half = depth // 2
  channels = x.shape[-1]
  squares = jnp.square(x)
  if impl == 'matmul':
    idx = jnp.arange(channels)
    band = (jnp.abs(idx[:, None] - idx[None, :]) <= half).astype(x.dtype)
    sums = jnp.einsum('...c,cd->...d', squares, band,
                      preferred_element_type=jnp.float32)
  elif impl == 'reduce_window':
    sums = lax.reduce_window(
        squares.astype(jnp.float32), 0.0, lax.add,
        window_dimensions=(1,) * (x.ndim - 1) + (2 * half + 1,),
        window_strides=(1,) * x.ndim,
        padding=((0, 0),) * (x.ndim - 1) + ((half, half),))
  else:
    raise ValueError(f'lrn impl={impl!r}; expected one of {LRN_IMPLS}.')
  scale = bias + alpha * sums
  if beta == 0.75:  # d**-0.75 == rsqrt(d) * rsqrt(sqrt(d)), cheaper than pow.
    inv = lax.rsqrt(scale) * lax.rsqrt(jnp.sqrt(scale))
  else:
    inv = jnp.power(scale, -beta)
  return (x * inv.astype(x.dtype)).astype(x.dtype)


class Conv(nn.Module):
  """A (possibly grouped) 2-D convolution with `nn.Conv`'s parameter layout.

  Parameters are 'kernel' (kh, kw, in_channels // groups, features) and 'bias'
  (features,), as `nn.Conv(feature_group_count=groups)` creates them.
  `impl='xla'` runs XLA's grouped convolution; `impl='split'` runs one
  convolution per group on channel slices and concatenates (the same function).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  groups: int = 1
  impl: str = 'split'
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
    if self.groups == 1:
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
  groups: int = 2  # 2: the paper's two towers (conv2, conv4, conv5); 1: none.
  lrn: bool = True  # Local response normalization after ReLU of conv1, conv2.
  overlap_pool: bool = True  # Max-pool 3/2 (paper) or 2/2.
  dropout_rate: float = 0.5  # On fc6 and fc7.
  activation: str = 'relu'  # 'relu' or 'tanh'.
  width: float = 1.0  # Multiplier on every layer's width.
  dtype: Any = 'float32'  # Compute dtype; parameters stay float32.
  initialization: str = 'paper'  # 'paper': N(0, 0.01), biases 1/0; 'he'.
  conv_impl: str = 'split'  # How grouped convolutions execute (same params).
  lrn_impl: str = 'matmul'  # How LRN is computed (same function).
  # LRN constants (paper: k=2, n=5, alpha=1e-4, beta=0.75).
  lrn_depth: int = 5
  lrn_bias: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75

  def _inits(self, bias_one: bool):
    if self.initialization == 'paper':
      return (nn.initializers.normal(0.01),
              nn.initializers.ones if bias_one else nn.initializers.zeros)
    if self.initialization == 'he':
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
    smallest = min_image_size(self.variant, self.overlap_pool)
    if min(x.shape[1:3]) < smallest:
      raise ValueError(
          f'Input images of {x.shape[1]}x{x.shape[2]} are too small for '
          f'variant={self.variant!r} with overlap_pool={self.overlap_pool}: '
          f'the minimum is {smallest}x{smallest}.')
    dtype = jnp.dtype(self.dtype)
    act = nn.relu if self.activation == 'relu' else jnp.tanh
    window, stride = (3, 2) if self.overlap_pool else (2, 2)
    pool = functools.partial(nn.max_pool, window_shape=(window, window),
                             strides=(stride, stride), padding='VALID')
    lrn = functools.partial(
        local_response_norm, depth=self.lrn_depth, bias=self.lrn_bias,
        alpha=self.lrn_alpha, beta=self.lrn_beta, impl=self.lrn_impl)

    x = x.astype(dtype)
    for i, spec in enumerate(conv_specs(self.variant)):
      kernel_init, bias_init = self._inits(spec.bias_one)
      groups = self.groups if spec.grouped else 1
      x = Conv(features=scaled_width(spec.features, self.width, self.groups),
               kernel_size=spec.kernel, stride=spec.stride,
               padding=spec.padding, groups=groups, impl=self.conv_impl,
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
    kernel_init, bias_init = self._inits(False)
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
