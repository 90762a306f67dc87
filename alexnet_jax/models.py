"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) in Flax linen (docs/paper.md),
torchvision's variant 'owt' and tflearn's 'tflearn'. Grouped layers keep
`nn.Conv(feature_group_count=2)`'s kernels; `features` (conv1-pool5) and `head`
(fc6-fc8) are the forward pass that every parallel mode runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax import config_fields
from alexnet_jax import config_lib
from alexnet_jax import ops

Array = jax.Array

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}
INITS = ('paper', 'he', 'tflearn')
LRN_CONVENTIONS = ('paper', 'cuda_convnet')
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One convolutional layer of the table, and what follows its activation."""
  name: str
  features: int
  kernel: int
  stride: int
  padding: int | str  # Zeros on each side, or 'SAME' (TensorFlow's).
  grouped: bool  # True: each tower reads only its own maps.
  bias_one: bool  # Paper init: bias 1 (else 0).
  lrn: bool  # LRN after the activation (where the model has LRN).
  pool: bool  # Max-pooling last.
  pool_first: bool = False  # tflearn: the pooling before the LRN.
  pool_padding: str = 'VALID'  # Or 'SAME' (tflearn).


# The paper's layer table (docs/paper.md); conv3 reads both towers.
_PAPER_CONVS = (
    #        name     maps kernel stride pad grouped bias_one lrn pool
    ConvSpec('conv1', 96, 11, 4, 0, False, False, True, True),
    ConvSpec('conv2', 256, 5, 1, 2, True, True, True, True),
    ConvSpec('conv3', 384, 3, 1, 1, False, False, False, False),
    ConvSpec('conv4', 384, 3, 1, 1, True, True, False, False),
    ConvSpec('conv5', 256, 3, 1, 1, True, True, False, True),
)
# torchvision's AlexNet: other widths, conv1 padded by 2 (at 224 input).
_OWT_CONVS = tuple(
    dataclasses.replace(spec, features=maps,
                        padding=2 if spec.name == 'conv1' else spec.padding)
    for spec, maps in zip(_PAPER_CONVS, (64, 192, 384, 256, 256)))
# tflearn's AlexNet example: 'SAME' convolutions and pooling, LRN
# (TensorFlow's) after pool1, pool2 and pool5.
_TFLEARN_CONVS = tuple(
    dataclasses.replace(spec, padding='SAME', lrn=spec.pool, pool_first=True,
                        pool_padding='SAME')
    for spec in _PAPER_CONVS)
FC_FEATURES = 4096  # fc6 and fc7 neurons at width 1.
OWT_POOL_OUTPUT = 6  # torchvision's AdaptiveAvgPool2d((6, 6)).
DEFAULT_IMAGE_SIZE = {'paper': 227, 'owt': 224, 'tflearn': 227}
# The fields a variant sets where they are None; tflearn's LRN is
# TensorFlow's default (depth_radius 5: an 11-channel window, bias 1).
_LRN = {'lrn_depth': 5, 'lrn_bias': 2.0, 'lrn_alpha': 1e-4, 'lrn_beta': 0.75}
VARIANT_DEFAULTS = {
    'paper': {'groups': 2, 'lrn': True, 'initialization': 'paper', **_LRN},
    'owt': {'groups': 1, 'lrn': False, 'initialization': 'paper', **_LRN},
    'tflearn': {'groups': 1, 'lrn': True, 'initialization': 'tflearn',
                **_LRN, 'lrn_depth': 11, 'lrn_bias': 1.0},
}
_CONVS = {'paper': _PAPER_CONVS, 'owt': _OWT_CONVS, 'tflearn': _TFLEARN_CONVS}
VARIANTS = tuple(_CONVS)
# torchvision drops fc6's and fc7's inputs; the paper and tflearn outputs.
DROPOUT_ON_FC_INPUTS = ('owt',)


def conv_specs(variant: str) -> Sequence[ConvSpec]:
  if variant not in VARIANTS:
    raise ValueError(f'model.variant={variant!r}; expected one of {VARIANTS}.')
  return _CONVS[variant]


def resolve_variant_defaults(variant: str, groups: int | None = None,
                             lrn: bool | None = None) -> dict[str, Any]:
  """groups and lrn as given, or the variant's where None."""
  conv_specs(variant)  # Checks the variant.
  given = {'groups': groups, 'lrn': lrn}
  return {k: VARIANT_DEFAULTS[variant][k] if v is None else v
          for k, v in given.items()}


def scaled_width(channels: int, width: float, groups: int) -> int:
  """`channels * width`, rounded to a positive multiple of `groups`."""
  return max(1, int(round(channels * width / groups))) * groups


def pool_window(overlap: bool) -> tuple[int, int]:
  """(window, stride) of max-pooling: overlapping 3/2 (the paper's) or 2/2."""
  return (3, 2) if overlap else (2, 2)


def layer_sizes(image_size: int, variant: str = 'paper',
                overlap_pool: bool = True) -> list[int]:
  """Spatial size after each convolutional layer and its pooling (or 0)."""
  window, stride = pool_window(overlap_pool)
  sizes, size = [], image_size
  for spec in conv_specs(variant):
    same = spec.padding == 'SAME'  # tflearn: 'SAME' pooling too.
    size = (-(-size // spec.stride) if same else
            (size + 2 * spec.padding - spec.kernel) // spec.stride + 1)
    if spec.pool:
      size = -(-size // stride) if same else (size - window) // stride + 1
    size = max(size, 0)  # No layer's padding makes a map out of nothing.
    sizes.append(size)
  return sizes


def feature_map_size(image_size: int, variant: str = 'paper',
                     overlap_pool: bool = True) -> int:
  """Spatial size after pool5 (0: the image is too small)."""
  return layer_sizes(image_size, variant, overlap_pool)[-1]


def min_image_size(variant: str = 'paper', overlap_pool: bool = True) -> int:
  """The smallest square input the topology admits."""
  return next(size for size in range(1, 1024)
              if feature_map_size(size, variant, overlap_pool))


def image_size_error(image_size: int, variant: str = 'paper',
                     overlap_pool: bool = True) -> str | None:
  """Why `variant` cannot take `image_size` x `image_size` inputs, or None.
  The paper variant takes only sizes 11 + 4k, which conv1 tiles: 227, not the
  paper's printed 224 (docs/paper.md)."""
  smallest = min_image_size(variant, overlap_pool)
  if image_size < smallest:
    return (f'variant={variant!r} with overlap_pool={overlap_pool} needs at '
            f'least {smallest}')
  below = image_size - (image_size - 11) % 4  # conv1: 11x11, stride 4.
  if variant == 'paper' and below != image_size:
    return (f"variant='paper' needs a size conv1 (11x11, stride 4) tiles, "
            f'11 + 4k: 227 is the paper\'s (Caffe\'s) crop; nearest '
            f'{below} or {below + 4}')
  return None


class Params(nn.Module):
  """A layer's float32 'kernel' of `shape` and 'bias', as nn.Conv's/Dense's."""
  shape: tuple[int, ...]
  kernel_init: Callable
  bias_init: Callable

  @nn.compact
  def __call__(self) -> dict[str, Array]:
    kernel = self.param('kernel', self.kernel_init, self.shape, jnp.float32)
    bias = self.param('bias', self.bias_init, self.shape[-1:], jnp.float32)
    return {'kernel': kernel, 'bias': bias}


def conv_layer(model: AlexNet, spec: ConvSpec, params: dict[str, Array],
               x: Array, towers: int) -> Array:
  """One row of the table: the convolution, activation, LRN and pooling.
  `x` holds `towers` towers' maps (1 on a device that holds one tower)."""
  dtype = jnp.dtype(model.dtype)
  x = ops.conv(x, params['kernel'].astype(dtype), params['bias'].astype(dtype),
               stride=spec.stride, padding=spec.padding,
               groups=towers if spec.grouped else 1)
  x = ACTIVATIONS[model.activation](x)
  pool = lambda x: ops.max_pool(x, *pool_window(model.overlap_pool),
                                spec.pool_padding)
  if spec.pool and spec.pool_first:
    x = pool(x)
  if spec.lrn and model.lrn:
    # alpha as the paper prints it, or / n as cuda-convnet and Caffe have it.
    per = model.lrn_depth if model.lrn_convention == 'cuda_convnet' else 1
    x = ops.lrn(x, depth=model.lrn_depth, bias=model.lrn_bias,
                alpha=model.lrn_alpha / per, beta=model.lrn_beta,
                groups=1 if model.lrn_across_towers else towers)
  if spec.pool and not spec.pool_first:
    x = pool(x)
  return x


def features(model: AlexNet, params, x: Array, towers: int | None = None,
             join: Callable[[Array], Array] | None = None) -> Array:
  """pool5 of images `x` in the compute dtype (adaptive-pooled for 'owt').
  `join`: a device holding one tower gathers conv3's input from both."""
  x = x.astype(jnp.dtype(model.dtype))
  for spec in conv_specs(model.variant):
    if spec.name == 'conv3' and join:
      x = join(x)
    x = conv_layer(model, spec, params[spec.name], x,
                   model.groups if towers is None else towers)
  if model.variant == 'owt':
    x = ops.adaptive_avg_pool(x, OWT_POOL_OUTPUT)
  return x


def head(model: AlexNet, params, x: Array,
         dropout: Callable[[Array, int], Array] | None = None,
         gather: Callable[[Array], Array] | None = None,
         reduce: Callable[[Array], Array] | None = None) -> Array:
  """fc6-fc8's float32 logits of pool5 `x`, flattened (H, W, C); `dropout(x,
  j)` drops fc6's (j=0) or fc7's. A device holding a share of the neurons
  `gather`s fc6's for fc7 and `reduce`s fc8's partial products."""
  dtype = jnp.dtype(model.dtype)
  dense = lambda x, p: lax.dot_general(  # As nn.Dense computes it.
      x.astype(dtype), p['kernel'].astype(dtype), (((1,), (0,)), ((), ())))
  bias = lambda p: p['bias'].astype(dtype).reshape(1, -1)
  same = lambda x, *_: x
  drop, gather, reduce = dropout or same, gather or same, reduce or same
  on_inputs = model.variant in DROPOUT_ON_FC_INPUTS
  x = x.reshape((x.shape[0], -1))
  for j, name in enumerate(('fc6', 'fc7')):
    x = gather(x) if j else x
    x = drop(x, j) if on_inputs else x
    x = ACTIVATIONS[model.activation](
        dense(x, params[name]) + bias(params[name]))
    x = x if on_inputs else drop(x, j)
  x = reduce(dense(x, params['fc8'])) + bias(params['fc8'])
  return x.astype(jnp.float32)


def dropout(x: Array, rate: float, key: Array) -> Array:
  """flax.linen.Dropout's formula with the caller's key (drawn per device)."""
  if rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(key, keep, x.shape)
  return lax.select(mask, x / keep, jnp.zeros_like(x))


class AlexNet(nn.Module):
  """`apply(variables, images, train=...)` on normalized float NHWC images;
  with `train=True` and dropout, pass `rngs={'dropout': key}`."""
  num_classes: int = 1000
  variant: str = 'paper'  # 227 input; 'owt' (224) or 'tflearn' (227).
  # Fields defaulting to None take the variant's value (VARIANT_DEFAULTS).
  groups: int | None = None  # 2: two towers (conv2, conv4, conv5); 1: none.
  lrn: bool | None = None  # Local response normalization after conv1, conv2.
  lrn_across_towers: bool = False  # True: LRN windows cross the towers.
  overlap_pool: bool = True  # Max-pool 3/2 (paper) or 2/2.
  dropout_rate: float = 0.5  # On fc6 and fc7.
  activation: str = 'relu'  # 'relu' or 'tanh'.
  width: float = 1.0  # Multiplier on every layer's width.
  dtype: Any = 'float32'  # Compute dtype; parameters stay float32.
  initialization: str | None = None  # 'paper', 'he' or 'tflearn' (_inits).
  # LRN constants (paper: k=2, n=5, alpha=1e-4, beta=0.75).
  lrn_depth: int | None = None  # n: channels in the window.
  lrn_bias: float | None = None  # k
  lrn_alpha: float | None = None
  lrn_beta: float | None = None
  # 'paper': alpha as printed; 'cuda_convnet': alpha / n, as the authors' code.
  lrn_convention: str = 'paper'

  def __post_init__(self):
    # The variant's values, so that the fields read as built.
    for field, value in VARIANT_DEFAULTS.get(self.variant, {}).items():
      if getattr(self, field) is None:
        object.__setattr__(self, field, value)
    super().__post_init__()

  def _inits(self, name: str, bias_one: bool):
    """(kernel, bias) initializers of the layer `name`."""
    init, dense = nn.initializers, name.startswith('fc')
    if self.initialization == 'tflearn':
      # uniform_scaling, U(+-sqrt(3 / fan_in)); truncated_normal(0.02).
      return (init.truncated_normal(0.02) if dense else
              init.variance_scaling(1.0, 'fan_in', 'uniform')), init.zeros
    if self.initialization == 'he':
      # fc8 keeps N(0, 0.01): small first logits do not kill the ReLUs.
      he = init.normal(0.01) if name == 'fc8' else init.he_normal()
      return he, init.zeros
    return init.normal(0.01), init.ones if bias_one else init.zeros  # paper

  def _check(self, x: Array) -> None:
    if x.ndim != 4:
      raise ValueError(f'AlexNet expects NHWC images, got shape {x.shape}.')
    for field, allowed in (('activation', tuple(ACTIVATIONS)),
                           ('groups', (1, 2)), ('initialization', INITS),
                           ('lrn_convention', LRN_CONVENTIONS)):
      if getattr(self, field) not in allowed:
        raise ValueError(f'model.{field}={getattr(self, field)!r}; expected '
                         f'one of {allowed}.')
    for size in sorted(set(x.shape[1:3])):
      error = image_size_error(size, self.variant, self.overlap_pool)
      if error:
        raise ValueError(f'Input images of {x.shape[1]}x{x.shape[2]}: '
                         f'{error}.')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    self._check(x)
    params, channels = {}, x.shape[-1]
    for spec in conv_specs(self.variant):
      maps = scaled_width(spec.features, self.width, self.groups)
      groups = self.groups if spec.grouped else 1
      params[spec.name] = Params(
          (spec.kernel, spec.kernel, channels // groups, maps),
          *self._inits(spec.name, spec.bias_one), name=spec.name)()
      channels = maps
    x = features(self, params, x)
    fc = scaled_width(FC_FEATURES, self.width, 1)
    for name, shape in (('fc6', (math.prod(x.shape[1:]), fc)),
                        ('fc7', (fc, fc)), ('fc8', (fc, self.num_classes))):
      params[name] = Params(shape, *self._inits(name, name != 'fc8'),
                            name=name)()
    drop = nn.Dropout(rate=self.dropout_rate, deterministic=not train)
    return head(self, params, x, dropout=lambda x, j: drop(x))


# config.model's fields.
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(AlexNet)
                     if f.name not in ('parent', 'name'))


def model_from_config(model_config) -> AlexNet:
  """`AlexNet` from config.model, leaving out the execution choices older
  config.json files hold there (config_fields)."""
  fields = {k: v for k, v in model_config.items()
            if config_fields.is_identity(f'model.{k}')}
  unknown = set(fields) - set(MODEL_FIELDS)
  if unknown:
    raise ValueError(f'Unknown config.model fields {sorted(unknown)}; '
                     f'AlexNet takes {MODEL_FIELDS}.')
  return AlexNet(**fields)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def check_config(model_config, image_size: int) -> None:
  """Checks config.model and config.image_size (ConfigError names the field)."""
  c = config_lib.Fields(model_config, 'model')
  one_of = lambda choices: lambda f: c.one_of(f, choices)
  number_in = lambda low, high, **opens: (
      lambda f: c.number_in(f, low, high, **opens))

  def odd_channels(f):
    c.int_at_least(f, 1)
    if c.get(f) % 2 == 0:  # The window is centred on a channel.
      c.fail(f, c.get(f), 'expected an odd number of channels (the paper: 5)')

  required = {  # groups and lrn may be None: the variant's.
      'variant': one_of(VARIANTS), 'groups': one_of((None, 1, 2)),
      'lrn': lambda f: c.get(f) is None or c.boolean(f),
      'overlap_pool': c.boolean,
      'dropout_rate': number_in(0.0, 1.0, high_open=True),
      'activation': one_of(ACTIVATIONS),
      'width': number_in(0.0, 64.0, low_open=True),
      'dtype': one_of(DTYPES), 'num_classes': lambda f: c.int_at_least(f, 2)}
  # Absent or None: the model's default, or the variant's.
  optional = {
      'lrn_across_towers': c.boolean, 'initialization': one_of(INITS),
      'lrn_depth': odd_channels, 'lrn_bias': number_in(0.0, 1e6),
      'lrn_alpha': number_in(0.0, 1e6), 'lrn_beta': number_in(0.0, 1e6),
      'lrn_convention': one_of(LRN_CONVENTIONS)}
  for field, check in {**required, **optional}.items():
    if field in required or model_config.get(field) is not None:
      check(field)
  error = image_size_error(image_size, model_config.variant,
                           model_config.overlap_pool)
  if error:
    config_lib.Fields(None).fail('image_size', image_size, f'model.{error}')
