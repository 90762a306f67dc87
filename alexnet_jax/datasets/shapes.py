"""The embedded `alexnet_shapes` dataset: ten classes of filled shapes on
cluttered backgrounds, 256x256 JPEGs, 5,000 train and 1,000 validation, each
rendered from its split's seed and its index alone; only the outline tells
the class (docs/input_pipeline.md, The embedded dataset). `build(data_dir)`
generates the TFDS dataset on first use (about 20 s)."""

import functools
import io
import math

from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow_datasets as tfds

CLASS_NAMES: tuple[str, ...] = ('circle', 'square', 'triangle', 'pentagon',
                                'star', 'cross', 'ring', 'ellipse', 'arrow',
                                'crescent')
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 256
AREA_FRACTION_RANGE = (0.06, 0.18)  # Of the image, the same for every class.
BACKGROUND_MAX = 150.0  # Each channel of the background's base colour.
# The shape's colour against the background's base: RGB distance, and how
# much brighter (ITU-R 601 luma); a random polarity slowed learning.
MIN_COLOUR_DISTANCE = 130.0
MIN_LUMA_DIFFERENCE = 60.0
MIN_CLUTTER_SHAPE_DISTANCE = 90.0  # RGB distance of distractors from shape.
NUM_CLUTTER = (6, 14)  # Distractors: drawn from [low, high).
MAX_RADIUS_FRACTION = 0.46  # The shape's bounding radius, of the side.
PIXEL_NOISE = 12  # Uniform per-pixel noise, +/- grey levels.
JPEG_QUALITY = 90
TRAIN_SEED = 1_000_003
VALIDATION_SEED = 2_000_003


# Shapes in unit coordinates (bounding radius ~1): (polygon, filled) pairs;
# filled=False cuts a hole.
def _ellipse_points(rx: float = 1.0, ry: float | None = None, cx: float = 0.0,
                    n: int = 64) -> np.ndarray:
  t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
  ry = rx if ry is None else ry
  return np.stack([cx + rx * np.cos(t), ry * np.sin(t)], axis=1)


def _regular_polygon(n: int) -> np.ndarray:
  t = -np.pi / 2 + np.arange(n) * 2.0 * np.pi / n
  return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
  k = np.arange(2 * points)
  t = -np.pi / 2 + k * np.pi / points
  r = np.where(k % 2 == 0, 1.0, inner)
  return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


_CROSS = np.array([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3),
                   (0.3, 0.3), (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3),
                   (-1, -0.3), (-0.3, -0.3)], np.float64)
_ARROW = np.array([(-1.0, -0.25), (0.1, -0.25), (0.1, -0.65), (1.0, 0.0),
                   (0.1, 0.65), (0.1, 0.25), (-1.0, 0.25)])
_SHAPES: tuple[list[tuple[np.ndarray, bool]], ...] = (  # As CLASS_NAMES.
    [(_ellipse_points(), True)],
    [(_regular_polygon(4), True)],
    [(_regular_polygon(3), True)],
    [(_regular_polygon(5), True)],
    [(_star(), True)],
    [(_CROSS, True)],
    [(_ellipse_points(), True), (_ellipse_points(0.55), False)],
    [(_ellipse_points(1.0, 0.5), True)],
    [(_ARROW, True)],
    [(_ellipse_points(), True), (_ellipse_points(0.8, cx=0.5), False)],
)
_LUMA = np.array([0.299, 0.587, 0.114])


def _draw_shape(mask: Image.Image, parts, transform) -> None:
  draw = ImageDraw.Draw(mask)
  for poly, filled in parts:
    draw.polygon([tuple(p) for p in transform(poly).tolist()],
                 fill=255 if filled else 0)


@functools.cache
def _unit_geometry(label: int) -> tuple[float, float]:
  """(area, bounding radius) of the unit shape; the area by rasterisation."""
  parts = _SHAPES[label]
  canvas, scale = 1024, 400.0
  mask = Image.new('L', (canvas, canvas), 0)
  _draw_shape(mask, parts, lambda p: p * scale + canvas / 2)
  area = float(np.count_nonzero(np.asarray(mask))) / scale**2
  radius = max(float(np.max(np.linalg.norm(p, axis=1)))
               for p, filled in parts if filled)
  return area, radius


def _shape_colour(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
  for _ in range(64):
    c = rng.uniform(0.0, 255.0, size=3)
    if (np.linalg.norm(c - bg) >= MIN_COLOUR_DISTANCE
        and float((c - bg) @ _LUMA) >= MIN_LUMA_DIFFERENCE):
      return c
  # Practically never reached; white meets both bounds (bg <= BACKGROUND_MAX).
  return np.full(3, 255.0)


def _clutter_colour(rng: np.random.Generator, bg: np.ndarray,
                    shape_colour: np.ndarray) -> tuple[int, int, int] | None:
  """A low-contrast colour near `bg`, away from the shape colour (or None)."""
  for _ in range(6):
    alpha = rng.uniform(0.25, 0.5)
    c = bg + alpha * (rng.uniform(0.0, 255.0, size=3) - bg)
    if np.linalg.norm(c - shape_colour) >= MIN_CLUTTER_SHAPE_DISTANCE:
      return tuple(int(v) for v in np.clip(c, 0, 255))
  return None


def _render_pil(rng: np.random.Generator, label: int, size: int) -> Image.Image:
  if not 0 <= label < NUM_CLASSES:
    raise ValueError(f'label must be in [0, {NUM_CLASSES}), got {label}')
  # Background: base colour + smooth low-frequency colour variation.
  bg = rng.uniform(0.0, BACKGROUND_MAX, size=3)
  grid = np.clip(bg + rng.normal(0.0, 22.0, size=(5, 5, 3)), 0, 255)
  img = Image.fromarray(grid.astype(np.uint8), 'RGB').resize(
      (size, size), Image.BILINEAR)
  shape_colour = _shape_colour(rng, bg)

  draw = ImageDraw.Draw(img)  # Low-contrast distractors, under the shape.
  for _ in range(int(rng.integers(*NUM_CLUTTER))):
    kind = int(rng.integers(3))
    colour = _clutter_colour(rng, bg, shape_colour)
    x0, y0, x1, y1 = (rng.uniform(-0.1, 1.1, size=4) * size).tolist()
    w = max(1, int(rng.uniform(0.01, 0.03) * size))
    rx, ry = (rng.uniform(0.02, 0.08, size=2) * size).tolist()
    a0, a1 = rng.uniform(0.0, 360.0, size=2).tolist()
    if colour is None:
      continue
    if kind == 0:
      draw.line([(x0, y0), (x1, y1)], fill=colour, width=w)
    elif kind == 1:
      draw.ellipse([x0 - rx, y0 - ry, x0 + rx, y0 + ry], fill=colour)
    else:
      r = 2.0 * max(rx, ry)
      draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], a0, a1, fill=colour, width=w)

  unit_area, unit_radius = _unit_geometry(label)
  area = rng.uniform(*AREA_FRACTION_RANGE) * size * size
  scale = math.sqrt(area / unit_area)
  stretch = rng.uniform(0.9, 1.1)  # Area-preserving anisotropic stretch.
  theta = rng.uniform(0.0, 2.0 * np.pi)
  radius = scale * unit_radius * max(stretch, 1.0 / stretch)
  max_radius = MAX_RADIUS_FRACTION * size
  if radius > max_radius:  # Rare extreme draws: keeps the shape in frame.
    scale *= max_radius / radius
    radius = max_radius
  margin = radius + 0.02 * size
  cx, cy = rng.uniform(margin, size - margin, size=2)
  c, s = math.cos(theta), math.sin(theta)
  # p @ mat (row vectors) stretches x by `stretch` and y by its inverse, then
  # rotates by theta, then scales.
  mat = (np.array([[stretch], [1.0 / stretch]])
         * np.array([[c, s], [-s, c]]) * scale)
  mask = Image.new('L', (size, size), 0)
  _draw_shape(mask, _SHAPES[label], lambda p: p @ mat + np.array([cx, cy]))
  img.paste(tuple(int(v) for v in shape_colour), (0, 0), mask)

  arr = np.asarray(img, dtype=np.int16)
  arr = arr + rng.integers(-PIXEL_NOISE, PIXEL_NOISE + 1, size=arr.shape,
                           dtype=np.int16)
  return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), 'RGB')


def render_image(rng: np.random.Generator, label: int,
                 size: int = IMAGE_SIZE) -> np.ndarray:
  """uint8 [size, size, 3]: an image of class `label`, a function of the
  state of `rng` (and `label`, `size`) only."""
  return np.asarray(_render_pil(rng, int(label), int(size)))


def example_rng(split_seed: int, index: int) -> np.random.Generator:
  """The generator for example `index` of a split (independent of order)."""
  return np.random.default_rng([int(split_seed), int(index)])


def example_label(index: int) -> int:
  """Label of example `index` (the splits are class balanced)."""
  return int(index) % NUM_CLASSES


def render_example(split_seed: int, index: int,
                   size: int = IMAGE_SIZE) -> tuple[np.ndarray, int]:
  """(image, label) of example `index` of the split seeded with `split_seed`."""
  label = example_label(index)
  return render_image(example_rng(split_seed, index), label, size), label


class AlexnetShapes(tfds.core.GeneratorBasedBuilder):
  """The 10-class shapes dataset (see the module's docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Where TFDS looks for metadata files: not guessed from a subclass's module.
  pkg_dir_path = epath.Path(__file__).parent
  # Class attributes, so that tests can subclass with tiny splits.
  NUM_TRAIN_EXAMPLES = 5000
  NUM_VALIDATION_EXAMPLES = 1000
  TRAIN_SEED = TRAIN_SEED
  VALIDATION_SEED = VALIDATION_SEED

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(
                shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {'train': self._generate_examples(
                'train', self.TRAIN_SEED, self.NUM_TRAIN_EXAMPLES),
            'validation': self._generate_examples(
                'validation', self.VALIDATION_SEED,
                self.NUM_VALIDATION_EXAMPLES)}

  def _generate_examples(self, split: str, seed: int, num_examples: int):
    for index in range(num_examples):
      label = example_label(index)
      img = _render_pil(example_rng(seed, index), label, IMAGE_SIZE)
      # Pillow's JPEG: faster than TFDS's tf.image.encode_jpeg per example.
      jpeg = io.BytesIO()
      img.save(jpeg, format='JPEG', quality=JPEG_QUALITY)
      yield f'{split}_{index:06d}', {'image': jpeg.getvalue(), 'label': label}


def build(data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The prepared `alexnet_shapes` builder, generated locally on first use
  (no network, no GCS lookup)."""
  builder = AlexnetShapes(data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
