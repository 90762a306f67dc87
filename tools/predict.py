r"""Classify image files with a trained model: top-5 classes per image.

  python -m alexnet_jax.tools.predict --workdir=/tmp/alexnet_default cat.jpg dog.png
  python -m alexnet_jax.tools.predict --ten_crop \
      --checkpoint=/tmp/alexnet_default/checkpoints/3744 cat.jpg

The config comes from `workdir/config.json` (written by training; with only
--checkpoint, from the workdir above the checkpoint), the params from the
newest checkpoint (or --checkpoint; only the params are read).

Images get the evaluation preprocessing of `input_pipeline` (its geometry,
`Preprocess`), decoded and resized with Pillow (no TensorFlow): the resize
agrees to +-1 level (float bilinear, the same antialiasing); JPEGs differ by a
few levels (libjpeg's fast integer DCT in TensorFlow, the accurate one in
Pillow). `--ten_crop` averages the softmax over the four corner crops, the
centre crop and their mirror images (the paper's test-time procedure).

Class names: --class_names (a file, one a line), else `class_names.txt` in the
workdir, else the dataset's (TFDS metadata, `datasets/shapes.py` for the
embedded dataset, the folder names of an image folder), else class indices.
TFDS names ImageNet's classes by WordNet id (n01440764); pass --class_names
for words.
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
  """The nearest directory above `checkpoint` holding config.json."""
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


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Antialiased bilinear resize in float32, as tf.image.resize(antialias=True)
  does it (Pillow widens the filter by the downscaling factor, as TF does)."""
  channels = [
      np.asarray(Image.fromarray(np.ascontiguousarray(
          image[..., c], np.float32)).resize(
              (width, height), Image.Resampling.BILINEAR))
      for c in range(image.shape[-1])]
  return np.stack(channels, axis=-1)


def resize_to_square(image: np.ndarray, pre: Preprocess) -> np.ndarray:
  """`Preprocess.decode_and_resize` of a decoded image, with Pillow."""
  size = pre.resize_size
  height, width = pre.resized_shapes([image.shape[:2]])[0]
  top, left = (height - size) // 2, (width - size) // 2
  resized = _resize(image, int(height), int(width))
  square = resized[top:top + size, left:left + size]
  return np.clip(np.round(square), 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray, config, ten_crop: bool = False,
               mean_image: np.ndarray | None = None) -> np.ndarray:
  """uint8 [crops, image_size, image_size, 3] for one image; float32, less
  the same crops of `mean_image`, where the run subtracted a mean image."""
  if config.resize_mode not in ('crop', 'squash'):
    raise PredictError(f'config.resize_mode={config.resize_mode!r}; expected '
                       f"'crop' or 'squash'.")
  pre = Preprocess(config.image_size, config.resize_size, config.resize_mode)
  crops_of = pre.ten_crops if ten_crop else (
      lambda x: pre.center_crop(x)[None])
  crops = crops_of(resize_to_square(image, pre))
  if mean_image is None:
    return crops
  return crops.astype(np.float32) - crops_of(mean_image)


def load_mean_image(workdir: str, config) -> np.ndarray | None:
  """The mean image a run subtracted (config.normalization.mean_image)."""
  if not config.normalization.get('mean_image', False):
    return None
  path = os.path.join(workdir, workdir_lib.MEAN_IMAGE_FILE)
  try:
    return np.load(path)
  except (OSError, ValueError) as e:
    raise PredictError(f'the run subtracted a mean image, but {path} cannot '
                       f'be read ({type(e).__name__}).') from None


# Class names.


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


def class_names(config, workdir: str | None = None,
                names_file: str | None = None,
                step: int | None = None) -> list[str]:
  """Class names: `names_file` (one a line), else `workdir/class_names.txt`,
  else the dataset's (TFDS metadata; nothing is downloaded or prepared), else
  the class indices."""
  num_classes = config.model.num_classes
  if names_file:
    return _read_names(names_file, num_classes, '--class_names')
  saved = workdir and (workdir_lib.record_path(workdir, 'class_names', step) or
                       os.path.join(workdir, workdir_lib.CLASS_NAMES_FILE))
  if saved and os.path.exists(saved):
    return _read_names(saved, num_classes, 'the class names file')
  names = None
  try:
    if config.dataset == 'alexnet_shapes':
      from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
      names = list(shapes.CLASS_NAMES)
    elif config.dataset == input_pipeline.IMAGE_FOLDER:
      names = input_pipeline.list_image_folder(
          config.dataset_dir, config.get('validation_fraction', 0.2))[1]
    elif config.dataset != 'fake':  # The builder's metadata only.
      kwargs = {'data_dir': config.data_dir} if config.get('data_dir') else {}
      info = input_pipeline.import_tfds().builder(config.dataset, **kwargs).info
      names = list(info.features['label'].names)
  except Exception as e:  # pylint: disable=broad-except
    print(f'predict: no class names for dataset {config.dataset!r} '
          f'({type(e).__name__}: {e}); printing class indices. Pass '
          f'--class_names=FILE to name them.', file=sys.stderr)
    names = None
  if names is not None and len(names) != num_classes:
    print(f'predict: dataset {config.dataset!r} has {len(names)} class names, '
          f'the model {num_classes} classes; printing class indices.',
          file=sys.stderr)
    names = None
  return names or [str(i) for i in range(num_classes)]


# The model.


class Predictor:
  """Softmax probabilities of a model restored from a checkpoint."""

  def __init__(self, config, params):
    import jax  # pylint: disable=g-import-not-at-top
    from . import evaluate  # pylint: disable=g-import-not-at-top
    from alexnet_jax import models  # pylint: disable=g-import-not-at-top
    from alexnet_jax import steps  # pylint: disable=g-import-not-at-top
    model = models.model_from_config(config.model)
    evaluate.check_params_fit(params, model, config.image_size)
    normalize = steps.Normalization.from_config(config.normalization)

    @jax.jit
    def probs(params, crops):
      images = normalize(crops)
      logits = model.apply({'params': params}, images, train=False)
      return jax.nn.softmax(logits).mean(axis=0)

    self._params = jax.device_put(params)
    self._probs = probs

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    """[crops, H, W, 3] (uint8, or float32 less the mean image) ->
    [num_classes] mean softmax over the crops."""
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
      '(the classes of the dataset it was trained on).',
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
  parser.add_argument('--class_names',
                      help='A file with one class name a line.')
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
  workdir = args.workdir or _workdir_of_checkpoint(args.checkpoint)
  step = _step_of(args.checkpoint)
  config = load_config(workdir, step)
  # Bad input fails here, before JAX is imported and anything compiled.
  images = [(path, load_image(path)) for path in args.images]
  from . import checkpoint_params  # pylint: disable=g-import-not-at-top
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from . import convert  # pylint: disable=g-import-not-at-top
  from . import evaluate  # pylint: disable=g-import-not-at-top
  names = class_names(config, workdir, args.class_names, step)
  try:
    params, _ = evaluate.load_params(args.checkpoint or workdir, config.model)
    predictor = Predictor(config, params)
  except (checkpoint_params.CheckpointNotFoundError,
          checkpoint_params.CheckpointUnreadableError,
          convert.ConversionError, config_lib.ConfigError) as e:
    raise PredictError(str(e)) from None
  mean_image = load_mean_image(workdir, config)
  k = min(args.top_k, config.model.num_classes)
  for path, image in images:
    probs = predictor(preprocess(image, config, args.ten_crop, mean_image))
    print(format_predictions(path, top_k(probs, k), names), flush=True)


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
