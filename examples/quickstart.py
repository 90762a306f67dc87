# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # alexnet_jax quickstart
#
# Build AlexNet (Krizhevsky, Sutskever and Hinton, 2012), train it for a few
# steps on images of the embedded `alexnet_shapes` dataset, and classify an
# image. The network here is shrunk (5% of the paper's width, 67x67 crops)
# so that the notebook runs in seconds on a laptop CPU; `configs/default.py`
# is the full default job, and `alexnet-train --config=configs/default.py
# --workdir=DIR` trains it from the command line.

# %%
import jax
import numpy as np

from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import placement
from alexnet_jax import predict
from alexnet_jax import steps
from alexnet_jax.datasets import shapes
from configs import default

print('JAX', jax.__version__, 'on', jax.devices())

# %% [markdown]
# ## The model
#
# A config is an `ml_collections.ConfigDict`; every field of
# `configs/default.py` can be changed, here or as `--config.FIELD=VALUE` on
# the command line.

# %%
config = default.get_config()
config.model.width = 0.05  # Of the paper's channels (default job: 0.25).
config.image_size = 67  # The smallest input the paper's topology admits.
config.resize_size = 72
config.batch_size = 16
config.optimizer.warmup_epochs = 0.0

model = models.model_from_config(config)
steps_per_epoch, total_steps = 10, 10
tx = optim.create_optimizer(config.optimizer, steps_per_epoch, total_steps)
state = steps.create_train_state(config, model, tx)
print(f'{models.count_params(state.params):,} parameters in',
      list(state.params))

# %% [markdown]
# ## Data: the embedded shapes dataset
#
# Example `i` of a split is rendered from a fixed seed (no download); the
# training job reads the same images through TensorFlow Datasets.
# `predict.preprocess` resizes and centre-crops as evaluation does.

# %%
def shapes_batch(start, size):
  examples = [shapes.render_example(shapes.TRAIN_SEED, i)
              for i in range(start, start + size)]
  images = np.concatenate([predict.preprocess(image, config)
                           for image, _ in examples])
  labels = np.array([label for _, label in examples], np.int32)
  return images, labels

images, labels = shapes_batch(0, config.batch_size)
print(images.shape, images.dtype, [shapes.CLASS_NAMES[l] for l in labels[:5]])

# %% [markdown]
# ## Training steps
#
# `make_pmapped_steps` gives the training loop's own step: the batch is split
# over the local devices (leading axis), gradients are averaged across them.

# %%
p_train, _ = steps.make_pmapped_steps(model, tx, config,
                                       total_steps=total_steps)
state = placement.replicate(state)
n = jax.local_device_count()
for step in range(4):
  images, labels = shapes_batch(step * config.batch_size, config.batch_size)
  batch = {'image': images.reshape((n, -1) + images.shape[1:]),
           'label': labels.reshape(n, -1)}
  state, metrics = p_train(state, batch)
  print(f'step {step + 1}: loss {float(metrics["step_loss"][0]):.4f}')

# %% [markdown]
# ## Classify an image
#
# `predict.Predictor` is what `alexnet-predict` uses; after four steps the
# probabilities are still close to uniform (1/10).

# %%
image, label = shapes.render_example(shapes.VALIDATION_SEED, 3)
predictor = predict.Predictor(config, jax.device_get(state.params))
probs = predictor(predict.preprocess(image, config))
print('true class:', shapes.CLASS_NAMES[label])
print(predict.format_predictions('validation example 3',
                                 predict.top_k(probs, 3), shapes.CLASS_NAMES))
