"""Input pipeline: dataset -> per-process shard -> decode -> augment -> batch.

`create_data(config)` is the entry: fake images made on the devices (JAX
alone), or `InputPipeline` over `DataOptions` read from the config. Datasets:
any TFDS name, the embedded `alexnet_shapes`, 'tfds_directory' (a TFDS dataset
in `dataset_dir`, as `alexnet_jax.prepare_dataset` writes one) or
'image_folder' (class folders, with or without split folders above them).

The paper's preprocessing: the shorter side resized to `resize_size` and the
central square kept (or the whole image squashed to it); training takes
random `image_size` crops, flips and PCA lighting noise; evaluation the
centre crop or the ten crops (corners, centre, mirrored; the batch then has a
crop axis). Images leave the pipeline as uint8 crops: each training batch
carries its flips and lighting offsets ('flip', 'light'), applied on the
accelerator (`steps.training_images`) in float before the mean is subtracted,
so the host only decodes each crop's window.

Modules, in the order the data flows: options (the config's fields, errors,
lazy TensorFlow), tfds_source and image_folder (the sources), tables (random
access), augmentation (the epoch's order and draws, NumPy), preprocess
(decode, resize, crop), means (measured means, cached by `cache`), batching
(`InputPipeline`), fake_data, prepare (a dataset resized once).

Only this package imports TensorFlow and TFDS, and lazily (when a data
function runs): the model, the train step and fake data need JAX alone.
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
  subtracted, used as given instead of measured again; `builder`: a TFDS
  builder read instead of the config's dataset."""
  if config.dataset == 'fake':
    return FakeData(config)
  return InputPipeline(DataOptions.from_config(config), builder, mean_image)
