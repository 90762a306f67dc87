r"""Weight interchange with PyTorch, and `.npz` files of converted parameters.

  python -m alexnet_jax.tools.convert --variant=owt --input=alexnet.pth \
      --output=params.npz

torch is imported only for .pth files (README: Using a trained model).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from typing import Any, Callable, Mapping

import numpy as np

from alexnet_jax import models
from . import checkpoint_params

CONVS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
DENSES = ('fc6', 'fc7', 'fc8')
LAYERS = CONVS + DENSES

# Our layer name -> the PyTorch module holding its weight and bias. Both
# layouts are torchvision's `features` and `classifier`; 'paper' adds grouped
# conv2/4/5 and `torch_lrn` after the ReLU of conv1 and conv2.
TORCH_LAYOUTS = {
    variant: dict(zip(LAYERS, [f'features.{i}' for i in convs] +
                      [f'classifier.{i}' for i in (1, 4, 6)]))
    for variant, convs in (('owt', (0, 3, 6, 8, 10)),
                           ('paper', (0, 4, 8, 10, 12)))}
# The model fields each PyTorch layout stands for (groups is only a default:
# a paper-layout net without towers converts with groups=1).
DEFAULT_GROUPS = {v: d['groups'] for v, d in models.VARIANT_DEFAULTS.items()}
LAYOUT_LRN = {v: d['lrn'] for v, d in models.VARIANT_DEFAULTS.items()}


class ConversionError(ValueError):
  """The weights do not fit the named layout."""


def _check_variant(variant: str) -> None:
  if variant not in TORCH_LAYOUTS:
    raise ConversionError(f'variant={variant!r}; expected one of '
                          f'{tuple(TORCH_LAYOUTS)}.')


def check_model_config(model_config) -> None:
  """Raises unless `model_config.lrn` is its variant's layout's: the module
  indices depend on the LRN layers between the convolutions."""
  variant = model_config.variant
  _check_variant(variant)
  lrn = model_config.lrn
  if lrn is not None and lrn != LAYOUT_LRN[variant]:  # None: the variant's.
    raise ConversionError(
        f'config.model.lrn={lrn!r}, but the PyTorch layout of '
        f'variant={variant!r} has lrn={LAYOUT_LRN[variant]} (its module '
        f'indices are those of {TORCH_LAYOUTS[variant]}).')


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch.Tensor, without importing torch.
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def _torch_keys(variant: str) -> set[str]:
  return {f'{module}.{leaf}' for module in TORCH_LAYOUTS[variant].values()
          for leaf in ('weight', 'bias')}


def _pool5_shape(fc6_inputs: int, channels: int, pool5_shape,
                 name: str) -> tuple[int, int]:
  side = math.isqrt(fc6_inputs // channels)
  h, w = pool5_shape or (side, side)
  if not fc6_inputs or h * w * channels != fc6_inputs:
    raise ConversionError(f'{name} has {fc6_inputs} inputs, ' + (
        f'which is not {channels} conv5 channels times a square pool5 map; '
        f'pass pool5_shape=(h, w).' if pool5_shape is None else
        f'but pool5_shape={pool5_shape} with {channels} conv5 channels '
        f'gives {h * w * channels}.'))
  return h, w


def _flax_layers(get: Callable[[str], tuple[Any, Any]], variant: str,
                 groups: int | None, key: Callable[[str, str], str],
                 pool5_shape, from_torch: bool) -> dict:
  """Each layer's {'kernel', 'bias'} (float32 NumPy) from `get(name)`:
  (weight, bias), PyTorch's OIHW / (out, in) if `from_torch`. Checks that the
  shapes chain, then reorders fc6's rows between PyTorch's (C, H, W) flatten
  of pool5 and our (H, W, C). Errors name `key(layer, leaf)`."""
  flax = {}
  for name in LAYERS:
    weight, bias = map(_to_numpy, get(name))
    for value, leaf, ndim in ((weight, 'kernel', 4 if name in CONVS else 2),
                              (bias, 'bias', 1)):
      if value.ndim != ndim:
        raise ConversionError(f'{key(name, leaf)}: expected a {ndim}-D '
                              f'array, got shape {value.shape}.')
    if from_torch:  # OIHW -> HWIO, (out, in) -> (in, out).
      weight = weight.transpose(2, 3, 1, 0) if name in CONVS else weight.T
    flax[name] = {'kernel': weight, 'bias': bias}
  groups = DEFAULT_GROUPS[variant] if groups is None else groups
  if groups not in (1, 2):
    raise ConversionError(f'groups={groups!r}; expected 1 or 2.')
  for name, layer in flax.items():
    out, bias = layer['kernel'].shape[-1], layer['bias']
    if bias.shape != (out,):
      raise ConversionError(
          f'{key(name, "bias")}: shape {bias.shape}, expected ({out},) to '
          f'match {key(name, "kernel")}.')
  shape = lambda k: ((k.transpose(3, 2, 0, 1) if k.ndim == 4 else k.T).shape
                     if from_torch else k.shape)
  channels = 3
  for name, spec in zip(CONVS, models.conv_specs(variant)):
    kernel, k = flax[name]['kernel'], spec.kernel
    g = groups if spec.grouped else 1
    want_in = channels // g if channels % g == 0 else None
    if kernel.shape[:3] != (k, k, want_in):
      raise ConversionError(
          f'{key(name, "kernel")}: shape {shape(kernel)} does '
          f'not fit {name} of variant={variant!r}: expected a {k}x{k} kernel '
          f'over {channels} input channels in {g} group(s).')
    channels = kernel.shape[3]
    if channels % g:
      raise ConversionError(
          f'{key(name, "kernel")}: {channels} output channels are not '
          f'divisible by groups={g}.')
  fc6 = flax['fc6']['kernel']
  h, w = _pool5_shape(fc6.shape[0], channels, pool5_shape,
                      key('fc6', 'kernel'))
  inputs = channels * h * w
  for name in DENSES:
    kernel = flax[name]['kernel']
    if kernel.shape[0] != inputs:
      raise ConversionError(
          f'{key(name, "kernel")}: shape {shape(kernel)} does '
          f'not fit: {name} must take {inputs} inputs.')
    inputs = kernel.shape[1]
  c, out = channels, fc6.shape[1]
  fc6 = (fc6.reshape(c, h, w, out).transpose(1, 2, 0, 3) if from_torch else
         fc6.reshape(h, w, c, out).transpose(2, 0, 1, 3))
  flax['fc6']['kernel'] = fc6.reshape(-1, out)
  return flax


def torch_to_flax(state_dict: Mapping[str, Any], variant: str, *,
                  groups: int | None = None,
                  pool5_shape: tuple[int, int] | None = None) -> dict:
  """A PyTorch state_dict (NumPy or torch arrays; `nn.DataParallel`'s
  'module.' prefix removed) of layout `variant` -> Flax params. `groups`
  defaults to the variant's, `pool5_shape` to the square fc6 implies."""
  _check_variant(variant)
  sd = {k.removeprefix('module.'): v for k, v in state_dict.items()}
  expected = _torch_keys(variant)
  missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
  if missing or unexpected:
    other = [v for v in TORCH_LAYOUTS if _torch_keys(v) == set(sd)]
    hint = f' These keys are the {other[0]!r} layout.' if other else ''
    raise ConversionError(
        f'The state_dict does not have the {variant!r} layout: missing keys '
        f'{missing}, unexpected keys {unexpected}.{hint}')
  module = TORCH_LAYOUTS[variant]
  key = lambda name, leaf: (
      f'{module[name]}.{"weight" if leaf == "kernel" else "bias"}')
  flax = _flax_layers(lambda name: (sd[key(name, 'kernel')],
                                    sd[key(name, 'bias')]),
                      variant, groups, key, pool5_shape, from_torch=True)
  return {name: {leaf: np.ascontiguousarray(v) for leaf, v in layer.items()}
          for name, layer in flax.items()}


def flax_to_torch(params: Mapping[str, Any], variant: str, *,
                  groups: int | None = None,
                  pool5_shape: tuple[int, int] | None = None
                  ) -> dict[str, np.ndarray]:
  """Flax params (or {'params': params}) -> a state_dict of NumPy arrays in
  PyTorch layout `variant`; arguments as in `torch_to_flax`."""
  _check_variant(variant)
  if set(params) == {'params'}:
    params = params['params']
  missing = sorted(set(LAYERS) - set(params))
  unexpected = sorted(set(params) - set(LAYERS))
  if missing or unexpected:
    raise ConversionError(f'The params are not AlexNet\'s: missing layers '
                          f'{missing}, unexpected layers {unexpected}.')
  for name in LAYERS:
    if set(params[name]) != {'kernel', 'bias'}:
      raise ConversionError(f'{name}: has {sorted(params[name])}, expected '
                            f"['bias', 'kernel'].")
  flax = _flax_layers(lambda name: (params[name]['kernel'],
                                    params[name]['bias']),
                      variant, groups, lambda name, leaf: f'{name}/{leaf}',
                      pool5_shape, from_torch=False)
  state_dict = {}
  for name, module in TORCH_LAYOUTS[variant].items():
    kernel = flax[name]['kernel']
    weight = kernel.transpose(3, 2, 0, 1) if name in CONVS else kernel.T
    state_dict[f'{module}.weight'] = np.ascontiguousarray(weight)
    state_dict[f'{module}.bias'] = np.ascontiguousarray(flax[name]['bias'])
  return state_dict


def save_npz(params: Mapping[str, Any], path: str) -> None:
  """Writes params as an `.npz` with keys 'conv1/kernel', ..."""
  flat = {f'{name}/{leaf}': _to_numpy(value)
          for name, layer in params.items() for leaf, value in layer.items()}
  with open(path, 'wb') as f:
    np.savez(f, **flat)


def load_npz(path: str) -> dict:
  """Reads params written by `save_npz` (checked to be AlexNet's layers)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: np.asarray(data[k]) for k in data.files}
  except (OSError, ValueError) as e:
    raise ConversionError(
        f'Cannot read {path!r} as an .npz file: {e}') from None
  keys = [f'{name}/{leaf}' for name in LAYERS for leaf in ('kernel', 'bias')]
  for k in flat:
    if k not in keys:
      raise ConversionError(
          f'{path}: unexpected entry {k!r}; expected '
          f"'<layer>/kernel' and '<layer>/bias' for {LAYERS}.")
  missing = sorted(set(keys) - set(flat))
  if missing:
    raise ConversionError(f'{path}: missing entries {missing}.')
  return {name: {leaf: flat[f'{name}/{leaf}'] for leaf in ('kernel', 'bias')}
          for name in LAYERS}


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConversionError(
        'Reading or writing a PyTorch .pth file needs torch (pip install '
        'torch); .npz files do not.') from None
  return torch


def torch_lrn(groups: int = 2):
  """The 'paper' layout's LRN: `nn.LocalResponseNorm` (its alpha is ours
  times n: 5e-4) on each tower's channels; `torch_lrn(1)` spans both."""
  torch = _torch()

  class TowerLocalResponseNorm(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.lrn = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    def forward(self, x):
      return torch.cat([self.lrn(t) for t in x.chunk(groups, dim=1)], dim=1)

  return TowerLocalResponseNorm()


def _not_a_state_dict(path: str, error: Exception) -> str:
  """One line for a file torch.load(weights_only=True) refuses, without
  torch's advice to pass weights_only=False (that runs pickled code)."""
  text = str(error)
  unsafe = re.search(r'Unsupported global: GLOBAL ([\w.]+)', text)
  if unsafe:
    why = (f'it holds a pickled Python object ({unsafe.group(1)}), which is '
           f'not loaded')
  elif 'Weights only load failed' in text:
    why = 'it holds more than tensors and plain containers, which is not loaded'
  else:
    why = f'{type(error).__name__}: {(text.splitlines() or [""])[0][:120]}'
  return (f'{path!r} is not a PyTorch state_dict (a file of tensors by name, '
          f'as torch.save(model.state_dict()) writes): {why}.')


# Keys under which checkpoints of PyTorch training scripts keep the model's
# state_dict beside other things (optimizer, epoch).
STATE_DICT_KEYS = ('state_dict', 'model_state_dict', 'model')
OUTPUT_SUFFIXES = ('.npz', '.pth', '.pt')


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state_dict from a `.pth` file, or one wrapped under STATE_DICT_KEYS."""
  torch = _torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(_not_a_state_dict(path, e)) from None
  if isinstance(obj, Mapping):
    # Training scripts save {'model': state_dict, 'optimizer': ..., ...}.
    obj = next((obj[k] for k in STATE_DICT_KEYS
                if isinstance(obj.get(k), Mapping)), obj)
  if not isinstance(obj, Mapping):
    raise ConversionError(f'{path!r} holds a {type(obj).__name__}, not a '
                          f'state_dict.')
  not_tensors = {k: type(v).__name__ for k, v in obj.items()
                 if not hasattr(v, 'detach')}
  if not_tensors:
    shown = ', '.join(f'{k!r} ({t})' for k, t in list(not_tensors.items())[:5])
    raise ConversionError(
        f'{path!r} is not a state_dict (tensors by name): it holds {shown}; a '
        f'state_dict maps names to tensors (also accepted: one wrapped under '
        f'{" or ".join(map(repr, STATE_DICT_KEYS))}).')
  return {k: _to_numpy(v) for k, v in obj.items()}


def _check_output(dst: str) -> None:
  """Refuses an --output that cannot be written, before converting."""
  if not dst.endswith(OUTPUT_SUFFIXES):
    raise ConversionError(f'--output={dst!r}: expected a name ending in '
                          f'{" or ".join(OUTPUT_SUFFIXES)}.')
  parent = os.path.dirname(os.path.abspath(dst))
  try:
    with tempfile.NamedTemporaryFile(dir=parent, prefix='.convert_test'):
      pass
  except OSError as e:
    raise ConversionError(f'--output={dst!r} cannot be written: '
                          f'{e.strerror or e} ({parent}).') from None


def convert_file(src: str, dst: str, variant: str) -> dict:
  """Converts `src` (.pth, .npz, or an orbax checkpoint or workdir) to `dst`
  (.npz or .pth in the PyTorch layout `variant`); returns the Flax params."""
  _check_variant(variant)
  _check_output(dst)
  if os.path.isdir(src):
    params, _ = checkpoint_params.restore_orbax_params(src)
  elif src.endswith('.npz'):
    params = load_npz(src)
  elif os.path.exists(src):
    params = torch_to_flax(load_torch_state_dict(src), variant)
  else:
    raise ConversionError(f'--input={src!r} does not exist.')
  if dst.endswith('.npz'):
    save_npz(params, dst)
  else:
    torch = _torch()
    torch.save({k: torch.from_numpy(v)
                for k, v in flax_to_torch(params, variant).items()}, dst)
  return params


def main(argv=None) -> None:
  """Command line and console-script entry point (`alexnet-convert`)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if 'input' not in flags.FLAGS:  # Defined here: importers get no flags.
    flags.DEFINE_string('input', None,
                        '.pth, .npz, or an orbax checkpoint (or workdir).')
    flags.DEFINE_string('output', None, '.npz or .pth to write.')
    flags.DEFINE_enum('variant', None, list(TORCH_LAYOUTS),
                      'The PyTorch layout of the .pth side.')
    flags.mark_flags_as_required(['input', 'output', 'variant'])
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top

  def run(args):
    if len(args) > 1:
      raise app.UsageError(f'Unexpected arguments: {args[1:]}')
    f = flags.FLAGS
    try:  # As __main__, ConversionError is not the class cli knows.
      params = convert_file(f.input, f.output, f.variant)
    except (ConversionError, FileNotFoundError) as e:
      raise SystemExit(f'convert: {e}') from None
    count = sum(v.size for layer in params.values() for v in layer.values())
    print(f'Wrote {f.output} ({count:,} parameters; PyTorch layout '
          f'{f.variant!r}).')
  cli.run_console_script(run, __name__, argv=argv)


if __name__ == '__main__':
  main()
