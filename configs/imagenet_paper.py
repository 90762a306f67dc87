r"""The paper's recipe on ImageNet (ILSVRC-2012) from TFDS.

  python -m alexnet_jax.main --config=configs/imagenet_paper.py \
      --workdir=/tmp/alexnet_imagenet --config.manual_dir=/data/imagenet_tars

`manual_dir` must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
(downloaded by you from image-net.org); TFDS prepares `imagenet2012` from them
into `data_dir` on first use. Batch 128, momentum 0.9, weight decay 5e-4,
lr 0.01 divided by 10 when validation error stops improving (at most three
times), 90 epochs, random 227 crops of the central 256x256, flips, PCA
lighting (alpha std 0.1), the per-pixel mean image of the training set
subtracted (measured once over the 256x256 squares and cached, as the paper
and Caffe's imagenet_mean do).

Evaluated every epoch on the centre crop (eval_top1, eval_top5: what the
plateau rule reads), and at the end of training also as the paper tested,
the softmax averaged over ten crops (four corners, the centre and their
mirrors): eval10_top1 and eval10_top5 are the figures to set beside the
paper's 40.7% / 18.2% top-1 / top-5 error (docs/paper.md).

LRN follows the paper's printed formula (model.lrn_convention='paper':
alpha = 1e-4 on the window's sum), as every config here does, so that runs
compare with each other and with the text. The authors' cuda-convnet (whose
runs gave the paper's figures) and Caffe divide alpha by the window, a term
5x weaker: --config.model.lrn_convention=cuda_convnet runs that network.
"""

import ml_collections

from alexnet_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  default.use_paper_initialization(config)
  config.dataset = 'imagenet2012'
  config.cache = False
  config.image_size = 227
  config.resize_size = 256
  config.normalization.mean_image = True  # The paper's per-pixel mean.
  config.final_ten_crop = True  # eval10_*: the paper's ten-crop test.
  config.model.lrn_convention = 'paper'  # The printed alpha (docstring).
  config.model.num_classes = 1000
  config.model.width = 1.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = 'plateau'
  config.optimizer.plateau_patience = 2
  config.optimizer.plateau_max_drops = 3
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 90.0
  config.log_every_steps = 100
  config.eval_every_steps = 10_009  # One epoch of 1,281,167 images at 128.
  config.checkpoint_every_steps = 10_009
  config.keep_checkpoints = 3
  return config
