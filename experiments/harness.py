"""The benchmark's rows: a named variant's config, its compiled training step,
the PyTorch reference, the matmul ceiling, and round-robin timed windows.

A variant is a name, the config fields it changes, in dotted form, and the
forms of the operations it swaps in (experiments/op_variants.py) while its
step compiles (`VARIANTS`); the fields are nested dicts of the model's, the
execution's and the parallelism's; the training step's options are the
harness's own (`OPTIONS`). No ml_collections (nor TensorFlow) is needed: the harness runs
on a machine with JAX, Flax and optax alone.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import parallelism
from alexnet_jax import placement
from alexnet_jax import startup
from alexnet_jax import steps
from . import collectives
from . import common
from . import flops as flops_lib
from . import op_variants

# Every variant: name -> config overrides (dotted field -> value), on top of
# the training config's defaults, and under 'ops' the forms of the operations
# it swaps in (experiments/op_variants.py's SWAPS names, applied in order).
# A row's variant is one name or several joined by '+', applied in order.
VARIANTS: dict[str, dict[str, Any]] = {
    'default': {},
    # The straightforward Flax net: grouped convolutions by
    # feature_group_count, banded LRN and pooling by reduce_window.
    'flax_baseline': {'ops': ('conv_xla', 'lrn_banded', 'pool_reduce_window')},
    **{name: {'ops': (name,)} for name in op_variants.SWAPS},
    'cpuconv_xla': {'execution.xla_cpu_conv_library': 'xla_default'},
    # Not the paper's net (other parameters): reference points.
    'one_tower': {'model.groups': 1},
    'no_lrn': {'model.lrn': False},
    'owt': {'model.variant': 'owt'},  # One tower, no LRN: the variant's.
    # The same net, split over devices as config.parallelism says.
    'towers': {'parallelism': 'towers'},
    'hybrid': {'parallelism': 'hybrid'},
}
IMAGENET_MEAN = (123.68, 116.78, 103.94)  # configs/default.py's, 0-255.


# The training step's options: the paper's rule at a constant rate 0.01.
OPTIONS = steps.TrainOptions(
    seed=0, normalization=steps.Normalization(IMAGENET_MEAN, (1.0, 1.0, 1.0)),
    learning_rate=lambda step: 0.01, log_every_steps=100)


def base_config(image_size: int, width: float, num_classes: int,
                dtype: str) -> dict[str, Any]:
  """The fields of a training config that the model and the mode read."""
  model = {f.name: f.default for f in dataclasses.fields(models.AlexNet)
           if f.name in models.MODEL_FIELDS}
  model.update(num_classes=num_classes, width=width, dtype=dtype)
  execution = {'xla_cpu_conv_library': 'eigen'}  # configs/default.py's.
  return {'model': model, 'execution': execution, 'parallelism': 'data',
          'image_size': image_size}


def variant_overrides(variant: str) -> dict[str, Any]:
  """The overrides of 'name' or 'name+name...' (later names win; their 'ops'
  add up, in order)."""
  overrides, forms = {}, ()
  for name in variant.split('+'):
    if name not in VARIANTS:
      raise ValueError(f'variant {variant!r}: {name!r} is not one of '
                       f'{tuple(VARIANTS)}.')
    overrides.update(VARIANTS[name])
    forms += VARIANTS[name].get('ops', ())
  return dict(overrides, ops=forms) if forms else overrides


def variant_config(spec: Mapping[str, Any]):
  """The config of one row: the base, then its variant's overrides."""
  config = base_config(spec['image_size'], spec['width'],
                       spec['num_classes'], spec['dtype'])
  overrides = variant_overrides(spec['variant'])
  overrides.pop('ops', None)
  config = common.with_overrides(config, overrides,
                                f'variant {spec["variant"]!r}')
  if not config['image_size']:  # 227 for the paper's net, 224 for owt.
    config['image_size'] = models.DEFAULT_IMAGE_SIZE[
        config['model']['variant']]
  return config


def build_model(config) -> models.AlexNet:
  return models.AlexNet(**config['model'])


def random_batch(devices: Sequence[jax.Device], per_device: int, size: int,
                 num_classes: int) -> dict[str, jax.Array]:
  """Random uint8 images and labels, generated on each device."""

  def make(key):
    k1, k2 = jax.random.split(key)
    images = jax.random.randint(k1, (per_device, size, size, 3), 0, 256)
    labels = jax.random.randint(k2, (per_device,), 0, num_classes)
    return {'image': images.astype(jnp.uint8), 'label': labels}

  keys = jax.random.split(jax.random.key(0), len(devices))
  return jax.pmap(make, devices=devices)(keys)


def local_devices(count: int | str) -> list[jax.Device]:
  local = jax.local_devices()
  n = len(local) if count == 'all' else int(count)
  if not 1 <= n <= len(local):
    raise ValueError(f'devices={count}: this machine has {len(local)} local '
                     'devices.')
  return local[:n]


class JaxRow:
  """One variant: the training loop's own step, compiled with the loop's XLA
  options, on the state and a batch placed as the loop places them."""

  def __init__(self, spec: Mapping[str, Any]):
    config = variant_config(spec)
    devices = local_devices(spec['devices'])
    self.model = model = build_model(config)
    tx = optim.create_optimizer({'rule': 'paper', 'learning_rate': 0.01,
                                 'momentum': 0.9, 'weight_decay': 5e-4})
    size, mode = config['image_size'], config['parallelism']
    self.batch_size = n_batch = spec['batch_per_device']
    self.name, self.dtype = spec['variant'], spec['dtype']
    state = steps.create_train_state(model, tx, size, OPTIONS.seed)
    batch = random_batch(devices, n_batch, size, model.num_classes)
    if mode == 'data':
      step, _ = steps.make_pmapped_steps(model, tx, OPTIONS, devices=devices)
      state = placement.replicate(state, devices)
    else:
      step, _, put = parallelism.make_sharded_steps(
          model, tx, OPTIONS, mode, size, devices=devices)
      batch, state = put(batch), jax.device_put(state, step.shardings)
    # The training loop's XLA options (startup.compiler_options's).
    library = config['execution']['xla_cpu_conv_library']
    options = (dict(startup.XLA_CPU_CONV_LIBRARIES[library])
               if jax.default_backend() == 'cpu' else {})
    start = time.perf_counter()
    with op_variants.swapped(variant_overrides(self.name).get('ops', ())):
      self.step = step.lower(state, batch).compile(options or None)
    self.state, self.batch, self.metrics = state, batch, None
    self.run(1)  # The first call: loads and places everything.
    self.info = dict(
        spec, framework='jax', devices=len(devices),
        global_batch=len(devices) * n_batch, image_size=size,
        overrides=variant_overrides(spec['variant']), xla_options=options,
        parallelism=mode,
        params=models.count_params(state.params),
        compile_s=time.perf_counter() - start,
        xla_memory_bytes=_memory_bytes(self.step),
        train_gflop_per_image=flops_lib.model_flops_of(
            model, size) / 1e9)
    if mode != 'data':
      self.info.update(communication(model, mode, size, len(devices),
                                     n_batch, self.step.as_text()))

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.state, self.metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, self.metrics))
    return time.perf_counter() - start

  def finish(self) -> dict[str, Any]:
    loss = np.asarray(self.metrics['train_loss'])
    self.state = self.batch = self.step = None
    return {'loss_finite': bool(np.isfinite(loss).all())}


def _memory_bytes(compiled) -> int | None:
  """XLA's estimate for the compiled step: arguments + outputs + temporaries,
  per device."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes + m.temp_size_in_bytes)


def communication(model, mode: str, size: int, n: int, per_device: int,
                  hlo_text: str) -> dict[str, Any]:
  """Bytes each device sends per training step: from the layer shapes, and
  from the compiled step's collectives (scalars and one-device groups, which
  move nothing that matters, left out)."""
  want = collectives.step_collectives(model, mode, size, n * per_device, n)
  hlo = [c for c in collectives.hlo_collectives(hlo_text, n)
         if c.elements > 1 and c.group > 1]
  return {'bytes_sent_per_device': collectives.bytes_sent_per_device(want),
          'hlo_bytes_sent_per_device': collectives.bytes_sent_per_device(hlo),
          'hlo_collectives': len(hlo)}


class TorchRow:
  """The PyTorch reference (experiments/torch_reference.py) in this process."""

  def __init__(self, spec: Mapping[str, Any], compile: bool,
               device: str, channels_last: bool):
    # pylint: disable-next=g-import-not-at-top
    from . import torch_reference
    self.name = 'torch compile' if compile else 'torch eager'
    self.dtype, self.batch_size = spec['dtype'], spec['batch_per_device']
    self.step = torch_reference.TrainStep(
        device=device, batch_size=self.batch_size, dtype=self.dtype,
        compile=compile, image_size=spec['image_size'] or None,
        num_classes=spec['num_classes'], width=spec['width'],
        channels_last=channels_last)
    self.info = {**spec, **self.step.info, 'variant': self.name,
                 'compile_s': self.step.run(1),
                 'train_gflop_per_image': _torch_gflop(spec)}

  def run(self, steps: int) -> float:
    return self.step.run(steps)

  def finish(self) -> dict[str, Any]:
    loss = self.step.loss
    return {'loss_finite': loss is None or bool(np.isfinite(loss.item()))}


def _torch_gflop(spec: Mapping[str, Any]) -> float:
  """The reference is the paper's net (two towers, LRN)."""
  return flops_lib.model_flops(image_size=spec['image_size'],
                               width=spec['width'],
                               num_classes=spec['num_classes']) / 1e9


def torch_in_child(spec: Mapping[str, Any], compile: bool, device: str,
                   channels_last: bool, timing: Mapping[str, int],
                   scratch: str, timeout: float | None) -> dict | None:
  """The reference timed in a child process (its own CUDA context and
  threads); None when it fails or runs out of time."""
  out = os.path.join(scratch, f'torch_{spec["dtype"]}_{int(compile)}.json')
  cmd = [sys.executable, '-m', f'{__package__}.torch_reference',
         f'--device={device}', f'--batch_size={spec["batch_per_device"]}',
         f'--dtype={spec["dtype"]}', f'--steps={timing["steps"]}',
         f'--windows={timing["windows"]}', f'--warmup={timing["warmup"]}',
         f'--image_size={spec["image_size"]}',
         f'--num_classes={spec["num_classes"]}', f'--width={spec["width"]}',
         '--compile' if compile else '--no-compile',
         '--channels_last' if channels_last else '--no-channels_last',
         f'--output={out}']
  print('+', ' '.join(cmd), file=sys.stderr, flush=True)
  try:
    proc = subprocess.run(cmd, check=False, timeout=timeout)
  except subprocess.TimeoutExpired:
    print('torch reference timed out; row left out.', file=sys.stderr)
    return None
  if proc.returncode:
    print(f'torch reference failed (exit {proc.returncode}); row left out.',
          file=sys.stderr)
    return None
  with open(out) as f:
    result = json.load(f)
  batch = spec['batch_per_device']
  return dict(
      {**spec, **result}, variant='torch compile' if compile else 'torch eager',
      compile_s=result['first_step_s'],
      train_gflop_per_image=_torch_gflop(spec),
      images_per_sec_per_device=result['images_per_sec'],
      step_ms_windows=[1e3 * batch / r
                       for r in result['images_per_sec_windows']],
      loss_finite=True)  # The child fails on a non-finite loss.


def matmul_ceiling(dtype: str, n: int, repeats: int = 5) -> float:
  """FLOP/s of an n x n x n matmul on the default device (best of repeats:
  a ceiling, so the fastest run counts)."""
  key = jax.random.key(0)
  a = jax.random.normal(key, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.fold_in(key, 1), (n, n),
                        jnp.float32).astype(dtype)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - start)
  return 2.0 * n ** 3 / min(times)


def time_round_robin(rows: Sequence[Any], warmup: int, windows: int,
                     steps: int, pause: float = 0.0,
                     out_of_time: Callable[[], bool] = lambda: False,
                     profile_dir: str | None = None) -> list[dict[str, Any]]:
  """Times every row's windows in turn (a change in the machine's load hits
  every row alike); the row's figure is the median window. CPU time is this
  process's (every framework's threads are in it): less sensitive than wall
  time to other processes, but it counts spinning threads."""
  for row in rows:  # Past first-run effects (autotuning, caches).
    row.run(warmup)
  walls = [[] for _ in rows]
  cpus = [[] for _ in rows]
  for w in range(windows):
    if w and out_of_time():
      print(f'out of time after {w} windows', file=sys.stderr)
      break
    for row, wall, cpu in zip(rows, walls, cpus):
      time.sleep(pause)
      cpu0 = time.process_time()
      wall.append(row.run(steps) / steps)
      cpu.append((time.process_time() - cpu0) / steps)
  results = []
  for row, wall, cpu in zip(rows, walls, cpus):
    if profile_dir and isinstance(row, JaxRow):  # After the timing.
      with jax.profiler.trace(os.path.join(profile_dir, row.name)):
        row.run(steps)
    median = statistics.median(wall)
    results.append(dict(
        row.info, **row.finish(), step_ms=1e3 * median,
        step_ms_windows=[1e3 * t for t in wall],
        images_per_sec_per_device=row.batch_size / median,
        images_per_sec=row.info.get('devices', 1) * row.batch_size / median,
        process_cpu_ms_per_step=1e3 * statistics.median(cpu)))
  gc.collect()
  jax.clear_caches()
  return results
