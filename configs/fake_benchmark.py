r"""The paper's net on random images made on the device: a throughput job.

  python -m alexnet_jax.main --config=configs/fake_benchmark.py --workdir=/tmp/alexnet_fake

No TensorFlow is imported. 227x227 inputs, 1,000 classes, batch 32 (the CPU
comparison point of docs/performance.md; use --config.batch_size=256 on a GPU).
images/s lands in workdir/metrics.jsonl.
"""

import ml_collections

from alexnet_jax.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config(arg)
  default.use_paper_initialization(config)
  config.dataset = 'fake'
  config.image_size = 227
  config.resize_size = 227
  config.model.num_classes = 1000
  config.model.width = 1.0
  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_train_steps = 30
  config.log_every_steps = 10
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 0
  config.optimizer.schedule = 'constant'
  return config
