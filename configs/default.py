r"""The default job: the paper's two-tower AlexNet on the embedded shapes dataset.

  python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet_default

Sized for a 2-core CPU: a quarter-width network on 99x99 crops of images
resized to 112 (the paper's 227/256 ratio), 10 classes, a few minutes of
training. Everything else is the paper's recipe: two towers, LRN, overlapping
pooling, dropout 0.5, N(0, 0.01) initialization, the paper's momentum update
with weight decay 5e-4, random crops, flips and PCA lighting noise, mean
subtraction on the 0-255 scale. The dataset (`alexnet_shapes`, 5,000 training
and 1,000 validation images) is generated and written to the TFDS data dir on
first use; nothing is downloaded.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()

  # Data.
  config.dataset = 'alexnet_shapes'  # TFDS name; 'alexnet_shapes'; or 'fake'.
  config.data_dir = config_dict.placeholder(str)  # TFDS data dir (None: default).
  config.dataset_dir = config_dict.placeholder(str)  # dataset='image_folder': root/<class>/<img> or root/<split>/<class>/<img>.
  config.validation_fraction = 0.2  # Folders without split folders: share of each class held out as 'validation'.
  config.bad_images = 'skip'  # Undecodable images in a folder: 'skip' (logged and counted) or 'error'.
  config.manual_dir = config_dict.placeholder(str)  # imagenet2012 tars (ILSVRC2012_img_{train,val}.tar); None: <data_dir>/downloads/manual.
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.cache = True  # Keep decoded, resized images in memory (small sets).
  config.shuffle_buffer = 10_000
  config.ten_crop = False  # Evaluate on 4 corner + centre crops and their mirrors, softmax averaged.
  config.image_size = 99  # Crop fed to the network (paper: 227).
  config.resize_size = 112  # Shorter side before cropping (paper: 256).
  config.resize_mode = 'crop'  # 'crop' (paper: central square) or 'squash'.
  config.augment = ml_collections.ConfigDict({
      'random_crop': True,  # Random image_size crops (else the centre crop).
      'flip': True,  # Random horizontal flips.
      'lighting_std': 0.1,  # PCA lighting noise alpha std; 0 disables.
  })
  # Per-channel mean and std on the 0-255 scale; the paper subtracts the mean
  # only (std 1), ImageNet's mean by default.
  config.normalization = ml_collections.ConfigDict({
      'mean': (123.68, 116.78, 103.94),
      'std': (1.0, 1.0, 1.0),
      'mean_from_data': False,  # True: the training split's mean RGB (measured once, cached) replaces mean.
  })
  config.fake_data = ml_collections.ConfigDict({
      'num_train_examples': 1_281_167,  # Only sets steps per epoch.
      'eval_steps': 1,
  })

  # Model (alexnet_jax.models.AlexNet fields).
  config.model = ml_collections.ConfigDict({
      'num_classes': 10,
      'variant': 'paper',  # 'paper' (two towers, 227) or 'owt' (torchvision).
      'groups': 2,  # 2: two towers (conv2, conv4, conv5 grouped); 1: one.
      'lrn': True,  # Local response normalization after conv1, conv2.
      'overlap_pool': True,  # Max-pool 3/2 (True) or 2/2 (False).
      'dropout_rate': 0.5,  # On fc6 and fc7.
      'activation': 'relu',  # 'relu' or 'tanh'.
      'width': 0.25,  # Multiplier on every layer's width.
      'dtype': 'float32',  # Compute dtype; parameters stay float32.
      'initialization': 'paper',  # 'paper' N(0, 0.01), biases 1/0; or 'he'.
      'conv_impl': 'split',  # Grouped convs: 'split' per group, or 'xla'.
      'lrn_impl': 'matmul',  # LRN: 'matmul' (banded) or 'reduce_window'.
      'lrn_depth': 5,  # n
      'lrn_bias': 2.0,  # k
      'lrn_alpha': 1e-4,  # alpha (not divided by n)
      'lrn_beta': 0.75,  # beta
  })

  # Optimizer: momentum SGD with weight decay.
  config.optimizer = ml_collections.ConfigDict({
      'rule': 'paper',  # 'paper': lr inside the velocity; 'sgd': optax.sgd's.
      'learning_rate': 0.01,
      'momentum': 0.9,
      'weight_decay': 5e-4,
      'schedule': 'step',  # 'constant', 'step', 'cosine' or 'plateau'.
      'warmup_epochs': 0.0,  # Linear warmup (any schedule but plateau).
      'lr_drop_epochs': (8, 11),  # step: epochs at which lr *= lr_drop_factor.
      'lr_drop_factor': 0.1,  # step and plateau.
      'plateau_patience': 2,  # plateau: evaluations without improvement.
      'plateau_min_delta': 0.0,  # plateau: improvement in top-1 error.
      'plateau_max_drops': 3,  # plateau: the paper divided by 10 three times.
  })

  # Loop.
  config.batch_size = 64  # Global batch, split over all devices.
  config.eval_batch_size = 200
  config.num_epochs = 12.0
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.seed = 0
  config.log_every_steps = 25
  config.eval_every_steps = 312  # 0: evaluate only at the end.
  config.checkpoint_every_steps = 312  # 0: only at the end.
  config.keep_checkpoints = 2
  config.nonfinite = 'stop'  # On a NaN/Inf loss: 'stop', or 'skip' the step.
  return config
