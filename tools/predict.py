r"""Classify image files with a trained model: top-5 classes per image.

  python -m alexnet_jax.tools.predict --workdir=/tmp/alexnet_default cat.jpg
  python -m alexnet_jax.tools.predict --ten_crop \
      --checkpoint=/tmp/alexnet_default/checkpoints/3744 cat.jpg
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np
from PIL import Image

from alexnet_jax import input_pipeline
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.input_pipeline import DataOptions
from alexnet_jax.input_pipeline import Preprocess


class PredictError(Exception):
  """A user-facing failure: printed without a traceback."""


def load_config(workdir: str, step: int | None = None):
  """The ConfigDict in `workdir/config.json`, or in the config.<s>.json a
  resume with a changed config wrote, the newest with s <= `step`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = (workdir_lib.record_path(workdir, 'config', step)
          or os.path.join(workdir, 'config.json'))
  try:
    return ml_collections.ConfigDict(workdir_lib.read_config(path))
  except FileNotFoundError:
    raise PredictError(f'No config.json in {workdir!r}: is it the workdir of '
                       f'a training run?') from None
  except (OSError, ValueError) as e:
    raise PredictError(f'Cannot read {path!r}: {e}') from None


def _workdir_of_checkpoint(checkpoint: str) -> str:
  path = os.path.abspath(checkpoint)
  for _ in range(4):  # step/default -> step -> checkpoints -> workdir.
    if os.path.exists(os.path.join(path, 'config.json')):
      return path
    path = os.path.dirname(path)
  raise PredictError(f'No config.json found above --checkpoint={checkpoint!r}; '
                     f'pass --workdir too.')


def load_image(path: str) -> np.ndarray:
  """An image file -> uint8 [H, W, 3] RGB (alpha dropped, grey repeated)."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except FileNotFoundError:
    raise PredictError(f'{path}: no such file.') from None
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise PredictError(f'{path}: cannot read it as an image ({e}).') from None


def resized_shape(height: int, width: int, pre: Preprocess) -> tuple[int, int]:
  """`Preprocess.resized_shape` in NumPy's float32, without TensorFlow."""
  if pre.resize_mode == 'squash':
    return pre.resize_size, pre.resize_size
  shape = np.array([height, width], np.float32)
  scale = np.float32(pre.resize_size) / shape.min()
  resized = np.ceil(shape * scale - np.float32(1e-3)).astype(np.int32)
  return tuple(int(n) for n in np.maximum(resized, pre.resize_size))


def resize_to_square(image: np.ndarray, pre: Preprocess) -> np.ndarray:
  """`Preprocess.decode_and_resize` of a decoded image, with Pillow: its
  float bilinear resize widens the filter when downscaling, as TensorFlow's
  antialiased one does (equal to +-1 level)."""
  size = pre.resize_size
  height, width = resized_shape(*image.shape[:2], pre)
  resized = np.stack([
      np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32)).resize(
          (width, height), Image.Resampling.BILINEAR))
      for c in np.moveaxis(image, -1, 0)], axis=-1)
  top, left = (height - size) // 2, (width - size) // 2
  square = resized[top:top + size, left:left + size]
  return np.clip(np.round(square), 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray, pre: Preprocess, ten_crop: bool = False,
               mean_image: np.ndarray | None = None) -> np.ndarray:
  """uint8 [crops, image_size, image_size, 3] for one image (the centre crop,
  or the paper's ten); float32 less the same crops of `mean_image`."""
  crops_of = pre.ten_crops if ten_crop else (
      lambda x: pre.center_crop(x)[None])
  crops = crops_of(resize_to_square(image, pre))
  if mean_image is None:
    return crops
  return crops.astype(np.float32) - crops_of(mean_image)


def load_mean_image(workdir: str, normalization) -> np.ndarray | None:
  """The mean image a run subtracted, if `normalization.mean_image`."""
  if not normalization.get('mean_image', False):
    return None
  path = os.path.join(workdir, workdir_lib.MEAN_IMAGE_FILE)
  try:
    return np.load(path)
  except (OSError, ValueError) as e:
    raise PredictError(f'the run subtracted a mean image, but {path} cannot '
                       f'be read ({type(e).__name__}).') from None


def _read_names(path: str, num_classes: int, what: str) -> list[str]:
  try:
    with open(path) as f:
      names = [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise PredictError(f'{what}={path!r}: {e}') from None
  if len(names) != num_classes:
    raise PredictError(f'{what}={path!r} has {len(names)} names; the model '
                       f'has {num_classes} classes.')
  return names


def _dataset_names(data: DataOptions) -> list[str] | None:
  """The dataset's own class names (TFDS metadata only: nothing is
  downloaded or prepared); None for fake data."""
  if data.dataset == 'alexnet_shapes':
    from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
    return list(shapes.CLASS_NAMES)
  if data.dataset == input_pipeline.IMAGE_FOLDER:
    return input_pipeline.list_image_folder(data.dataset_dir,
                                            data.validation_fraction)[1]
  if data.dataset == 'fake':
    return None
  kwargs = {'data_dir': data.data_dir} if data.data_dir else {}
  info = input_pipeline.import_tfds().builder(data.dataset, **kwargs).info
  return list(info.features['label'].names)


def class_names(num_classes: int, data: DataOptions,
                workdir: str | None = None, names_file: str | None = None,
                step: int | None = None) -> list[str]:
  """`names_file` (one a line), else `workdir/class_names.txt`, else the
  dataset's, else the class indices. TFDS names ImageNet's by WordNet id."""
  if names_file:
    return _read_names(names_file, num_classes, '--class_names')
  saved = workdir and (workdir_lib.record_path(workdir, 'class_names', step) or
                       os.path.join(workdir, workdir_lib.CLASS_NAMES_FILE))
  if saved and os.path.exists(saved):
    return _read_names(saved, num_classes, 'the class names file')
  try:
    names = _dataset_names(data)
  except Exception as e:  # pylint: disable=broad-except
    print(f'predict: no class names for dataset {data.dataset!r} '
          f'({type(e).__name__}: {e}); printing class indices. Pass '
          f'--class_names=FILE to name them.', file=sys.stderr)
    names = None
  if names is not None and len(names) != num_classes:
    print(f'predict: dataset {data.dataset!r} has {len(names)} class names, '
          f'the model {num_classes} classes; printing class indices.',
          file=sys.stderr)
    names = None
  return names or [str(i) for i in range(num_classes)]


class Predictor:
  """Softmax probabilities, averaged over an image's crops, of a model
  (`model_config`, the `normalization` section) with `params`."""

  def __init__(self, params, model_config, normalization, image_size: int):
    import jax  # pylint: disable=g-import-not-at-top
    from alexnet_jax import models  # pylint: disable=g-import-not-at-top
    from alexnet_jax import steps  # pylint: disable=g-import-not-at-top
    from . import evaluate  # pylint: disable=g-import-not-at-top
    model = models.model_from_config(model_config)
    evaluate.check_params_fit(params, model, image_size)
    normalize = steps.Normalization.from_config(normalization)

    @jax.jit
    def probs(params, crops):
      logits = model.apply({'params': params}, normalize(crops), train=False)
      return jax.nn.softmax(logits).mean(axis=0)

    self._params = jax.device_put(params)
    self._probs = probs

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    """[crops, H, W, 3] (uint8, or float32 less the mean image) ->
    [num_classes]."""
    return np.asarray(self._probs(self._params, crops))


def top_k(probs: np.ndarray, k: int) -> list[tuple[int, float]]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [(int(i), float(probs[i])) for i in order]


def format_predictions(path: str, best: list[tuple[int, float]],
                       names: Sequence[str]) -> str:
  width = max(len(names[i]) for i, _ in best)
  lines = [path] + [f'  {rank}. {names[i]:<{width}}  {p:.4f}'
                    for rank, (i, p) in enumerate(best, 1)]
  return '\n'.join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m alexnet_jax.tools.predict',
      description='Top-k classes of image files under a trained AlexNet '
      '(the classes of the dataset it was trained on), with the evaluation '
      'preprocessing of the run, decoded and resized with Pillow.',
      epilog='example: python -m alexnet_jax.tools.predict '
      '--workdir=/tmp/alexnet_default examples/images/*.jpg')
  parser.add_argument('images', nargs='+', metavar='IMAGE')
  parser.add_argument('--workdir', help='A training workdir (config.json and '
                      'checkpoints; the newest checkpoint is used).')
  parser.add_argument('--checkpoint', help='An orbax step directory (or an '
                      '.npz of params, with --workdir for the config).')
  parser.add_argument('--ten_crop', action='store_true', help='Average the '
                      'softmax over 10 crops (corners, centre, mirrored).')
  parser.add_argument('--top_k', type=int, default=5)
  parser.add_argument('--class_names', help='A file with one class name a '
                      'line (default: the run\'s, else the dataset\'s).')
  args = parser.parse_args(argv)
  if not args.workdir and not args.checkpoint:
    parser.error('pass --workdir or --checkpoint.')
  if args.top_k < 1:
    parser.error(f'--top_k={args.top_k}; expected >= 1.')
  return args


def _step_of(checkpoint: str | None) -> int | None:
  """The step of a step directory (`.../checkpoints/<step>[/default]`)."""
  if not checkpoint:
    return None
  path = os.path.abspath(checkpoint)
  name = os.path.basename(path)
  if name == 'default':
    name = os.path.basename(os.path.dirname(path))
  return int(name) if name.isdigit() else None


def run(args: argparse.Namespace) -> None:
  """Reads the run's config (config.json above --checkpoint, without
  --workdir) and prints each image's top-k classes."""
  workdir = args.workdir or _workdir_of_checkpoint(args.checkpoint)
  step = _step_of(args.checkpoint)
  config = load_config(workdir, step)
  # Bad input fails here, before JAX is imported and anything compiled.
  images = [(path, load_image(path)) for path in args.images]
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from . import checkpoint_params  # pylint: disable=g-import-not-at-top
  from . import convert  # pylint: disable=g-import-not-at-top
  from . import evaluate  # pylint: disable=g-import-not-at-top
  num_classes = config.model.num_classes
  try:
    data = DataOptions.from_config(config)
    names = class_names(num_classes, data, workdir, args.class_names, step)
    params, _ = evaluate.load_params(args.checkpoint or workdir, config.model)
    predictor = Predictor(params, config.model, config.normalization,
                          config.image_size)
  except (checkpoint_params.CheckpointNotFoundError,
          checkpoint_params.CheckpointUnreadableError,
          convert.ConversionError, config_lib.ConfigError) as e:
    raise PredictError(str(e)) from None
  mean_image = load_mean_image(workdir, config.normalization)
  for path, image in images:
    crops = preprocess(image, data.preprocess, args.ten_crop, mean_image)
    best = top_k(predictor(crops), min(args.top_k, num_classes))
    print(format_predictions(path, best, names), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
  """Command line and console-script entry point (`alexnet-predict`)."""
  from alexnet_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_console()
  args = parse_args(argv)
  try:
    run(args)
  except PredictError as e:
    raise SystemExit(f'predict: {e}') from None


if __name__ == '__main__':
  main()
