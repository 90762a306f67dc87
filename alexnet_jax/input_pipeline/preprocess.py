"""The paper's preprocessing of one image, in TensorFlow ops: decode, resize
the shorter side to `resize_size` and keep the central square (or squash the
whole image to it), then crop `image_size` (training: at an offset drawn in
`augmentation`; evaluation: the centre crop or the ten crops).

Training crops skip most of the decoding: the crop window is mapped back to
the original image and only that window is decoded
(`tf.io.decode_and_crop_jpeg`) and then resized (plain bilinear). Where the
image's shorter side already equals `resize_size` (e.g. 256x256 JPEGs at
resize_size=256, as `alexnet_jax.prepare_dataset` writes them) this is
exactly resize-then-crop with no resizing; otherwise it resamples the same
window, with a sub-pixel difference in the sampling grid and no antialiasing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alexnet_jax.input_pipeline.options import import_tensorflow

NUM_TEN_CROPS = 10


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """The paper's preprocessing, in TensorFlow ops (config fields in comments)."""
  image_size: int  # config.image_size: the crop fed to the network (227).
  resize_size: int  # config.resize_size: shorter side before cropping (256).
  resize_mode: str  # 'crop' (paper) or 'squash' (Caffe): to resize_size^2.
  random_crop: bool  # config.augment.random_crop
  flip: bool  # config.augment.flip
  lighting_std: float  # config.augment.lighting_std; 0 disables.

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

  def crop_from_bytes(self, image_bytes, offset, jpeg_only: bool = False):
    """The image_size crop at `offset` of the resized square, decoding (for
    JPEGs) only the crop's window of the original image. `jpeg_only` (every
    image of the dataset a JPEG) skips the per-image format check, a
    conditional that costs tf.data a good share of the decode's time."""
    tf = import_tensorflow()
    size = self.image_size

    def jpeg():
      shape = tf.image.extract_jpeg_shape(image_bytes)[:2]
      window = self.crop_window(shape, offset)
      start, extent = window[:2], window[2:]
      # One more pixel on every side, cut off after decoding: libjpeg's
      # chroma upsampling at a window's edge lacks the neighbours that a
      # full decode uses; with them the pixels equal the full decode's.
      low = tf.maximum(start - 1, 0)
      high = tf.minimum(start + extent + 1, shape)
      padded = tf.io.decode_and_crop_jpeg(
          image_bytes, tf.concat([low, high - low], 0), channels=3)
      return tf.slice(padded, tf.concat([start - low, [0]], 0),
                      tf.concat([extent, [3]], 0))

    def other():
      image = self.decode(image_bytes)
      window = self.crop_window(tf.shape(image)[:2], offset)
      return tf.slice(image, tf.concat([window[:2], [0]], 0),
                      tf.concat([window[2:], [3]], 0))

    crop = jpeg() if jpeg_only else tf.cond(tf.io.is_jpeg(image_bytes), jpeg,
                                            other)
    # Plain bilinear: an antialiased resize costs more than the decode.
    crop = tf.cond(tf.reduce_all(tf.equal(tf.shape(crop)[:2], size)),
                   lambda: crop,
                   lambda: resize_uint8(crop, [size, size], antialias=False))
    return tf.ensure_shape(crop, (size, size, 3))

  def square_jpeg_windows(self, offsets: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """For JPEGs that are already the resized square (resize_size^2, as
    `alexnet_jax.prepare_dataset` writes them), the windows to decode for
    crops at `offsets` [n, 2], worked out ahead in NumPy: ([n, 4] windows
    with the extra pixel on each side, [n, 3] where the crop starts in
    them). Fewer small ops per image is what tf.data is fastest at."""
    low = np.maximum(offsets - 1, 0)
    high = np.minimum(offsets + self.image_size + 1, self.resize_size)
    windows = np.concatenate([low, high - low], axis=1).astype(np.int32)
    starts = np.concatenate([offsets - low, np.zeros_like(low[:, :1])], 1)
    return windows, starts.astype(np.int32)

  def crop_from_square_jpeg(self, image_bytes, window, start):
    """The crop that `square_jpeg_windows` planned: decode the window,
    drop its extra border."""
    tf = import_tensorflow()
    padded = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
    return tf.slice(padded, start, (self.image_size, self.image_size, 3))

  def crop_from_square(self, square, offset):
    size = self.image_size
    return square[offset[0]:offset[0] + size, offset[1]:offset[1] + size]

  def center_crop(self, square):
    tf = import_tensorflow()
    margin = (self.resize_size - self.image_size) // 2
    return self.crop_from_square(square, tf.constant([margin, margin],
                                                     tf.int32))

  def ten_crops(self, square):
    """[10, image_size, image_size, 3]: the four corner crops, the centre crop,
    then the same five mirrored."""
    tf = import_tensorflow()
    last = self.resize_size - self.image_size
    mid = last // 2
    crops = [self.crop_from_square(square, (y, x))
             for y, x in ((0, 0), (0, last), (last, 0), (last, last),
                          (mid, mid))]
    crops += [tf.reverse(c, axis=[1]) for c in crops]
    return tf.stack(crops)


def resize_uint8(image, size, antialias: bool = True):
  """Bilinear resize of a uint8 image to `size` [h, w], rounded back to uint8."""
  tf = import_tensorflow()
  image = tf.image.resize(image, size, method='bilinear', antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def preprocess_from_config(config) -> Preprocess:
  return Preprocess(image_size=config.image_size,
                    resize_size=config.resize_size,
                    resize_mode=config.resize_mode,
                    random_crop=config.augment.random_crop,
                    flip=config.augment.flip,
                    lighting_std=config.augment.lighting_std)
