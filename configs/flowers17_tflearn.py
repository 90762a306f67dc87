r"""tflearn's AlexNet example on Oxford 17 Flowers, as that example trains it.

  python -m alexnet_jax.main --config=configs/flowers17_tflearn.py \
      --workdir=/tmp/alexnet_flowers17_tflearn --config.dataset_dir=/data/17flowers

`dataset_dir` is the folder configs/flowers17.py reads: root/<class>/<image>
(17 classes of 80 images), or root/<split>/<class>/<image>.

Not the paper's recipe: the network and training of tflearn's
`examples/images/alexnet.py` (docs/paper.md sets it beside the paper's):
* the network (`model.variant='tflearn'`): one tower, every convolution and
  pooling 'SAME' padded, TensorFlow's LRN (depth_radius 5, i.e. an 11-channel
  window, bias 1, alpha 1e-4 not divided, beta 0.75) after pool1, pool2 and
  pool5, fc6 and fc7 ReLU with dropout 0.5; 91.7 M parameters at 1,000
  classes, 87.7 M at 17;
* tflearn's initializers: uniform_scaling for the convolutions,
  truncated_normal (stddev 0.02) for the dense layers, zero biases;
* `oxflower17.load_data(resize_pics=(227, 227))`: every image squashed to
  227x227, pixels scaled to [0, 1] (std 255, no mean), no augmentation;
* momentum 0.9 (TensorFlow's MomentumOptimizer, optax.sgd's rule) at a
  constant learning rate 0.001, batch 64, no weight decay, 1,000 epochs,
  10% held out for validation, evaluated every 200 steps (`snapshot_step`).

The example as usually copied ends in a 1,000-way softmax though the labels
have 17 one-hot columns: that graph cannot train (the loss's shapes do not
match), and tflearn's own example uses 17. Here fc8 has the dataset's class
count (`model.num_classes`, checked against the folder). The hold-out is
this project's per-file hash split, not tflearn's random last 10%.
"""

import ml_collections
from ml_collections import config_dict

from alexnet_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  config.dataset = 'image_folder'
  config.dataset_dir = config_dict.placeholder(str)  # Root of the folder.
  config.validation_fraction = 0.1  # tflearn's validation_set=0.1.
  config.ten_crop = False
  config.cache = True
  config.image_size = 227
  config.resize_size = 227
  config.resize_mode = 'squash'  # resize_pics=(227, 227): aspect not kept.
  config.augment.random_crop = False
  config.augment.flip = False
  config.augment.lighting_std = 0.0
  config.normalization.mean = (0.0, 0.0, 0.0)
  config.normalization.std = (255.0, 255.0, 255.0)  # Pixels in [0, 1].

  config.model.num_classes = 17
  config.model.variant = 'tflearn'
  config.model.width = 1.0
  config.model.dropout_rate = 0.5
  config.model.activation = 'relu'
  config.model.initialization = 'tflearn'
  # tf.nn.local_response_normalization's defaults as tflearn passes them.
  config.model.lrn_depth = 11  # depth_radius=5: 2 * 5 + 1 channels.
  config.model.lrn_bias = 1.0
  config.model.lrn_alpha = 1e-4
  config.model.lrn_beta = 0.75
  config.model.lrn_convention = 'paper'  # TensorFlow does not divide alpha.
  config.parallelism = 'data'

  config.optimizer.rule = 'sgd'  # v <- 0.9 v + grad; w <- w - lr v.
  config.optimizer.learning_rate = 0.001
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_epochs = 0.0
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 1000.0  # 19 steps per epoch at 1,224 training images.
  config.log_every_steps = 19
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  return config
