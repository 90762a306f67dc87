"""The paper's preprocessing in TensorFlow ops: decode, resize the shorter
side to `resize_size` and keep the central square (or squash the image to
it), then crop `image_size`. Training crops decode only their window of the
original image and resize it with OpenCV (docs/input_pipeline.md, The
resampling); the evaluation crops work on NumPy squares too (`predict`)."""

import dataclasses
import functools

import numpy as np

from alexnet_jax.input_pipeline.options import import_tensorflow

NUM_TEN_CROPS = 10


@functools.cache  # Called for every group of resized crops: set threads once.
def import_cv2():
  """OpenCV, single-threaded: tf.data already runs the resizes in parallel."""
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)
  return cv2


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
    return import_tensorflow().io.decode_image(image_bytes, channels=3,
                                               expand_animations=False)

  def resized_shape(self, shape):
    """[..., 2] (h, w) of images once resized, before the central square (in
    a graph, or eagerly on NumPy arrays: one arithmetic for both)."""
    tf = import_tensorflow()
    size = self.resize_size
    shape = tf.cast(shape, tf.float32)
    if self.resize_mode == 'squash':
      return tf.fill(tf.shape(shape), size)
    scale = size / tf.reduce_min(shape, axis=-1, keepdims=True)
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
    return self.resize_square(self.decode(image_bytes))

  def crop_window(self, shape, offset):
    """[..., 4] [top, left, height, width]: the window of the original images
    of `shape` [..., 2] that becomes the crop at `offset` (y, x) of the
    resized square (in a graph, or eagerly on int32 NumPy arrays)."""
    tf = import_tensorflow()
    target = self.resized_shape(shape)
    scale = tf.cast(shape, tf.float32) / tf.cast(target, tf.float32)
    start = (target - self.resize_size) // 2 + offset
    start = tf.cast(tf.round(tf.cast(start, tf.float32) * scale), tf.int32)
    size = tf.cast(tf.round(self.image_size * scale), tf.int32)
    size = tf.clip_by_value(size, 1, shape)
    start = tf.clip_by_value(start, 0, shape - size)
    return tf.concat([start, size], axis=-1)

  def crops_from_bytes(self, images_bytes, offsets, jpeg_only: bool = False):
    """[k, image_size, image_size, 3]: the crops at `offsets` [k, 2] of the
    resized squares of the k encoded images `images_bytes` (a list), JPEGs
    decoded only about their window. `jpeg_only` skips the format check."""
    tf = import_tensorflow()

    def window(image_bytes, offset):  # (decoded image, the window's box)
      def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)[:2]
        padded, box = _with_margin(self.crop_window(shape, offset), shape)
        return tf.io.decode_and_crop_jpeg(image_bytes, padded, channels=3), box

      def other():
        image = self.decode(image_bytes)
        return image, self.crop_window(tf.shape(image)[:2], offset)
      return (jpeg() if jpeg_only else
              tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other))

    windows = [window(b, o) for b, o in zip(images_bytes, tf.unstack(offsets))]
    return resize_crops([image for image, _ in windows],
                        tf.stack([box for _, box in windows]), self.image_size)

  def plan_jpeg_crops(self, shapes: np.ndarray, offsets: np.ndarray
                      ) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    """The crops at `offsets` [n, 2] of JPEGs of known `shapes` [n, 2],
    planned ahead: ((windows, where), resize). windows [n, 4]: what to
    decode; where: the crop's box in it [n, 4] if `resize` (any crop needs
    resizing), else the crop's start [n, 3]."""
    shapes = np.asarray(shapes, np.int32)
    window = self.crop_window(shapes, np.asarray(offsets, np.int32))
    windows, where = (t.numpy() for t in _with_margin(window, shapes))
    resize = bool(np.any(where[:, 2:] != self.image_size))
    if not resize:
      where = np.pad(where[:, :2], ((0, 0), (0, 1)))
    return (windows, where), resize

  def crops_from_planned_jpegs(self, images_bytes, windows, where,
                               resize: bool):
    """The crops of the JPEGs `images_bytes` that `plan_jpeg_crops` planned."""
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
    stack = np.stack if isinstance(square, np.ndarray) else (
        import_tensorflow().stack)
    return stack(crops)


def _with_margin(window, shape):
  """(`window` [..., 4] and a pixel more on every side, inside `shape`; the
  window's box in it). libjpeg's chroma upsampling at a window's edge lacks
  the neighbours a full decode uses; with them the pixels are the same."""
  tf = import_tensorflow()
  start, extent = window[..., :2], window[..., 2:]
  low = tf.maximum(start - 1, 0)
  high = tf.minimum(start + extent + 1, shape)
  return (tf.concat([low, high - low], -1),
          tf.concat([start - low, extent], -1))


def resize_uint8(image, size, antialias: bool = True):
  """Bilinear resize of a uint8 image to `size` [h, w], rounded to uint8."""
  tf = import_tensorflow()
  image = tf.image.resize(image, size, method='bilinear', antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_crops(images, boxes, size: int):
  """uint8 [k, size, size, 3]: the `boxes` [k, 4] ([top, left, height,
  width]) of the k uint8 `images` [h, w, 3] (a list), each resized by
  OpenCV's bilinear (several times faster than tf.image.resize's)."""
  tf = import_tensorflow()
  import_cv2()  # A missing OpenCV fails here, not in tf.data's threads.
  out = tf.numpy_function(functools.partial(_resize_boxes, size=size),
                          [boxes, *images], tf.uint8, stateful=False)
  return tf.ensure_shape(out, (len(images), size, size, 3))


def _resize_boxes(boxes: np.ndarray, *images: np.ndarray,
                  size: int) -> np.ndarray:
  cv2 = import_cv2()
  # Aligned to 64 bytes: TensorFlow then takes the result without a copy.
  n, align = len(images) * size * size * 3, 64
  buffer = np.empty(n + align, np.uint8)
  start = -buffer.ctypes.data % align
  out = buffer[start:start + n].reshape((len(images), size, size, 3))
  for image, (top, left, height, width), crop in zip(images, boxes, out):
    cv2.resize(image[top:top + height, left:left + width], (size, size),
               dst=crop, interpolation=cv2.INTER_LINEAR)
  return out
