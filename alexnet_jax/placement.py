"""Where the loop's arrays live: the state replicated over the local devices,
batches sharded over them ahead of the step."""

from __future__ import annotations

import collections
from typing import Callable, Iterator

import jax
import numpy as np


def _local_sharding(spec: jax.sharding.PartitionSpec,
                    devices=None) -> jax.sharding.Sharding:
  devices = jax.local_devices() if devices is None else devices
  mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  return jax.sharding.NamedSharding(mesh, spec)


def replicate(tree, devices=None):
  """`tree` replicated over `devices` (default: the local ones) as the pmapped
  step returns its state, so the step compiles once."""
  return jax.device_put(
      tree, _local_sharding(jax.sharding.PartitionSpec(), devices))


def prefetch_to_device(batches: Iterator[dict], size: int = 2,
                       put: Callable[[dict], dict] | None = None
                       ) -> Iterator[dict]:
  """Puts the next `size` batches on the devices ahead of the step (with
  `put`, where the step wants another layout than one shard per device)."""
  sharding = _local_sharding(jax.sharding.PartitionSpec('batch'))
  put = put or (lambda batch: jax.tree_util.tree_map(
      lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, sharding),
      batch))
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  yield from queue
