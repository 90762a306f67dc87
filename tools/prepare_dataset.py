r"""Writes a dataset resized once to the paper's 256 pixels, as TFDS shards.

  python -m alexnet_jax.tools.prepare_dataset --config=configs/imagenet_paper.py \
      --output_dir=/data/imagenet2012_256 [--config.manual_dir=...]

then train on it with the same config and

  --config.dataset=tfds_directory --config.dataset_dir=/data/imagenet2012_256

The paper stored ImageNet resized so (shorter side 256, central square);
decoding those is several times cheaper than the originals (about 400x350)
and leaves the crops no resizing. Each image of the config's dataset (any
TFDS name or an image folder) is resized as the pipeline would, kept whole
or as its central square (--central_square), re-encoded as JPEG and written
as array_record shards (the random access the global shuffle needs) with
TFDS's metadata. Resumable: shard i holds examples [i * n, (i + 1) * n) in
the source's order, written under a temporary name, renamed when complete
and skipped by a re-run; the metadata is written last.
"""

import os

from absl import flags
from ml_collections import config_flags

from alexnet_jax import cli
from alexnet_jax.input_pipeline import prepare as prepare_lib
from alexnet_jax.input_pipeline.options import DataOptions

config_flags.DEFINE_config_file('config', None, 'A training config file.',
                                lock_config=False)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Where the TFDS dataset is written.')
_SPLITS = flags.DEFINE_list(
    'splits', None, 'Source splits to write (default: the config\'s '
    'train_split and eval_split, written as "train" and "validation").')
_EXAMPLES_PER_SHARD = flags.DEFINE_integer(
    'examples_per_shard', 1024, 'Examples per shard.')
_CENTRAL_SQUARE = flags.DEFINE_boolean(
    'central_square', True,
    'Keep the central resize_size square (the paper); else the whole image '
    'with its shorter side resized.')
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 95,
                                     'Quality of the re-encoded JPEGs.')
flags.mark_flags_as_required(['config', 'output_dir'])


def main(argv):
  del argv
  prepare_lib.prepare(
      DataOptions.from_config(flags.FLAGS.config),
      os.path.abspath(_OUTPUT_DIR.value), _SPLITS.value,
      _EXAMPLES_PER_SHARD.value, _CENTRAL_SQUARE.value, _JPEG_QUALITY.value)


def run():
  """Console-script entry point (`alexnet-prepare-dataset`)."""
  cli.run_console_script(main, __name__)


if __name__ == '__main__':
  run()
