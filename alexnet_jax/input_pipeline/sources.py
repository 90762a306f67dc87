"""A dataset as a source of records, whatever it is stored as.

A source (`TFDSSource`, `FolderSource`) has `name`, `num_classes`,
`class_names`, `jpeg_only` (every image a JPEG) and `image_shape` ((h, w) when
every image has it, else None), and
  * shards(split, count, drop_remainder): `split` in `count` parts, one per
    process (checking the split's name);
  * num_examples(shard), size(split): the records in a shard or a split;
  * records(shard): a tf.data dataset of records {'image', 'label'}, where
    'image' is whatever `read(record)` turns into encoded image bytes (the
    bytes themselves for TFDS, a file path for folders);
  * table(split): random access to the split (`tables`);
  * image_shapes(split): int32 [n, 2] (h, w) of its images in the table's
    order, or None where not known without decoding;
  * identity(split): what identifies the split's content, for cache keys.
"""

from __future__ import annotations

from alexnet_jax.input_pipeline.image_folder import FolderSource
from alexnet_jax.input_pipeline.options import DataOptions
from alexnet_jax.input_pipeline.options import IMAGE_FOLDER
from alexnet_jax.input_pipeline.tfds_source import get_builder
from alexnet_jax.input_pipeline.tfds_source import TFDSSource


def make_source(config, options: DataOptions, builder=None):
  """The source of `config.dataset`, or of `builder` when one is given."""
  if builder is not None:
    return TFDSSource(builder)
  if config.dataset == IMAGE_FOLDER:
    return FolderSource(options)
  return TFDSSource(get_builder(config, options))
