"""Input pipeline: dataset -> per-process shard -> decode -> augment -> batch.

`create_data(config)` builds it: `FakeData` (made on the devices, JAX alone)
or `InputPipeline` over `DataOptions`. Only this package and the embedded
dataset (datasets/) import TensorFlow and TFDS, lazily; docs/input_pipeline.md
describes its modules and design.
"""

from alexnet_jax.input_pipeline.augmentation import draw_augmentation
from alexnet_jax.input_pipeline.augmentation import epoch_order
from alexnet_jax.input_pipeline.augmentation import LIGHTING_EIGVAL
from alexnet_jax.input_pipeline.augmentation import LIGHTING_EIGVEC
from alexnet_jax.input_pipeline.batching import InputPipeline
from alexnet_jax.input_pipeline.fake_data import FakeData
from alexnet_jax.input_pipeline.image_folder import list_image_folder
from alexnet_jax.input_pipeline.image_folder import scan_images
from alexnet_jax.input_pipeline.options import DataError
from alexnet_jax.input_pipeline.options import DataOptions
from alexnet_jax.input_pipeline.options import IMAGE_FOLDER
from alexnet_jax.input_pipeline.options import import_tfds
from alexnet_jax.input_pipeline.options import TFDS_DIRECTORY
from alexnet_jax.input_pipeline.preprocess import Preprocess
from alexnet_jax.input_pipeline.tables import DataSourceTable


def create_data(config, mean_image=None, builder=None):
  """The data `config.dataset` names. `mean_image`: the per-pixel mean a run
  subtracted, used instead of measuring it again; `builder`: a TFDS builder
  read instead of the config's dataset."""
  if config.dataset == 'fake':
    return FakeData(config.model.num_classes, config.image_size,
                    config.batch_size, config.eval_batch_size, config.seed,
                    config.fake_data.num_train_examples,
                    config.fake_data.eval_steps)
  return InputPipeline(DataOptions.from_config(config), builder, mean_image)
