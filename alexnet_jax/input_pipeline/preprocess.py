"""The paper's preprocessing of an image, in TensorFlow ops: decode, resize
the shorter side to `resize_size` and keep the central square (or squash the
whole image to it), then crop `image_size` (training: at an offset drawn in
`augmentation`; evaluation: the centre crop or the ten crops, which work on
NumPy arrays too, for `predict`).

Training crops decode only their window of the original image
(`tf.io.decode_and_crop_jpeg`), then resize it to the crop (`resize_crops`:
OpenCV's bilinear, several crops per Python call). Where the shorter side
already equals `resize_size` (as `prepare_dataset` writes images) this is
exactly resize-then-crop; otherwise it resamples the same window, a fraction
of a pixel off the square's grid and without antialiasing. Where the sizes
are known ahead, the windows are planned in NumPy for the epoch.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from alexnet_jax.input_pipeline.options import import_cv2
from alexnet_jax.input_pipeline.options import import_tensorflow

NUM_TEN_CROPS = 10


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """The paper's preprocessing (the config's fields of these names)."""
  image_size: int  # The crop fed to the network (227).
  resize_size: int  # The shorter side before cropping (256).
  resize_mode: str  # 'crop' (paper) or 'squash' (Caffe): to resize_size^2.
  random_crop: bool = True  # augment.random_crop
  flip: bool = True  # augment.flip
  lighting_std: float = 0.0  # augment.lighting_std; 0 disables.

  def decode(self, image_bytes):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [h, w, 3]."""
    tf = import_tensorflow()
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

  def resized_shape(self, shape):
    """[h, w] of the whole image once resized (before the central square)."""
    tf = import_tensorflow()
    size = self.resize_size
    if self.resize_mode == 'squash':
      return tf.constant([size, size], tf.int32)
    shape = tf.cast(shape, tf.float32)
    scale = size / tf.reduce_min(shape)
    return tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32),
                      size)

  def resize_square(self, image):
    """uint8 [h, w, 3] -> uint8 [resize_size, resize_size, 3]."""
    tf = import_tensorflow()
    size = self.resize_size
    shape = tf.shape(image)[:2]
    target = self.resized_shape(shape)
    image = tf.cond(tf.reduce_all(tf.equal(shape, target)),
                    lambda: image, lambda: resize_uint8(image, target))
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    image = image[top:top + size, left:left + size]
    return tf.ensure_shape(image, (size, size, 3))

  def decode_and_resize(self, image_bytes):
    """Encoded bytes -> uint8 [resize_size, resize_size, 3]."""
    return self.resize_square(self.decode(image_bytes))

  def crop_window(self, shape, offset):
    """The window of the original image [top, left, height, width] that
    becomes the image_size crop at `offset` (y, x) of the resized square."""
    tf = import_tensorflow()
    target = self.resized_shape(shape)
    scale = tf.cast(shape, tf.float32) / tf.cast(target, tf.float32)
    start = (target - self.resize_size) // 2 + offset
    start = tf.cast(tf.round(tf.cast(start, tf.float32) * scale), tf.int32)
    size = tf.cast(tf.round(self.image_size * scale), tf.int32)
    size = tf.clip_by_value(size, 1, shape)
    start = tf.clip_by_value(start, 0, shape - size)
    return tf.concat([start, size], axis=0)

  def window_from_bytes(self, image_bytes, offset, jpeg_only: bool = False):
    """(uint8 [h, w, 3] decoded, box [top, left, height, width] in it): the
    window of the original image that becomes the crop at `offset`, decoding
    (JPEGs) only about it. `jpeg_only` skips the per-image format check,
    which costs tf.data a good share of the decode's time."""
    tf = import_tensorflow()

    def jpeg():
      shape = tf.image.extract_jpeg_shape(image_bytes)[:2]
      window = self.crop_window(shape, offset)
      start, extent = window[:2], window[2:]
      # One more pixel on every side: libjpeg's chroma upsampling at a
      # window's edge lacks the neighbours that a full decode uses; with
      # them the pixels equal the full decode's.
      low = tf.maximum(start - 1, 0)
      high = tf.minimum(start + extent + 1, shape)
      padded = tf.io.decode_and_crop_jpeg(
          image_bytes, tf.concat([low, high - low], 0), channels=3)
      return padded, tf.concat([start - low, extent], 0)

    def other():
      image = self.decode(image_bytes)
      return image, self.crop_window(tf.shape(image)[:2], offset)

    return (jpeg() if jpeg_only else
            tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other))

  def crops_from_bytes(self, images_bytes, offsets, jpeg_only: bool = False):
    """[k, image_size, image_size, 3]: the crops at `offsets` [k, 2] of the
    resized squares of the k encoded images `images_bytes` (a list)."""
    tf = import_tensorflow()
    windows = [self.window_from_bytes(b, o, jpeg_only)
               for b, o in zip(images_bytes, tf.unstack(offsets))]
    return resize_crops([image for image, _ in windows],
                        tf.stack([box for _, box in windows]), self.image_size)

  def resized_shapes(self, shapes: np.ndarray) -> np.ndarray:
    """`resized_shape` in NumPy for `shapes` [n, 2], with the same float32
    arithmetic and rounding."""
    shapes = np.asarray(shapes, np.int32)
    size = self.resize_size
    if self.resize_mode == 'squash':
      return np.full_like(shapes, size)
    shape = shapes.astype(np.float32)
    scale = np.float32(size) / shape.min(axis=1, keepdims=True)
    return np.maximum(
        np.ceil(shape * scale - np.float32(1e-3)).astype(np.int32), size)

  def crop_windows(self, shapes: np.ndarray, offsets: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`crop_window` in NumPy, for images of known `shapes` [n, 2] (h, w)
    and crops at `offsets` [n, 2]: ([n, 2] starts, [n, 2] sizes)."""
    shapes = np.asarray(shapes, np.int32)
    shape, size = shapes.astype(np.float32), self.resize_size
    target = self.resized_shapes(shapes)
    scale = shape / target.astype(np.float32)
    start = (target - size) // 2 + offsets
    start = np.round(start.astype(np.float32) * scale).astype(np.int32)
    extent = np.round(np.float32(self.image_size) * scale).astype(np.int32)
    extent = np.clip(extent, 1, shapes)
    return np.clip(start, 0, shapes - extent), extent

  def plan_jpeg_crops(self, shapes: np.ndarray, offsets: np.ndarray
                      ) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    """For JPEGs of known `shapes` [n, 2], the crops at `offsets` [n, 2]
    planned in NumPy: ((windows, where), resize). `windows` [n, 4]: what to
    decode (the crop's window and a pixel more on each side); `resize`:
    whether any crop needs resizing; `where`: then [n, 4] boxes of the crop's
    window in the decoded one, else [n, 3] starts of the crop in it."""
    start, extent = self.crop_windows(shapes, offsets)
    low = np.maximum(start - 1, 0)
    high = np.minimum(start + extent + 1, shapes)
    windows = np.concatenate([low, high - low], axis=1).astype(np.int32)
    resize = bool(np.any(extent != self.image_size))
    if resize:
      where = np.concatenate([start - low, extent], axis=1)
    else:
      where = np.concatenate([start - low, np.zeros_like(low[:, :1])], 1)
    return (windows, where.astype(np.int32)), resize

  def crops_from_planned_jpegs(self, images_bytes, windows, where,
                               resize: bool):
    """[k, image_size, image_size, 3]: the crops of the k JPEGs
    `images_bytes` (a list) that `plan_jpeg_crops` planned."""
    tf = import_tensorflow()
    decoded = [tf.io.decode_and_crop_jpeg(b, w, channels=3)
               for b, w in zip(images_bytes, tf.unstack(windows))]
    if resize:
      return resize_crops(decoded, where, self.image_size)
    size = (self.image_size, self.image_size, 3)
    return tf.stack([tf.slice(d, w, size)
                     for d, w in zip(decoded, tf.unstack(where))])

  def crop_from_square(self, square, offset):
    size = self.image_size
    return square[offset[0]:offset[0] + size, offset[1]:offset[1] + size]

  def center_crop(self, square):
    margin = (self.resize_size - self.image_size) // 2
    return self.crop_from_square(square, (margin, margin))

  def ten_crops(self, square):
    """[10, image_size, image_size, 3]: the four corner crops, the centre crop,
    then the same five mirrored (a NumPy array for a NumPy `square`)."""
    last = self.resize_size - self.image_size
    mid = last // 2
    crops = [self.crop_from_square(square, (y, x))
             for y, x in ((0, 0), (0, last), (last, 0), (last, last),
                          (mid, mid))]
    crops += [c[:, ::-1] for c in crops]
    if isinstance(square, np.ndarray):
      return np.stack(crops)
    return import_tensorflow().stack(crops)


def resize_uint8(image, size, antialias: bool = True):
  """Bilinear resize of a uint8 image to `size` [h, w], rounded back to uint8."""
  tf = import_tensorflow()
  image = tf.image.resize(image, size, method='bilinear', antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_crops(images, boxes, size: int):
  """uint8 [k, size, size, 3]: the `boxes` [k, 4] ([top, left, height,
  width]) of the k uint8 `images` [h, w, 3] (a list), each resized by
  OpenCV's bilinear (pixel centres at half-integers, no antialiasing; 11-bit
  fixed-point weights: within one level of the exact interpolation), several
  times faster than tf.image.resize's float one."""
  tf = import_tensorflow()
  import_cv2()  # A missing OpenCV fails here, not in tf.data's threads.
  out = tf.numpy_function(functools.partial(_resize_boxes, size=size),
                          [boxes, *images], tf.uint8, stateful=False)
  return tf.ensure_shape(out, (len(images), size, size, 3))


def _resize_boxes(boxes: np.ndarray, *images: np.ndarray,
                  size: int) -> np.ndarray:
  cv2 = import_cv2()
  out = _aligned_uint8((len(images), size, size, 3))
  for image, (top, left, height, width), crop in zip(images, boxes, out):
    cv2.resize(image[top:top + height, left:left + width], (size, size),
               dst=crop, interpolation=cv2.INTER_LINEAR)
  return out


def _aligned_uint8(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
  """A new uint8 array whose data starts at a multiple of `align` bytes:
  TensorFlow takes such a tf.numpy_function result over without copying."""
  n = int(np.prod(shape))
  buffer = np.empty(n + align, np.uint8)
  start = -buffer.ctypes.data % align
  return buffer[start:start + n].reshape(shape)
