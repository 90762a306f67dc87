r"""AlexNet on Oxford 102 Flowers from TFDS (`oxford_flowers102`).

  python -m alexnet_jax.main --config=configs/flowers102.py \
      --workdir=/tmp/alexnet_flowers102

TFDS downloads and prepares the dataset on first use (about 330 MB; or copy
a prepared TFDS data dir and set --config.data_dir). Its 'train' and
'validation' splits hold only 10 images per class each, so both train
(2,040 images) and the 6,149-image 'test' split evaluates, every example
counted once. The paper's full-size network and its data pipeline, adapted
to a small dataset (not the paper's recipe): the two-tower network, shorter
side resized to 256, random 227 crops, flips, PCA lighting noise with
ImageNet's eigenvectors and eigenvalues (not measured on these flowers;
augment.lighting_from_data=True measures them on the training split), the
mean RGB of the training images subtracted per channel (measured once and
cached; the paper subtracted a per-pixel mean image), the paper's momentum
update, but a cosine schedule over 90 epochs rather than drops on plateaus,
and 10-crop evaluation. From scratch on 2,040 images AlexNet overfits
heavily; this config is not a tuned recipe.
"""

import ml_collections

from alexnet_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  default.use_paper_initialization(config)
  config.dataset = 'oxford_flowers102'
  config.train_split = 'train+validation'  # 2 x 1,020 images.
  config.eval_split = 'test'  # 6,149 images.
  config.ten_crop = True  # Evaluate on 4 corners + centre and their flips.
  config.cache = True  # About 1.6 GB of 256x256 images for both splits.
  config.image_size = 227
  config.resize_size = 256
  config.normalization.mean_from_data = True  # Mean RGB of the train split.
  config.model.num_classes = 102
  config.model.width = 1.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = 'cosine'
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 90.0  # 31 steps per epoch.
  config.log_every_steps = 31
  config.eval_every_steps = 310  # Every 10 epochs.
  config.checkpoint_every_steps = 310
  return config
