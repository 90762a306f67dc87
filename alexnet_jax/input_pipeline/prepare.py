"""Writes a dataset resized once (the paper's storage) as TFDS array_record
shards: the library behind `alexnet_jax.tools.prepare_dataset`."""

import glob
import io
import math
import os
import time

from absl import logging

from alexnet_jax.input_pipeline.options import ConfigError
from alexnet_jax.input_pipeline.options import DataOptions
from alexnet_jax.input_pipeline.options import import_tensorflow
from alexnet_jax.input_pipeline.options import import_tfds
from alexnet_jax.input_pipeline.preprocess import resize_uint8
from alexnet_jax.input_pipeline.tfds_source import make_source

DATASET_NAME = 'prepared'  # The TFDS name in the shards' file names.


def _shard_path(output_dir: str, split: str, index: int, count: int) -> str:
  return os.path.join(
      output_dir,
      f'{DATASET_NAME}-{split}.array_record-{index:05d}-of-{count:05d}')


def _encoded_examples(source, shard, preprocess, start: int, count: int,
                      central_square: bool, quality: int):
  """(JPEG bytes, label) of examples [start, start + count) of `shard`."""
  tf = import_tensorflow()

  def encode(record):
    image = preprocess.decode(record['image'])
    if central_square:
      image = preprocess.resize_square(image)
    else:
      image = resize_uint8(image, preprocess.resized_shape(tf.shape(image)[:2]))
    return tf.io.encode_jpeg(image, quality=quality), record['label']

  ds = source.records(shard, start).take(count)
  ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def write_split(source, split: str, name: str, output_dir: str, preprocess,
                features, examples_per_shard: int, central_square: bool,
                quality: int):
  """Writes the shards of one split not yet written; returns its SplitInfo."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tfds = import_tfds()
  shard = source.shards(split, 1)[0]
  total = source.num_examples(shard)
  count = max(1, math.ceil(total / examples_per_shard))
  serializer = tfds.core.example_serializer.ExampleSerializer(
      features.get_serialized_info())
  lengths = [min(examples_per_shard, total - i * examples_per_shard)
             for i in range(count)]
  for path in glob.glob(glob.escape(_shard_path(output_dir, name, 0, count))
                        .replace('00000-of', '*-of') + '.tmp*'):
    os.remove(path)  # From a run killed mid-shard.
  start_time, done = time.perf_counter(), 0
  for index, length in enumerate(lengths):
    path = _shard_path(output_dir, name, index, count)
    if os.path.exists(path):
      continue
    tmp = f'{path}.tmp{os.getpid()}'
    try:
      # As TFDS writes array_record: one record per group, for random access.
      writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')
      for jpeg, label in _encoded_examples(
          source, shard, preprocess, index * examples_per_shard, length,
          central_square, quality):
        example = features.encode_example(
            {'image': io.BytesIO(jpeg), 'label': int(label)})
        writer.write(serializer.serialize_example(example))
      writer.close()
      os.replace(tmp, path)
    finally:  # An interrupted shard leaves nothing that looks written.
      if os.path.exists(tmp):
        os.remove(tmp)
    done += length
    rate = done / (time.perf_counter() - start_time)
    logging.info('%s: shard %d of %d written (%d images); %.0f images/s, '
                 'about %.0f min left.', name, index + 1, count, length, rate,
                 sum(lengths[index + 1:]) / rate / 60)
  num_bytes = sum(os.path.getsize(_shard_path(output_dir, name, i, count))
                  for i in range(count))
  return tfds.core.SplitInfo(name=name, shard_lengths=lengths,
                             num_bytes=num_bytes)


def prepare(options: DataOptions, output_dir: str, splits=None,
            examples_per_shard=1024, central_square=True,
            jpeg_quality=95) -> str:
  """Writes the options' dataset resized into `output_dir`; returns it."""
  tfds = import_tfds()
  if examples_per_shard < 1:
    raise ConfigError(f'--examples_per_shard={examples_per_shard} is '
                      f'invalid: expected a positive number.')
  if not 1 <= jpeg_quality <= 100:
    raise ConfigError(
        f'--jpeg_quality={jpeg_quality} is invalid: expected 1 to 100.')
  source = make_source(options)
  preprocess = options.preprocess
  names = ({s: s for s in splits} if splits else
           {options.train_split: 'train', options.eval_split: 'validation'})
  # With central squares every image is the same size: the pipeline then
  # plans each crop's window ahead.
  square = preprocess.resize_size if central_square else None
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(square, square, 3),
                                   encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(names=list(source.class_names))})
  os.makedirs(output_dir, exist_ok=True)
  infos = [write_split(source, split, name, output_dir, preprocess, features,
                       examples_per_shard, central_square, jpeg_quality)
           for split, name in names.items()]
  tfds.folder_dataset.write_metadata(
      data_dir=output_dir, features=features, split_infos=infos,
      check_data=False,
      description=(f'{source.name} resized to {preprocess.resize_size} '
                   f'({preprocess.resize_mode}; central square: '
                   f'{central_square}; JPEG quality {jpeg_quality}) by '
                   f'alexnet_jax.tools.prepare_dataset.'))
  logging.info('Prepared %s in %s: splits %s.', source.name, output_dir,
               {i.name: i.num_examples for i in infos})
  return output_dir
