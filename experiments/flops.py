"""Model FLOPs per image, from the layer table of `alexnet_jax.models`.

Imports JAX and the model only (no TensorFlow, no ml_collections), so the
benchmark can count FLOPs on a machine with JAX alone.
"""

from __future__ import annotations

import dataclasses

from alexnet_jax import models
from alexnet_jax import ops


@dataclasses.dataclass(frozen=True)
class LayerCost:
  name: str
  macs: int  # Multiply-adds per image, every kernel tap (the usual count).
  valid_macs: int  # Only taps on the input, not on padding (XLA's count).


def _conv_taps(size: int, kernel: int, stride: int,
               padding: int | str) -> tuple[int, int]:
  """(output side, kernel taps per row of outputs that land on the input)."""
  before, after = (ops.same_pads(size, kernel, stride) if padding == 'SAME'
                   else (padding, padding))
  out = (size + before + after - kernel) // stride + 1
  valid = 0
  for o in range(out):
    start = o * stride - before
    valid += min(kernel, size - start) - max(0, -start)
  return out, valid


def _pool_size(size: int, overlap: bool, padding: str = 'VALID') -> int:
  window, stride = models.pool_window(overlap)
  if padding == 'SAME':
    return -(-size // stride)
  return (size - window) // stride + 1


def layer_costs(variant: str = 'paper', image_size: int = 227,
                width: float = 1.0, groups: int = 2, overlap_pool: bool = True,
                num_classes: int = 1000) -> list[LayerCost]:
  """Multiply-adds of conv1..conv5 and fc6..fc8 for one image.

  Only convolutions and dense layers count (biases, ReLU, LRN, pooling and
  dropout are a fraction of a percent of the paper net's 724.4 M MAC).
  """
  if models.feature_map_size(image_size, variant, overlap_pool) < 1:
    raise ValueError(
        f'image_size={image_size} is too small for variant={variant!r} with '
        f'overlap_pool={overlap_pool} (minimum '
        f'{models.min_image_size(variant, overlap_pool)}).')
  costs = []
  size, channels = image_size, 3
  for spec in models.conv_specs(variant):
    features = models.scaled_width(spec.features, width, groups)
    in_per_group = channels // (groups if spec.grouped else 1)
    out, valid = _conv_taps(size, spec.kernel, spec.stride, spec.padding)
    costs.append(LayerCost(
        spec.name,
        macs=out * out * spec.kernel ** 2 * in_per_group * features,
        valid_macs=valid * valid * in_per_group * features))
    size, channels = out, features
    if spec.pool:
      size = _pool_size(size, overlap_pool, spec.pool_padding)
  if variant == 'owt':
    size = models.OWT_POOL_OUTPUT
  fc = models.scaled_width(models.FC_FEATURES, width, 1)
  for name, n_in, n_out in (('fc6', size * size * channels, fc),
                            ('fc7', fc, fc), ('fc8', fc, num_classes)):
    costs.append(LayerCost(name, n_in * n_out, n_in * n_out))
  return costs


def model_flops(variant: str = 'paper', image_size: int = 227,
                width: float = 1.0, groups: int = 2, overlap_pool: bool = True,
                num_classes: int = 1000, train: bool = True,
                count_padding: bool = True) -> float:
  """FLOPs per image: 2 per multiply-add; a training step is the forward pass,
  the weight gradients and the input gradients of every layer but conv1
  (3x forward less conv1's input gradient: 4.14 GFLOP for the paper net)."""
  costs = layer_costs(variant, image_size, width, groups, overlap_pool,
                      num_classes)
  macs = [c.macs if count_padding else c.valid_macs for c in costs]
  forward = 2.0 * sum(macs)
  return 3.0 * forward - 2.0 * macs[0] if train else forward


def model_flops_of(model: models.AlexNet, image_size: int,
                   train: bool = True) -> float:
  """`model_flops` for an `AlexNet` module's fields."""
  return model_flops(model.variant, image_size, model.width, model.groups,
                     model.overlap_pool, model.num_classes, train=train)
