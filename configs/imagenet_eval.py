r"""Evaluate saved weights on ImageNet (ILSVRC-2012) validation: no training.

  python -m alexnet_jax.tools.evaluate --config=configs/imagenet_eval.py \
      --workdir=/tmp/alexnet_eval --config.checkpoint=/path/to/alexnet-owt.pth

Set up for torchvision's AlexNet ("one weird trick", variant 'owt': one tower,
no LRN): the shorter side resized to 256, the central 224x224 crop, and
torchvision's normalization (mean 0.485, 0.456, 0.406 and std 0.229, 0.224,
0.225 of the 0-255 scale). `config.checkpoint` may also be an orbax checkpoint
(a workdir) or an `.npz` of converted params; for the paper's two-tower net
with LRN add --config.model.variant=paper --config.image_size=227 and the
normalization it was trained with.
`imagenet2012` must already be prepared in the TFDS `data_dir`.
torchvision reports 56.52% top-1 / 79.07% top-5 accuracy for its weights; this
pipeline resizes with TensorFlow's antialiased bilinear filter and floors the
crop offset, so expect a few tenths of a point of difference.
"""

import ml_collections
from ml_collections import config_dict

from alexnet_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  # An orbax checkpoint or workdir, a PyTorch .pth/.pt state_dict, or an .npz.
  config.checkpoint = config_dict.placeholder(str)

  config.dataset = 'imagenet2012'
  config.eval_split = 'validation'  # Every example is evaluated once.
  config.train_split = 'validation'  # Never read; no train split needed.
  config.cache = False
  config.image_size = 224  # torchvision's centre crop.
  config.resize_size = 256  # Shorter side before the crop.
  config.resize_mode = 'crop'
  config.normalization.mean = (0.485 * 255, 0.456 * 255, 0.406 * 255)
  config.normalization.std = (0.229 * 255, 0.224 * 255, 0.225 * 255)

  config.model.num_classes = 1000
  config.model.variant = 'owt'  # groups=1, lrn=False: the variant's own.
  config.model.width = 1.0
  config.model.dropout_rate = 0.5  # Unused at evaluation.

  config.eval_batch_size = 400  # Divisible by 1, 2, 4, 8 and 16 devices.
  config.batch_size = 400  # Unused (the data classes check it fits a split).
  return config
