"""Input pipeline: dataset -> per-process shard -> decode -> augment -> batch.

Datasets (`config.dataset`): any TFDS name, the embedded `alexnet_shapes`,
'tfds_directory' (a TFDS dataset in `config.dataset_dir`, as
`alexnet_jax.prepare_dataset` writes one) or 'image_folder' (class folders,
with or without split folders above them).

The paper's preprocessing: the shorter side resized to `resize_size` and the
central square kept (or the whole image squashed to a square); training takes
random `image_size` crops, random horizontal flips and PCA lighting noise;
evaluation takes the centre crop, or the four corner crops, the centre crop
and their mirror images (`config.ten_crop`; the batch then has a crop axis:
[devices, per_device, 10, H, W, 3]). Images leave the pipeline as uint8 RGB
crops; the accelerator does the rest (`steps.training_images`): each training
batch carries its random flips and PCA lighting offsets ('flip', 'light'),
which are applied there in float, as the paper adds the noise (unrounded,
unclipped), before the mean is subtracted (`config.normalization.mean`, or
`TFDSData.normalization_mean` measured on the training split when
`config.normalization.mean_from_data`). The host's work per image is thus
the decoding of its crop window and nothing else that costs.

The modules, in the order the data flows:
  options       the config's data fields, DataError, TensorFlow's lazy import
  tfds_source   TFDS datasets (prepared on first use as array_record)
  image_folder  image folders: listing, the hash split, the bad-image scan
  sources       the source interface; `make_source` picks one
  tables        random access to a split's records
  augmentation  the epoch's order and each example's augmentation (NumPy)
  preprocess    decoding, resizing and cropping one image (TensorFlow ops)
  means         the training split's mean RGB and mean image, cached
  cache         the cache files
  batching      `TFDSData`: the train and eval batches of this process

This package is the only one that imports TensorFlow and TFDS, and it does so
lazily (when a data function runs), so the model, the train step and
fake-data runs need JAX alone.
"""

from alexnet_jax.input_pipeline.augmentation import draw_augmentation
from alexnet_jax.input_pipeline.augmentation import epoch_order
from alexnet_jax.input_pipeline.augmentation import LIGHTING_EIGVAL
from alexnet_jax.input_pipeline.augmentation import LIGHTING_EIGVEC
from alexnet_jax.input_pipeline.batching import TFDSData
from alexnet_jax.input_pipeline.image_folder import list_image_folder
from alexnet_jax.input_pipeline.image_folder import scan_images
from alexnet_jax.input_pipeline.options import DataError
from alexnet_jax.input_pipeline.options import DataOptions
from alexnet_jax.input_pipeline.options import IMAGE_FOLDER
from alexnet_jax.input_pipeline.options import import_tensorflow
from alexnet_jax.input_pipeline.options import import_tfds
from alexnet_jax.input_pipeline.options import TFDS_DIRECTORY
from alexnet_jax.input_pipeline.preprocess import Preprocess
from alexnet_jax.input_pipeline.preprocess import preprocess_from_config
from alexnet_jax.input_pipeline.preprocess import resize_uint8
from alexnet_jax.input_pipeline.sources import make_source
from alexnet_jax.input_pipeline.tables import DataSourceTable

__all__ = [
    'DataError', 'DataOptions', 'DataSourceTable', 'IMAGE_FOLDER',
    'LIGHTING_EIGVAL', 'LIGHTING_EIGVEC', 'Preprocess', 'TFDSData',
    'TFDS_DIRECTORY', 'draw_augmentation', 'epoch_order', 'import_tensorflow',
    'import_tfds', 'list_image_folder', 'make_source', 'preprocess_from_config',
    'resize_uint8', 'scan_images',
]
