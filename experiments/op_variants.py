"""Other forms of the model's operations, for the benchmark: each computes
the same function as the library's with the same parameters
(tests/test_model_impls.py checks outputs and gradients of each against an
independent reference); docs/performance.md gives their measured speed.

`swapped(names)` replaces the library functions the model calls
(`alexnet_jax.ops.convolve`, `channel_window_sum`, `valid_max_pool`) while a
step is traced and compiled: jit traces at call time, so a step compiled
inside the `with` block keeps the forms it was compiled with.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from alexnet_jax import ops

Array = jax.Array


def feature_group_conv(x: Array, kernel: Array, *, stride: int, pads,
                       groups: int) -> Array:
  """XLA's grouped convolution (`feature_group_count`), as `nn.Conv`'s."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                  dimension_numbers=ops.NHWC,
                                  feature_group_count=groups)


def space_to_depth_conv(x: Array, kernel: Array, stride: int,
                        padding: int | tuple[tuple[int, int], ...]) -> Array:
  """A strided convolution of `x` by `kernel` as a stride-1 convolution on
  blocks.

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
                                  padding='VALID', dimension_numbers=ops.NHWC)


def strided_as_space_to_depth(x, kernel, *, stride, pads, groups,
                              otherwise: Callable) -> Array:
  """conv1 (AlexNet's one strided convolution) by `space_to_depth_conv`;
  every other convolution by `otherwise`."""
  if stride == 1:
    return otherwise(x, kernel, stride=stride, pads=pads, groups=groups)
  return space_to_depth_conv(x, kernel, stride, pads)


def matmul_window_sum(v: Array, depth: int, dtype) -> Array:
  """LRN's channel-window sums as a product with a banded 0/1 matrix, its
  operands in the compute dtype (bf16 feeds the matrix units), accumulated
  in float32."""
  channels = v.shape[-1]
  idx = jnp.arange(channels)
  band = (jnp.abs(idx[:, None] - idx[None, :]) <= depth // 2).astype(dtype)
  return jnp.einsum('...c,cd->...d', v.astype(dtype), band,
                    preferred_element_type=jnp.float32)


def reduce_window_sum(v: Array, depth: int, dtype) -> Array:
  """LRN's channel-window sums by XLA's reduce_window, in float32."""
  del dtype
  half = depth // 2
  return lax.reduce_window(
      v, 0.0, lax.add, window_dimensions=(1,) * (v.ndim - 1) + (depth,),
      window_strides=(1,) * v.ndim,
      padding=((0, 0),) * (v.ndim - 1) + ((half, half),))


def reduce_window_max_pool(x: Array, window: int, stride: int) -> Array:
  """`nn.max_pool`: XLA's reduce_window, its gradient a select_and_scatter."""
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding='VALID')


_replace = lambda f: lambda previous: f
# Each name: the `ops` functions it replaces, each with a function of the
# one it replaces (space-to-depth keeps that one for the other layers).
SWAPS: dict[str, tuple[tuple[str, Callable], ...]] = {
    'conv_xla': (('convolve', _replace(feature_group_conv)),),
    'lrn_banded': (('channel_window_sum', _replace(reduce_window_sum)),),
    'lrn_matmul': (('channel_window_sum', _replace(matmul_window_sum)),),
    'pool_reduce_window': (('valid_max_pool',
                            _replace(reduce_window_max_pool)),),
    's2d': (('convolve', lambda previous: functools.partial(
        strided_as_space_to_depth, otherwise=previous)),),
}


@contextlib.contextmanager
def swapped(names: Sequence[str]) -> Iterator[None]:
  """The `SWAPS` of `names`, in order, in alexnet_jax.ops for the duration.
  JAX's caches are cleared on entering and leaving, so no step traced with
  other forms is reused."""
  unknown = [n for n in names if n not in SWAPS]
  if unknown:
    raise ValueError(f'op variants {unknown}: expected names of '
                     f'{tuple(SWAPS)}.')
  saved = {}
  try:
    for name in names:
      for attr, make in SWAPS[name]:
        saved.setdefault(attr, getattr(ops, attr))
        setattr(ops, attr, make(getattr(ops, attr)))
    jax.clear_caches()
    yield
  finally:
    for attr, original in saved.items():
      setattr(ops, attr, original)
    jax.clear_caches()
