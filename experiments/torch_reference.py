r"""PyTorch AlexNet and its training-step throughput: the reference to beat.

  python -m experiments.torch_reference --device=cpu --batch_size=32 \
      --dtype=float32 --output=/tmp/torch_cpu.json
  python -m experiments.torch_reference --device=cuda --batch_size=256 \
      --dtype=bfloat16 --compile --output=/tmp/torch_compile.json

The network is the paper's (`alexnet_jax.models.AlexNet` defaults): two towers
as `groups=2` on conv2, conv4 and conv5; `nn.LocalResponseNorm(5, alpha=5e-4,
beta=0.75, k=2.0)` on each tower's maps after the ReLU of conv1 and conv2
(PyTorch divides alpha by n, so this is the paper's alpha 1e-4; the window
stays within a tower, as on the paper's two GPUs); overlapping 3/2
max-pooling; dropout 0.5 on the outputs of fc6 and fc7; 227x227 input.
`--variant=owt` gives torchvision's network (one tower, no LRN, 224 input,
adaptive average pooling, dropout before fc6 and fc7); `--groups` and
`--lrn` override a variant's own values. `--width` scales every layer as `models.scaled_width` does, so small
copies can be checked against the JAX model (tests/test_model_impls.py).

The step is the training loop's: uint8 images normalised on the device,
forward, cross-entropy, backward, momentum SGD with weight decay. Random data
is made once on the device. Images/s is the median over timed windows, each
ended by a device synchronisation. torch is needed only here (and by the tests
that use this file, which skip without it).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch import nn

# The same layer tables as alexnet_jax.models (copied: this file needs torch
# and nothing of the project).
_PAPER_CONVS = ((96, 11, 4, 0, False), (256, 5, 1, 2, True),
                (384, 3, 1, 1, False), (384, 3, 1, 1, True),
                (256, 3, 1, 1, True))
_OWT_CONVS = ((64, 11, 4, 2, False), (192, 5, 1, 2, True),
              (384, 3, 1, 1, False), (256, 3, 1, 1, True),
              (256, 3, 1, 1, True))
_FC = 4096
DEFAULT_IMAGE_SIZE = {'paper': 227, 'owt': 224}
MEAN = (123.68, 116.78, 103.94)


def scaled_width(channels: int, width: float, groups: int) -> int:
  """As alexnet_jax.models.scaled_width."""
  return max(1, int(round(channels * width / groups))) * groups


# As alexnet_jax.models.VARIANT_DEFAULTS (this file does not import JAX).
VARIANT_DEFAULTS = {'paper': {'groups': 2, 'lrn': True},
                    'owt': {'groups': 1, 'lrn': False}}


class TowerLocalResponseNorm(nn.Module):
  """The paper's LRN on each tower's maps: `nn.LocalResponseNorm` (PyTorch
  divides alpha by the size: 5e-4 / 5 is the paper's 1e-4) per channel group."""

  def __init__(self, groups: int):
    super().__init__()
    self.groups = groups
    self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

  def forward(self, x):
    return torch.cat([self.lrn(t) for t in x.chunk(self.groups, dim=1)], 1)


class AlexNet(nn.Module):
  """AlexNet in NCHW, parameter for parameter the JAX model's layout.

  `features` holds conv1..conv5 (named as in JAX), `classifier` fc6..fc8.
  """

  def __init__(self, num_classes: int = 1000, variant: str = 'paper',
               groups: int | None = None, lrn: bool | None = None,
               dropout_rate: float = 0.5, width: float = 1.0,
               image_size: int | None = None):
    super().__init__()
    if variant not in DEFAULT_IMAGE_SIZE:
      raise ValueError(f'variant={variant!r}; expected paper or owt.')
    groups = VARIANT_DEFAULTS[variant]['groups'] if groups is None else groups
    lrn = VARIANT_DEFAULTS[variant]['lrn'] if lrn is None else lrn
    if groups not in (1, 2):
      raise ValueError(f'groups={groups}; expected 1 or 2.')
    self.variant, self.groups, self.lrn = variant, groups, lrn
    specs = _PAPER_CONVS if variant == 'paper' else _OWT_CONVS
    layers = {}
    in_ch = 3
    for i, (feat, k, s, p, grouped) in enumerate(specs):
      out_ch = scaled_width(feat, width, groups)
      layers[f'conv{i + 1}'] = nn.Conv2d(in_ch, out_ch, k, s, p,
                                         groups=groups if grouped else 1)
      layers[f'relu{i + 1}'] = nn.ReLU(inplace=True)
      if i in (0, 1) and lrn:
        layers[f'lrn{i + 1}'] = TowerLocalResponseNorm(groups)
      if i in (0, 1, 4):
        layers[f'pool{i + 1}'] = nn.MaxPool2d(3, 2)
      in_ch = out_ch
    self.features = nn.ModuleDict(layers)
    if variant == 'owt':
      self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
      spatial = 6
    else:
      self.avgpool = nn.Identity()
      spatial = _feature_map_size(image_size or DEFAULT_IMAGE_SIZE[variant])
    fc = scaled_width(_FC, width, 1)
    drop = lambda: nn.Dropout(dropout_rate)
    if variant == 'paper':  # Dropout on the outputs of fc6 and fc7.
      cls = [('fc6', nn.Linear(in_ch * spatial * spatial, fc)),
             ('relu6', nn.ReLU(inplace=True)), ('drop6', drop()),
             ('fc7', nn.Linear(fc, fc)), ('relu7', nn.ReLU(inplace=True)),
             ('drop7', drop()), ('fc8', nn.Linear(fc, num_classes))]
    else:  # torchvision: dropout on the inputs of fc6 and fc7.
      cls = [('drop6', drop()),
             ('fc6', nn.Linear(in_ch * spatial * spatial, fc)),
             ('relu6', nn.ReLU(inplace=True)), ('drop7', drop()),
             ('fc7', nn.Linear(fc, fc)), ('relu7', nn.ReLU(inplace=True)),
             ('fc8', nn.Linear(fc, num_classes))]
    self.classifier = nn.ModuleDict(dict(cls))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for layer in self.features.values():
      x = layer(x)
    x = torch.flatten(self.avgpool(x), 1)  # (C, H, W) order.
    for layer in self.classifier.values():
      x = layer(x)
    return x


def _feature_map_size(size: int) -> int:
  """Spatial size after pool5, paper layout (models.feature_map_size)."""
  pool = lambda n: (n - 3) // 2 + 1
  for i, (_, k, s, p, _) in enumerate(_PAPER_CONVS):
    size = (size + 2 * p - k) // s + 1
    if i in (0, 1, 4):
      size = pool(size)
  if size < 1:
    raise ValueError('The image is too small for the paper layout (min 67).')
  return size


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def _sync(device: torch.device) -> None:
  if device.type == 'cuda':
    torch.cuda.synchronize(device)


class TrainStep:
  """One training step of the reference net on random device data.

  `run(n)` runs n steps and waits for the device; `info` describes the setup.
  """

  def __init__(self, device: str = 'cpu', batch_size: int = 32,
               dtype: str = 'float32', compile: bool = False,
               image_size: int | None = None, num_classes: int = 1000,
               variant: str = 'paper', groups: int | None = None,
               lrn: bool | None = None,
               width: float = 1.0, channels_last: bool = True,
               tf32: bool = True, threads: int = 0,
               compile_mode: str | None = None):
    if dtype not in ('float32', 'bfloat16'):
      raise ValueError(f'dtype={dtype!r}; expected float32 or bfloat16.')
    if device not in ('cpu', 'cuda'):
      raise ValueError(f'device={device!r}; expected cpu or cuda.')
    if device == 'cuda' and not torch.cuda.is_available():
      raise ValueError('device=cuda but torch sees no CUDA device.')
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size}; expected >= 1.')
    if threads > 0:
      torch.set_num_threads(threads)
    if device == 'cuda':
      torch.backends.cuda.matmul.allow_tf32 = tf32
      torch.backends.cudnn.allow_tf32 = tf32
      torch.backends.cudnn.benchmark = True
    self.device = dev = torch.device(device)
    size = image_size or DEFAULT_IMAGE_SIZE[variant]
    torch.manual_seed(0)
    model = AlexNet(num_classes, variant, groups, lrn, 0.5, width, size).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.model = model = model.to(memory_format=fmt)
    self.fmt = fmt
    self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                               weight_decay=5e-4)
    self.loss_fn = nn.CrossEntropyLoss()
    self.mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    self.images = torch.randint(0, 256, (batch_size, 3, size, size),
                                dtype=torch.uint8,
                                device=dev).contiguous(memory_format=fmt)
    self.labels = torch.randint(0, num_classes, (batch_size,), device=dev)
    self.forward = (torch.compile(model, mode=compile_mode) if compile
                    else model)
    self.autocast = dict(device_type=device, dtype=torch.bfloat16,
                         enabled=dtype == 'bfloat16')
    self.batch_size = batch_size
    self.loss = None
    name = (torch.cuda.get_device_name(dev) if device == 'cuda'
            else platform.processor() or platform.machine())
    self.info = {
        'framework': 'torch', 'torch_version': torch.__version__,
        'device': device, 'device_name': name,
        'threads': torch.get_num_threads(), 'variant': variant,
        'groups': model.groups, 'lrn': model.lrn, 'width': width,
        'image_size': size,
        'num_classes': num_classes, 'batch_size': batch_size, 'dtype': dtype,
        'compile': compile, 'compile_mode': compile_mode,
        'channels_last': channels_last,
        'tf32': tf32 if device == 'cuda' else None,
        'params': count_params(model),
    }

  def _step(self):
    x = (self.images.float() - self.mean).contiguous(memory_format=self.fmt)
    with torch.autocast(**self.autocast):
      loss = self.loss_fn(self.forward(x), self.labels)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss

  def run(self, steps: int) -> float:
    """Runs `steps` steps, waits for the device; returns the seconds taken."""
    t0 = time.perf_counter()
    for _ in range(steps):
      self.loss = self._step()
    _sync(self.device)
    return time.perf_counter() - t0

  def check_finite(self) -> None:
    if self.loss is not None and not torch.isfinite(self.loss).item():
      raise RuntimeError(
          f'Non-finite loss {self.loss.item()} in the benchmark.')


def benchmark(steps: int = 10, windows: int = 5, warmup: int = 3,
              **kwargs) -> dict:
  """Times the training step (kwargs: TrainStep's); returns a JSON-able dict."""
  step = TrainStep(**kwargs)
  first_step_s = step.run(1)  # Includes torch.compile's compilation.
  step.run(max(0, warmup - 1))
  rates = [steps * step.batch_size / step.run(steps) for _ in range(windows)]
  step.check_finite()
  rate = statistics.median(rates)
  return {**step.info, 'steps_per_window': steps, 'windows': windows,
          'first_step_s': first_step_s, 'images_per_sec': rate,
          'images_per_sec_windows': rates,
          'step_ms': 1000 * step.batch_size / rate}


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--compile', action=argparse.BooleanOptionalAction,
                 default=False, help='torch.compile the model.')
  p.add_argument('--compile_mode', default=None,
                 help="torch.compile mode, e.g. 'max-autotune' (default: "
                      'none).')
  p.add_argument('--steps', type=int, default=10, help='Steps per window.')
  p.add_argument('--windows', type=int, default=5)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--image_size', type=int, default=None,
                 help='Default: 227 (paper) or 224 (owt).')
  p.add_argument('--num_classes', type=int, default=1000)
  p.add_argument('--variant', default='paper', choices=('paper', 'owt'))
  p.add_argument('--groups', type=int, default=None, choices=(1, 2),
                 help="Default: the variant's (paper 2, owt 1).")
  p.add_argument('--lrn', action=argparse.BooleanOptionalAction, default=None,
                 help="Default: the variant's (paper on, owt off).")
  p.add_argument('--width', type=float, default=1.0)
  p.add_argument('--channels_last', action=argparse.BooleanOptionalAction,
                 default=True)
  p.add_argument('--tf32', action=argparse.BooleanOptionalAction, default=True,
                 help='CUDA fp32 convs and matmuls in TF32 (as JAX does by '
                      'default).')
  p.add_argument('--threads', type=int, default=0,
                 help='torch.set_num_threads (0: leave the default).')
  p.add_argument('--output', default=None,
                 help='Write the result as JSON here.')
  return p.parse_args(argv)


def main(argv=None):
  args = vars(_parse(argv))
  output = args.pop('output')
  result = benchmark(**args)
  line = (f"torch {result['torch_version']} {result['device']} "
          f"{result['dtype']}{' compile' if result['compile'] else ''} "
          f"batch {result['batch_size']}: {result['images_per_sec']:.1f} img/s "
          f"({result['step_ms']:.1f} ms/step; first step "
          f"{result['first_step_s']:.1f} s)")
  print(line)
  if output:
    with open(output, 'w') as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == '__main__':
  main(sys.argv[1:])
