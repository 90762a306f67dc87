"""A layer's activations for a batch of images, for analysis (nearest
neighbours, probes) from a script or notebook:

  feats = features(model, {'params': params}, images, layer='fc7')
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from alexnet_jax import models
from alexnet_jax import ops

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7')
LAYERS = CONV_LAYERS + FC_LAYERS


def features(model: models.AlexNet, variables, images: jax.Array,
             layer: str = 'fc7') -> jax.Array:
  """`layer`'s activations (float32) after its nonlinearity, as Caffe's
  in-place ReLU leaves its blobs: conv1..conv5 before the LRN and pooling,
  [batch, height, width, maps] (tower 1's maps first); fc6, fc7 (the paper's
  Figure 4 layer) [batch, neurons], without dropout. `images` are normalized
  as in training (`steps.Normalization`). Only the layers up to `layer` run,
  on the model's own parameters; jit with static_argnums=(0, 3)."""
  if layer not in LAYERS:
    raise ValueError(f'layer={layer!r}; expected one of {LAYERS}.')
  model._check(images)  # pylint: disable=protected-access
  params = variables['params']
  dtype = jnp.dtype(model.dtype)
  x = images.astype(dtype)
  for spec in models.conv_specs(model.variant):
    if spec.name == layer:  # Stop after the activation.
      spec = dataclasses.replace(spec, lrn=False, pool=False)
    x = models.conv_layer(model, spec, params[spec.name], x, model.groups)
    if spec.name == layer:
      return x.astype(jnp.float32)
  if model.variant == 'owt':
    x = ops.adaptive_avg_pool(x, models.OWT_POOL_OUTPUT)
  x = x.reshape((x.shape[0], -1))  # (H, W, C) order, as the model flattens.
  for name in FC_LAYERS:  # Dropout is off in evaluation: not applied.
    kernel = params[name]['kernel']
    dense = nn.Dense(kernel.shape[-1], dtype=dtype, param_dtype=jnp.float32)
    x = models.ACTIVATIONS[model.activation](
        dense.apply({'params': params[name]}, x))
    if name == layer:
      return x.astype(jnp.float32)
  raise AssertionError('unreachable')
