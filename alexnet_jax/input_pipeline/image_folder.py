"""Image folders as sources: root/<split>/<class>/<image> (as
`tfds.folder_dataset.ImageFolder` reads), or root/<class>/<image> split here
into 'train' and 'validation' by a hash of each file's name. One scan
decodes every image once (cached); unreadable ones are skipped or stop the
run (`bad_images`)."""

import hashlib
import os
import time
from typing import Sequence

from absl import logging
import numpy as np

from alexnet_jax.input_pipeline import options as options_lib
from alexnet_jax.input_pipeline import tables
from alexnet_jax.input_pipeline.options import ConfigError
from alexnet_jax.input_pipeline.options import import_tensorflow

# Those of tfds.folder_dataset.ImageFolder (compared lower-case).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


class FolderSource:
  """Images in class folders; classes are the sorted folder names (numbered
  as tfds.folder_dataset.ImageFolder numbers them)."""

  def __init__(self, options: options_lib.DataOptions):
    folder = options_lib.IMAGE_FOLDER
    if not options.dataset_dir:  # A placeholder in the config files.
      raise options_lib.invalid('dataset_dir', options.dataset_dir,
                                f"dataset={folder!r} needs the folder's path")
    self.root = os.path.abspath(os.path.expanduser(options.dataset_dir))
    self.name = f'{folder}:{self.root}'
    if not os.path.isdir(self.root):
      raise options_lib.invalid('dataset_dir', options.dataset_dir,
                                'not a directory')
    self.split_files, self.class_names = list_image_folder(
        self.root, options.validation_fraction)
    self.num_classes = len(self.class_names)
    self.bad_images, self._shapes, not_jpeg = self._scan(options.cache_dir())
    self.jpeg_only = not not_jpeg
    if self.bad_images:
      self._drop_bad_images(options.bad_images)
    counts = {s: len(f) for s, f in self.split_files.items()}
    logging.info('Image folder %s: %d classes, images per split %s (%d '
                 'unreadable skipped).', self.root, self.num_classes, counts,
                 len(self.bad_images))

  def _drop_bad_images(self, policy: str) -> None:
    """Stops with an error naming the bad images (policy 'error'), or logs
    them and leaves them out of every split ('skip')."""
    bad, total = self.bad_images, sum(map(len, self.split_files.values()))
    shown = '\n'.join(f'  {os.path.join(self.root, p)}: {why}'
                      for p, why in sorted(bad.items())[:20])
    if len(bad) > 20:
      shown += f'\n  ... and {len(bad) - 20} more'
    if policy == 'error':
      raise options_lib.DataError(
          f'{len(bad)} of {total} images in {self.root} cannot be decoded '
          f'(config.bad_images="error"):\n{shown}\nRemove or replace them, '
          f'or set config.bad_images="skip".')
    logging.warning('Skipping %d of %d images in %s that cannot be decoded '
                    '(config.bad_images="skip"):\n%s', len(bad), total,
                    self.root, shown)
    self.split_files = {s: [(p, y) for p, y in files if p not in bad]
                        for s, files in self.split_files.items()}

  def _scan(self, cache_dir: str):
    """`scan_images` of every file, cached by the files' sizes and
    modification times."""
    files = sorted(p for f in self.split_files.values() for p, _ in f)
    stats = [os.stat(os.path.join(self.root, p)) for p in files]
    signature = options_lib.digest([(p, st.st_size, st.st_mtime_ns)
                                    for p, st in zip(files, stats)])
    path = os.path.join(cache_dir, 'image_folder_scans',
                        options_lib.digest(self.root)[:24] + '.json')
    cached = options_lib.read_cache(path)
    if cached and cached.get('signature') == signature and 'scan' in cached:
      return cached['scan']
    start = time.perf_counter()
    scan = scan_images(self.root, files)
    logging.info('Scanned %d images of %s in %.1f s: %d cannot be decoded.',
                 len(files), self.root, time.perf_counter() - start,
                 len(scan[0]))
    options_lib.write_cache(path, {'root': self.root, 'signature': signature,
                                   'scan': scan})
    return scan

  def _split(self, split: str) -> list[tuple[str, int]]:
    files = []
    for part in split.split('+'):
      if part not in self.split_files:
        raise ConfigError(
            f'split {part!r} (from {split!r}) is not a split of the image '
            f'folder {self.root}; its splits are {sorted(self.split_files)} '
            f'(set config.train_split / config.eval_split).')
      files += self.split_files[part]
    return files

  def shards(self, split: str, count: int) -> list[list[tuple[str, int]]]:
    files = self._split(split)
    bounds = [i * len(files) // count for i in range(count + 1)]
    return [files[a:b] for a, b in zip(bounds, bounds[1:])]

  @staticmethod
  def num_examples(shard: list[tuple[str, int]]) -> int:
    return len(shard)

  def records(self, shard: list[tuple[str, int]], start: int = 0):
    return tables.records(self.table(shard), start)

  def table(self, split: str | list[tuple[str, int]]) -> tables.MemoryTable:
    """Random access to a split, or to a shard's files."""
    files = self._split(split) if isinstance(split, str) else split
    return tables.MemoryTable(
        np.array([os.path.join(self.root, p) for p, _ in files], object),
        np.array([y for _, y in files], np.int64), are_paths=True)

  def image_shapes(self, split: str) -> np.ndarray:
    """int32 [n, 2]: (h, w) of `split`'s images in `table`'s order."""
    return np.array([self._shapes[p] for p, _ in self._split(split)],
                    np.int32).reshape(-1, 2)

  def identity(self, split: str) -> list:
    return ['folder', self.root, split,
            options_lib.digest(sorted(self._split(split)))]


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path) if not d.startswith('.') and
                os.path.isdir(os.path.join(path, d)))


def _images(path: str) -> list[str]:
  return sorted(f for f in os.listdir(path)
                if f.lower().endswith(IMAGE_EXTENSIONS) and
                not f.startswith('.') and os.path.isfile(os.path.join(path, f)))


def in_validation(file_name: str, fraction: float) -> bool:
  """Whether a file of a class folder is held out: a hash of its name alone
  (adding files moves no other), as a number in [0, 1), below `fraction`."""
  digest = hashlib.sha256(file_name.encode()).hexdigest()
  return int(digest[:16], 16) / 2**64 < fraction


def _class_images(root: str, relpath: str) -> list[str]:
  """The images of the class folder root/relpath; refuses one without any
  (an empty folder, or a link to a folder of folders, such as a parent)."""
  path = os.path.join(root, relpath)
  files = _images(path)
  if not files:
    link = (f' (a link to {os.path.realpath(path)})'
            if os.path.islink(path) else '')
    raise ConfigError(
        f'config.dataset_dir={root!r}: the class folder {path}{link} holds no '
        f'images {IMAGE_EXTENSIONS}; remove it or add its images.')
  return files


def _held_out_splits(root: str, classes: list[str], validation_fraction: float
                     ) -> dict[str, list[tuple[str, int]]]:
  """'train' and 'validation' (left out when empty) of class folders."""
  splits = {'train': [], 'validation': []}
  for label, name in enumerate(classes):
    for f in _class_images(root, name):
      split = ('validation' if in_validation(f, validation_fraction)
               else 'train')
      splits[split].append((os.path.join(name, f), label))
  held_out = {y for _, y in splits['validation']}
  missing = [c for i, c in enumerate(classes) if i not in held_out]
  if validation_fraction > 0 and missing:
    logging.warning('validation_fraction=%s holds out no file of the '
                    'classes %s (too few files).', validation_fraction,
                    missing)
  if not splits['validation']:
    del splits['validation']
  return splits


def list_image_folder(root: str, validation_fraction: float
                      ) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
  """({split: [(path relative to root, label)]}, class names) of a folder:
  its split folders, or 'train' and 'validation' (`in_validation`)."""
  top = _subdirs(root)
  if not top:
    raise ConfigError(
        f'config.dataset_dir={root!r} holds no folders: expected class '
        f'folders root/<class>/<image> or split folders root/<split>/<class>/'
        f'<image> (images: {IMAGE_EXTENSIONS}).')
  if any(_images(os.path.join(root, d)) for d in top):
    classes = top
    splits = _held_out_splits(root, classes, validation_fraction)
  else:
    classes = sorted({c for s in top for c in _subdirs(os.path.join(root, s))})
    index = {c: i for i, c in enumerate(classes)}
    splits = {s: [(os.path.join(s, c, f), index[c])
                  for c in _subdirs(os.path.join(root, s))
                  for f in _class_images(root, os.path.join(s, c))]
              for s in top}
  for s in splits:
    splits[s].sort()
  if not any(splits.values()):
    raise ConfigError(
        f'config.dataset_dir={root!r} holds no images with the extensions '
        f'{IMAGE_EXTENSIONS} in root/<class>/ or root/<split>/<class>/.')
  if len(classes) < 2:
    raise ConfigError(
        f'config.dataset_dir={root!r} holds {len(classes)} class folder(s): '
        f'{classes}; a classifier needs at least 2.')
  return splits, classes


def scan_images(root: str, relpaths: Sequence[str]
                ) -> tuple[dict[str, str], dict[str, list[int]], list[str]]:
  """({relative path: reason} of the files TensorFlow cannot read or decode,
  {relative path: [height, width]} of the others, those of them that are
  not JPEGs), decoded in parallel."""
  tf = import_tensorflow()
  paths = [os.path.join(root, p) for p in relpaths]

  def check(index, path):
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return index, tf.shape(image)[:2], tf.io.is_jpeg(data)

  ds = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(paths), dtype=tf.int64), tf.constant(paths, tf.string)))
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  good = {int(i): ([int(v) for v in shape], bool(jpeg))
          for i, shape, jpeg in ds.ignore_errors().as_numpy_iterator()}
  bad = {}
  for i, path in enumerate(paths):
    if i in good:
      continue
    try:  # Once more, eagerly, for the reason.
      tf.io.decode_image(tf.io.read_file(path), channels=3,
                         expand_animations=False)
      reason = 'failed to decode in the scan'
    except tf.errors.OpError as e:
      reason = options_lib.tf_error_message(e)
    bad[relpaths[i]] = reason
  return (bad, {relpaths[i]: shape for i, (shape, _) in good.items()},
          sorted(relpaths[i] for i, (_, jpeg) in good.items() if not jpeg))
