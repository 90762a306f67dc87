"""A layer's activations for a batch of images: what the network computes
inside, for analysis (nearest neighbours, probes) from a script or notebook.

  feats = features(model, {'params': params}, images, layer='fc7')

`images` are what `model.apply` takes (float NHWC, normalized as in
training: `steps.Normalization`). The layers are the table's: conv1..conv5,
fc6, fc7. Each is taken after its nonlinearity (ReLU or the model's activation),
as Caffe's in-place ReLU leaves its blobs:
* conv1..conv5: the activation's output before the local response
  normalization and the max-pooling that follow conv1, conv2 and conv5,
  [batch, height, width, maps], the two towers' maps side by side (tower 1
  first);
* fc6, fc7: [batch, neurons], in evaluation mode (dropout off). fc7 is the
  last hidden layer, whose Euclidean distances the paper's Figure 4 uses.

The forward pass is the model's own: conv layers run through
`models.conv_layer` up to `layer` (a conv1 read does not compute the rest of
the net); fc6 and fc7 through `models.features` and `models.head`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from alexnet_jax import models

CONV_LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
FC_LAYERS = ('fc6', 'fc7')
LAYERS = CONV_LAYERS + FC_LAYERS


def check_layer(layer: str) -> str:
  if layer not in LAYERS:
    raise ValueError(f'layer={layer!r}; expected one of {LAYERS}.')
  return layer


def features(model: models.AlexNet, variables, images: jax.Array,
             layer: str = 'fc7') -> jax.Array:
  """`layer`'s activations (float32) for `images`; see the module docstring.
  Jit it (`jax.jit(features, static_argnums=(0, 3))`) for speed."""
  check_layer(layer)
  model._check(images)  # pylint: disable=protected-access
  params = variables['params']
  x = images.astype(jnp.dtype(model.dtype))
  if layer in CONV_LAYERS:
    for spec in models.conv_specs(model.variant):
      if spec.name == layer:  # Read after the activation: no LRN, pooling.
        spec = dataclasses.replace(spec, lrn=False, pool=False)
      x = models.conv_layer(model, spec, params[spec.name], x, model.groups)
      if spec.name == layer:
        return x.astype(jnp.float32)
  # fc8 as the identity makes head's logits fc7's activations; fc6's are
  # what head hands fc7 (`gather`). Full float32 matmuls keep the identity
  # exact where the default would round to TF32 (GPUs).
  fc6, width = [], params['fc7']['kernel'].shape[-1]
  identity = {'kernel': jnp.eye(width), 'bias': jnp.zeros(width)}
  with jax.default_matmul_precision('highest'):
    fc7 = models.head(model, {**params, 'fc8': identity},
                      models.features(model, params, x),
                      gather=lambda h: fc6.append(h) or h)
  return fc7 if layer == 'fc7' else fc6[0].astype(jnp.float32)
