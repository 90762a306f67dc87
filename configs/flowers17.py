r"""AlexNet on Oxford 17 Flowers, read from a folder of class folders.

  python -m alexnet_jax.main --config=configs/flowers17.py \
      --workdir=/tmp/alexnet_flowers17 --config.dataset_dir=/data/17flowers

`dataset_dir` holds one folder per class, root/<class>/<image>.jpg (17
classes of 80 images in the original set; any number of classes works if
model.num_classes matches). It has no split folders, so about 20% of each class
(`validation_fraction`) is held out for validation and the rest trains: a
file is held out when a hash of its name falls below the fraction, so the
split is the same on every run and no file changes side when files are added. A folder
with split folders, root/<split>/<class>/<image>, is read as it is split.
Images that cannot be decoded are skipped and counted in the log
(`bad_images='error'` stops with their names instead).

The paper's full-size network and its data pipeline, adapted to a small
dataset (not the paper's recipe): the two-tower network, N(0, 0.01)
initialization, shorter side resized to 256, random 227 crops, flips, PCA
lighting noise with ImageNet's eigenvectors and eigenvalues (not measured on
these flowers; --config.augment.lighting_from_data=True measures them on the
training split), the mean RGB of the training images subtracted per channel
(measured once and cached; the paper subtracted a per-pixel mean image),
the paper's momentum update with weight decay 5e-4, but a cosine learning-rate
schedule over 60 epochs (the paper: divided by 10 on plateaus, about 90
epochs), and 10-crop evaluation. From scratch on ~1,100 images this overfits;
it is not a tuned recipe. configs/flowers17_tflearn.py is tflearn's example
on the same folder. At full width
a 2-core CPU trains about 30 images/s (docs/performance.md), some 40 s an epoch;
--config.model.width=0.25 is several times faster.
"""

import ml_collections
from ml_collections import config_dict

from alexnet_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  default.use_paper_initialization(config)
  config.dataset = 'image_folder'
  config.dataset_dir = config_dict.placeholder(str)  # Root of the folder.
  config.validation_fraction = 0.2  # Held out per class (no split folders).
  config.bad_images = 'skip'  # Undecodable images: 'skip' (counted) or 'error'.
  config.ten_crop = True  # Evaluate on 4 corners + centre and their flips.
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.cache = True  # 1,360 images at 256x256: about 270 MB.
  config.image_size = 227
  config.resize_size = 256
  config.normalization.mean_from_data = True  # Mean RGB of the train split.
  config.model.num_classes = 17
  config.model.width = 1.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = 'cosine'
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 60.0  # 17 steps per epoch at 1,088 training images.
  config.log_every_steps = 17
  config.eval_every_steps = 85  # Every 5 epochs.
  config.checkpoint_every_steps = 85
  return config
