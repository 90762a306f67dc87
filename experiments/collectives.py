"""What a training step sends between devices, by parallel mode: from the
layer shapes (`step_collectives`), from a compiled step's HLO
(`hlo_collectives`), and per host (`bytes_sent_per_host`).

The benchmark (experiments/harness.py) reports both figures for each sharded
row; docs/parallelism.md sets them beside the paper's.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import config_lib
from alexnet_jax import models
from alexnet_jax.parallelism import MODEL, param_specs

@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of a step, on one device: `kind` over a group of `group`
  devices, of arrays of `elements` elements of `itemsize` bytes each (the
  full, gathered or reduced, array). `what` says which tensor it carries."""
  kind: str
  elements: int
  itemsize: int
  group: int
  what: str = ''

  @property
  def bytes(self) -> int:
    return self.elements * self.itemsize

  @property
  def sent(self) -> float:
    """Bytes this device sends, by the ring algorithms: an all-reduce is a
    reduce-scatter and an all-gather, each sending (p-1)/p of the array."""
    share = (self.group - 1) / self.group
    factor = {'all-reduce': 2 * share, 'all-gather': share,
              'reduce-scatter': share, 'all-to-all': share,
              'collective-permute': 1.0}[self.kind]
    return factor * self.bytes


def _activation_shapes(model: models.AlexNet, image_size: int):
  """(conv3's input, pool5) HWC shapes of one image, for the whole model."""
  specs = models.conv_specs(model.variant)
  sizes = models.layer_sizes(image_size, model.variant, model.overlap_pool)
  if model.variant == 'owt':
    sizes[4] = models.OWT_POOL_OUTPUT
  channels = lambda i: models.scaled_width(specs[i].features, model.width,
                                           model.groups)
  return (sizes[1], sizes[1], channels(1)), (sizes[4], sizes[4], channels(4))


def step_collectives(model: models.AlexNet, mode: str, image_size: int,
                     global_batch: int, devices: int) -> list[Collective]:
  """The collectives of one training step on each device, from the layer
  shapes (metrics and norms, a few scalars, left out)."""
  m = config_lib.model_axis_size(mode, devices)
  d = devices // m
  group_batch = global_batch // d
  act = jnp.dtype(model.dtype).itemsize
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3))))['params']
  specs = param_specs(params, mode)
  out = []
  if mode != 'data':
    conv3_in, pool5 = _activation_shapes(model, image_size)
    fc = params['fc7']['kernel'].shape[0]
    classes = params['fc8']['kernel'].shape[1]
    gathers = ([('conv3 input', conv3_in)] if mode == 'towers' else []) + [
        ('pool5', pool5), ('fc6 output', (fc,))]
    for what, shape in gathers:  # Forward all-gather, backward its transpose.
      n = group_batch * int(np.prod(shape))
      out.append(Collective('all-gather', n, act, m, what))
      out.append(Collective('reduce-scatter', n, act, m, what + ' gradient'))
    out.append(Collective('all-reduce', group_batch * classes, act, m,
                          'fc8 partial sums'))
    if mode == 'hybrid':  # Each device reads its own images' labels.
      out.append(Collective('all-gather', group_batch, 4, m, 'labels'))
  for layer, leaves in params.items():  # Gradient all-reduces.
    for leaf, shape in leaves.items():
      split = m if MODEL in specs[layer][leaf] else 1
      # Summed over 'data' only where the gradient is local to the device
      # (its slice) or already summed over 'model' (fc8's bias, after the
      # psum of the logits); the replicated convolutions over all devices.
      group = d if split > 1 or layer == 'fc8' else devices
      if group > 1:
        out.append(Collective('all-reduce', int(np.prod(shape.shape)) // split,
                              4, group, f'{layer}/{leaf} gradient'))
  return out


_HLO_LINE = re.compile(
    r'=\s*(\([^=]*?\)|\w+\[[\d,]*\](?:\{[^}]*\})?)\s+'
    r'(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)'
    r'(?:-start)?\(')
_ARRAY = re.compile(r'(\w+)\[([\d,]*)\]')
_ITEMSIZE = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1,
             'f64': 8, 's64': 8, 'u8': 1, 's8': 1}


def _group_size(line: str, devices: int) -> int:
  iota = re.search(r'replica_groups=\[(\d+),(\d+)\]<=', line)
  if iota:
    return int(iota.group(2))
  groups = re.search(r'replica_groups=\{\{([\d,]*)\}', line)
  if groups:
    return len(groups.group(1).split(','))
  pairs = re.search(r'source_target_pairs=', line)
  return 2 if pairs else devices


def hlo_collectives(hlo_text: str, devices: int) -> list[Collective]:
  """The collectives of a compiled program (`compiled.as_text()`): one entry
  per array (a combined all-reduce of a tuple counts each operand), sized as
  the full array (a reduce-scatter's input)."""
  out = []
  for line in hlo_text.splitlines():
    line = re.sub(r'/\*.*?\*/', '', line)  # Tuples' /*index=5*/ comments.
    match = _HLO_LINE.search(line)
    if not match:
      continue
    kind = match.group(2)
    group = _group_size(line, devices)
    for dtype, dims in _ARRAY.findall(match.group(1)):
      elements = int(np.prod([int(x) for x in dims.split(',') if x]))
      if kind == 'reduce-scatter':
        elements *= group
      out.append(Collective(kind, elements, _ITEMSIZE[dtype], group))
  return out


def bytes_sent_per_host(model: models.AlexNet, mode: str, image_size: int,
                        global_batch: int, hosts: int) -> float:
  """Bytes each of `hosts` hosts sends to the others in one training step,
  where a host's devices combine their shares before the hosts exchange
  theirs (hierarchical collectives) and each holds whole tower pairs. Then
  a host acts as one device of data parallelism ('data', and 'towers', whose
  pairs exchange activations within the host and all-reduce every gradient
  across the hosts) or of the hybrid (activations gathered over all hosts)."""
  host_mode = 'data' if mode == 'towers' else mode
  return bytes_sent_per_device(step_collectives(
      model, host_mode, image_size, global_batch, hosts))


def bytes_sent_per_device(collectives, min_bytes: int = 0) -> float:
  """Bytes each device sends in `collectives` (those of at least
  `min_bytes`)."""
  return sum(c.sent for c in collectives if c.bytes >= min_bytes)
