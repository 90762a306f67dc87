r"""The default job: the two-tower AlexNet on the embedded shapes dataset.

  python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet_default

Sized for a 2-core CPU (a few minutes, dataset generation included): a
quarter-width network on 67x67 crops (the smallest input the paper's topology
admits) of images resized to 76, 10 classes, 24 epochs of 5,000 images.
`alexnet_shapes` (5,000 training and 1,000 validation 256x256 JPEGs of ten
geometric shapes on cluttered backgrounds, colours independent of the class)
is generated into the TFDS data dir on first use; nothing is downloaded.

The paper's recipe throughout (two towers, LRN as printed, overlapping
pooling, dropout 0.5, the paper's momentum update with weight decay 5e-4, lr
0.01 divided by 10 three times, random crops, flips, PCA lighting noise, mean
subtraction) except where the small budget needs otherwise, each a field to
flip back:
* initialization='he' with inputs scaled by the ImageNet std: the paper's
  N(0, 0.01) init leaves a quarter-width net at chance for hundreds of steps
  (the "flat loss" Caffe also reported), which a 5-minute job cannot afford;
* a half-epoch linear learning-rate warmup, so early updates do not kill ReLUs;
* batch 32, and two learning-rate drops, at epochs 18 and 22, rather than
  three when the validation error stops improving.
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
  config.ten_crop = False  # Evaluate on 4 corner + centre crops and their mirrors, softmax averaged.
  config.final_ten_crop = False  # True: the last evaluation also averages ten crops, logged as eval10_* beside eval_*.
  config.image_size = 67  # Crop fed to the network (paper: 227).
  config.resize_size = 76  # Shorter side before cropping (paper: 256).
  config.resize_mode = 'crop'  # 'crop' (paper: central square) or 'squash'.
  config.augment = ml_collections.ConfigDict({
      'random_crop': True,  # Random image_size crops (else the centre crop).
      'flip': True,  # Random horizontal flips.
      'lighting_std': 0.1,  # PCA lighting noise alpha std; 0 disables.
      # PCA lighting's eigenvectors and eigenvalues: ImageNet's (False), or
      # the training split's RGB covariance (True; measured once, cached).
      'lighting_from_data': False,
  })
  # Per-channel mean and std on the 0-255 scale (ImageNet's): this config
  # subtracts one RGB mean from every pixel; the paper subtracted the
  # per-pixel mean image of its training set (mean_image=True, as
  # configs/imagenet_paper.py does) and divided by nothing (std 1).
  config.normalization = ml_collections.ConfigDict({
      'mean': (123.68, 116.78, 103.94),
      'std': (58.393, 57.12, 57.375),
      'mean_from_data': False,  # True: the training split's mean RGB (measured once, cached) replaces mean.
      # True: the paper's per-pixel mean image of the training split (measured once at resize_size,
      # cached; cropped and flipped with each image) is subtracted instead of mean.
      'mean_image': False,
  })
  config.fake_data = ml_collections.ConfigDict({
      'num_train_examples': 1_281_167,  # Only sets steps per epoch.
      'eval_steps': 1,
  })

  # Model (alexnet_jax.models.AlexNet fields).
  config.model = ml_collections.ConfigDict({
      'num_classes': 10,
      'variant': 'paper',  # 'paper' (two towers, LRN, 227), 'owt' (torchvision's: one tower, no LRN, 224) or 'tflearn' (tflearn's example: 'SAME' padding, 227).
      # groups and lrn: None (unset) takes the variant's (paper: 2, True; owt: 1, False; tflearn: 1, True).
      'groups': config_dict.placeholder(int),  # 2: two towers (conv2, conv4, conv5 grouped); 1: one.
      'lrn': config_dict.placeholder(bool),  # Local response normalization after conv1, conv2.
      'lrn_across_towers': False,  # True: LRN's window crosses the towers.
      'overlap_pool': True,  # Max-pool 3/2 (True) or 2/2 (False).
      'dropout_rate': 0.5,  # On fc6 and fc7.
      'activation': 'relu',  # 'relu' or 'tanh'.
      'width': 0.25,  # Multiplier on every layer's width.
      'dtype': 'float32',  # Compute dtype; parameters stay float32.
      'initialization': 'he',  # 'paper': N(0, 0.01), biases 1/0; 'he'; 'tflearn' (uniform_scaling convs, truncated_normal(0.02) dense).
      # The paper's LRN constants (None: the variant's; tflearn's: n=11, k=1).
      'lrn_depth': 5,  # n: channels in the window.
      'lrn_bias': 2.0,  # k
      'lrn_alpha': 1e-4,  # alpha
      'lrn_beta': 0.75,  # beta
      # 'paper': alpha times the window's sum, as the paper prints it;
      # 'cuda_convnet': alpha / n times it, as cuda-convnet and Caffe compute it.
      'lrn_convention': 'paper',
  })

  # How the steps run: a choice that changes neither the function nor the
  # parameters; docs/performance.md has the measurements behind it.
  config.execution = ml_collections.ConfigDict({
      # XLA:CPU only: the library for convolutions, 'eigen' or 'xla_default'
      # (jax 0.10's YNNPACK). Ignored on GPU and TPU.
      'xla_cpu_conv_library': 'eigen',
  })

  # How the step is split over the devices (docs/parallelism.md): 'data'
  # (each device a replica, gradients averaged), 'towers' (the paper's split:
  # each tower on its own device, device pairs x data), 'hybrid' (Krizhevsky
  # 2014: convolutions data-parallel, fully connected layers split by neurons).
  config.parallelism = 'data'
  # 'hybrid' only: 'global' (one update of every layer on the whole batch, as
  # one device) or 'per_worker' (Krizhevsky 2014 as published: fc6-fc8
  # updated on each device's share in turn; alexnet_jax/owt.py).
  config.hybrid_fc_batch = 'global'
  # 'per_worker' only: the convolutional layers' learning rate times 1
  # ('none'), K ('linear', cuda-convnet2's hybrid file) or sqrt(K) ('sqrt'),
  # K the devices; the fully connected layers keep optimizer.learning_rate.
  config.hybrid_conv_lr_scaling = 'none'

  # Optimizer: momentum SGD with weight decay.
  config.optimizer = ml_collections.ConfigDict({
      'rule': 'paper',  # 'paper': lr inside the velocity; 'sgd': optax.sgd's.
      'learning_rate': 0.01,
      'momentum': 0.9,
      'weight_decay': 5e-4,
      'decay_biases': True,  # The paper decays every weight; False: biases are not decayed (Caffe's AlexNet).
      'schedule': 'step',  # 'constant', 'step', 'cosine' or 'plateau'.
      'warmup_epochs': 0.5,  # Linear warmup (any schedule but plateau).
      'lr_drop_epochs': (18, 22),  # step: epochs at which lr *= lr_drop_factor.
      'lr_drop_factor': 0.1,  # step and plateau.
      'plateau_patience': 2,  # plateau: evaluations in a row without improvement before a drop.
      'plateau_min_delta': 0.0,  # plateau: an eval improves if top-1 error < best - min_delta (PyTorch ReduceLROnPlateau, threshold_mode='abs').
      'plateau_max_drops': 3,  # plateau: the paper divided by 10 three times.
  })

  # Loop.
  config.batch_size = 32  # Global batch, split over all devices.
  config.eval_batch_size = 200
  config.num_epochs = 24.0
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.seed = 0
  config.log_every_steps = 52
  config.eval_every_steps = 624  # 0: evaluate only at the end (4 epochs).
  config.checkpoint_every_steps = 624  # 0: only at the end.
  config.keep_checkpoints = 2
  config.keep_best_checkpoint = False  # True: also keep the best evaluation's state (eval_top1) in checkpoints_best/.
  config.nonfinite = 'stop'  # On a NaN/Inf loss: 'stop', or 'skip' the step.
  # > 0: a jax.profiler trace of this many steps after the first log step,
  # in workdir/profile (TensorBoard's profile tab, Perfetto).
  config.profile_steps = 0
  config.max_consecutive_skips = 10  # nonfinite='skip': stop (diverged) after this many skipped steps in a row.
  # Resume even if the run's identity (data, model, optimizer, seed, batch: alexnet_jax/config_fields.py) changes.
  config.allow_config_change = False
  # Where no checkpoint can be read but records remain: train anew, keeping the old records in old_records.<time>/.
  config.start_over = False
  return config


def use_paper_initialization(config: ml_collections.ConfigDict) -> None:
  """Switches a config derived from this one back to the paper's own choices
  where the CPU budget made it deviate: N(0, 0.01) initialization on inputs
  with the mean subtracted only (0-255 scale), and no warmup."""
  config.model.initialization = 'paper'
  config.normalization.std = (1.0, 1.0, 1.0)
  config.optimizer.warmup_epochs = 0.0
