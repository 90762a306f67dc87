"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) in Flax linen.

The paper's network has two towers (one per GPU); conv2, conv4 and conv5 only see
the channels of their own tower. Here that is a grouped convolution: the kernel
of a grouped layer has shape (kh, kw, in_channels / 2, out_channels), exactly as
`nn.Conv(feature_group_count=2)` stores it, so checkpoints do not depend on how
the convolution is executed. Local response normalization stays within each
tower's maps, as each GPU normalized its own (`lrn_across_towers=True`: the
window crosses the towers).

Every architectural choice the paper's ablations touch is a field: `groups`,
`lrn`, `overlap_pool`, `dropout_rate`, `activation`; `variant='owt'` gives
torchvision's single-tower "one weird trick" network (its `groups` and `lrn`
default to torchvision's, 1 and False, as the paper variant's default to 2 and
True); `width` scales every layer for small CPU configurations.

How the operations execute (the same function and parameters either way) is
the one field `execution` (`ops.Execution`); alexnet_jax/ops.py holds the
operations themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax import ops

Array = jax.Array

VARIANTS = ('paper', 'owt')
ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
INITS = ('paper', 'he')
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One convolutional layer of the table, and what follows its activation."""
  name: str
  features: int
  kernel: int
  stride: int
  padding: int
  grouped: bool  # True: each tower reads only its own maps.
  bias_one: bool  # Paper init: bias 1 (else 0).
  lrn: bool  # LRN after the activation (where the model has LRN).
  pool: bool  # Max-pooling last.


# The paper's layer table (docs/paper.md); conv3 reads both towers.
_PAPER_CONVS = (
    #        name     maps kernel stride pad grouped bias_one lrn pool
    ConvSpec('conv1', 96, 11, 4, 0, False, False, True, True),
    ConvSpec('conv2', 256, 5, 1, 2, True, True, True, True),
    ConvSpec('conv3', 384, 3, 1, 1, False, False, False, False),
    ConvSpec('conv4', 384, 3, 1, 1, True, True, False, False),
    ConvSpec('conv5', 256, 3, 1, 1, True, True, False, True),
)
# torchvision's AlexNet ("one weird trick"): other widths, conv1 padded by 2
# (at 224 input).
_OWT_CONVS = tuple(
    dataclasses.replace(spec, features=maps,
                        padding=2 if spec.name == 'conv1' else spec.padding)
    for spec, maps in zip(_PAPER_CONVS, (64, 192, 384, 256, 256)))
FC_FEATURES = 4096  # fc6 and fc7 neurons at width 1.
OWT_POOL_OUTPUT = 6  # torchvision's AdaptiveAvgPool2d((6, 6)).
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


def pool_window(overlap: bool) -> tuple[int, int]:
  """(window, stride) of max-pooling: overlapping 3/2 (the paper's) or 2/2."""
  return (3, 2) if overlap else (2, 2)


def layer_sizes(image_size: int, variant: str = 'paper',
                overlap_pool: bool = True) -> list[int]:
  """Spatial size after each convolutional layer and its pooling (0: the
  image is too small to get there)."""
  window, stride = pool_window(overlap_pool)
  sizes, size = [], image_size
  for spec in conv_specs(variant):
    if size > 0:
      size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
    if size > 0 and spec.pool:
      size = (size - window) // stride + 1 if size >= window else 0
    size = max(size, 0)
    sizes.append(size)
  return sizes


def feature_map_size(image_size: int, variant: str = 'paper',
                     overlap_pool: bool = True) -> int:
  """Spatial size after pool5 (0: the image is too small)."""
  return layer_sizes(image_size, variant, overlap_pool)[-1]


def min_image_size(variant: str = 'paper', overlap_pool: bool = True) -> int:
  """The smallest square input the topology admits."""
  for size in range(1, 1024):
    if feature_map_size(size, variant, overlap_pool) >= 1:
      return size
  raise AssertionError('unreachable')


class ConvParams(nn.Module):
  """A convolution's parameters, as `nn.Conv(feature_group_count=groups)`
  creates them: 'kernel' (k, k, in_channels // groups, features) and 'bias'
  (features,), float32."""
  features: int
  kernel_size: int
  groups: int
  kernel_init: Callable
  bias_init: Callable

  @nn.compact
  def __call__(self, in_channels: int) -> dict[str, Array]:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init,
                        (k, k, in_channels // self.groups, self.features),
                        jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    return {'kernel': kernel, 'bias': bias}


def conv_layer(model: AlexNet, spec: ConvSpec, params: dict[str, Array],
               x: Array, towers: int) -> Array:
  """One row of the layer table on its parameters: the convolution, the
  activation, then the LRN and max-pooling the row calls for.

  `towers`: how many towers' maps `x` holds (`model.groups`, or 1 on a device
  that holds one tower); a grouped row convolves each on its own, and LRN
  normalizes each on its own unless `model.lrn_across_towers`.
  """
  dtype = jnp.dtype(model.dtype)
  x = ops.conv(x, params['kernel'].astype(dtype), params['bias'].astype(dtype),
               stride=spec.stride, padding=spec.padding,
               groups=towers if spec.grouped else 1,
               execution=model.execution, first_layer=spec.name == 'conv1')
  x = ACTIVATIONS[model.activation](x)
  if spec.lrn and model.lrn:
    x = ops.lrn(x, depth=model.lrn_depth, bias=model.lrn_bias,
                alpha=model.lrn_alpha, beta=model.lrn_beta,
                groups=1 if model.lrn_across_towers else towers,
                execution=model.execution)
  if spec.pool:
    x = ops.max_pool(x, *pool_window(model.overlap_pool), model.execution)
  return x


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
  # With groups=2, LRN normalizes each tower's maps on their own, as the
  # paper's GPUs did; True lets the channel window cross the tower boundary.
  lrn_across_towers: bool = False
  overlap_pool: bool = True  # Max-pool 3/2 (paper) or 2/2.
  dropout_rate: float = 0.5  # On fc6 and fc7.
  activation: str = 'relu'  # 'relu' or 'tanh'.
  width: float = 1.0  # Multiplier on every layer's width.
  dtype: Any = 'float32'  # Compute dtype; parameters stay float32.
  initialization: str = 'paper'  # 'paper': N(0, 0.01), biases 1/0; 'he'.
  # LRN constants (paper: k=2, n=5, alpha=1e-4, beta=0.75).
  lrn_depth: int = 5
  lrn_bias: float = 2.0
  lrn_alpha: float = 1e-4
  lrn_beta: float = 0.75
  execution: ops.Execution = ops.Execution()  # How the operations run.

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

  def _check(self, x: Array) -> None:
    if x.ndim != 4:
      raise ValueError(f'AlexNet expects NHWC images, got shape {x.shape}.')
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f'model.activation={self.activation!r}; expected one of '
          f'{tuple(ACTIVATIONS)}.')
    if self.groups not in (1, 2):
      raise ValueError(f'model.groups={self.groups}; expected 1 or 2.')
    smallest = min_image_size(self.variant, self.overlap_pool)
    if min(x.shape[1:3]) < smallest:
      raise ValueError(
          f'Input images of {x.shape[1]}x{x.shape[2]} are too small for '
          f'variant={self.variant!r} with overlap_pool={self.overlap_pool}: '
          f'the minimum is {smallest}x{smallest}.')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    self._check(x)
    dtype = jnp.dtype(self.dtype)
    x = x.astype(dtype)
    for spec in conv_specs(self.variant):  # conv1-conv5, LRN, pooling.
      kernel_init, bias_init = self._inits(spec.bias_one)
      params = ConvParams(
          features=scaled_width(spec.features, self.width, self.groups),
          kernel_size=spec.kernel, groups=self.groups if spec.grouped else 1,
          kernel_init=kernel_init, bias_init=bias_init,
          name=spec.name)(x.shape[-1])
      x = conv_layer(self, spec, params, x, towers=self.groups)
    if self.variant == 'owt':
      x = ops.adaptive_avg_pool(x, OWT_POOL_OUTPUT)
    x = x.reshape((x.shape[0], -1))  # Flattened in (H, W, C) order.

    dropout = nn.Dropout(rate=self.dropout_rate, deterministic=not train)
    fc = scaled_width(FC_FEATURES, self.width, 1)
    for name in ('fc6', 'fc7'):
      kernel_init, bias_init = self._inits(True)
      if self.variant == 'owt':  # torchvision drops the inputs of fc6, fc7.
        x = dropout(x)
      x = nn.Dense(fc, dtype=dtype, param_dtype=jnp.float32,
                   kernel_init=kernel_init, bias_init=bias_init, name=name)(x)
      x = ACTIVATIONS[self.activation](x)
      if self.variant == 'paper':  # The paper drops the outputs of fc6, fc7.
        x = dropout(x)
    kernel_init, bias_init = self._inits(False, output_layer=True)
    x = nn.Dense(self.num_classes, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=kernel_init, bias_init=bias_init, name='fc8')(x)
    return x.astype(jnp.float32)


# config.model's fields (config.execution holds the execution's).
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(AlexNet)
                     if f.name not in ('parent', 'name', 'execution'))
EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(ops.Execution))


def model_from_config(config) -> AlexNet:
  """`AlexNet` from `config.model` (the architecture) and `config.execution`
  (how it runs). The config.json of a run from before config.execution
  existed holds the execution fields in config.model: they are read there."""
  fields = dict(config.model.items())
  execution = {k: fields.pop(k) for k in EXECUTION_FIELDS if k in fields}
  if 'execution' in config:
    execution.update({k: config.execution[k] for k in EXECUTION_FIELDS
                      if k in config.execution})
  unknown = set(fields) - set(MODEL_FIELDS)
  if unknown:
    raise ValueError(f'Unknown config.model fields {sorted(unknown)}; '
                     f'AlexNet takes {MODEL_FIELDS}.')
  return AlexNet(**fields, execution=ops.Execution(**execution))


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
