r"""Writes a dataset resized once to the paper's 256 pixels, as resumable TFDS
array_record shards (README: ImageNet).

  python -m alexnet_jax.tools.prepare_dataset \
      --config=configs/imagenet_paper.py --output_dir=/data/imagenet2012_256
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
