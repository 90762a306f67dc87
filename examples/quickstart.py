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
# A trained AlexNet (Krizhevsky, Sutskever and Hinton, 2012) opened up: its
# training curves, its first layer's kernels, and its predictions on a few
# images. The run is the README Quickstart's default job,
#
#     python -m alexnet_jax.main --config=configs/default.py --workdir=/tmp/alexnet_default
#
# a two-tower, quarter-width AlexNet trained on the embedded `alexnet_shapes`
# dataset (ten geometric shapes on cluttered backgrounds). Without that run,
# the notebook trains the same job for a few hundred steps into a workdir of
# its own (a minute or two on a laptop CPU, generating the dataset included).

# %%
import glob
import os
import tempfile

from IPython.display import Image
import matplotlib.pyplot as plt

from alexnet_jax import cli
from alexnet_jax import metrics_writer
from alexnet_jax import startup
from alexnet_jax import train
from alexnet_jax.configs import default
from alexnet_jax.experiments import figure3
from alexnet_jax.experiments import run_loading
from alexnet_jax.input_pipeline import DataOptions
from alexnet_jax.tools import checkpoint_params
from alexnet_jax.tools import predict

# The README Quickstart's run, and where to train briefly if it is missing.
WORKDIR = os.environ.get('ALEXNET_WORKDIR', '/tmp/alexnet_default')
BRIEF_WORKDIR = os.environ.get('ALEXNET_BRIEF_WORKDIR',
                               '/tmp/alexnet_quickstart')

# %% [markdown]
# ## The run
#
# A workdir holds `config.json`, `metrics.jsonl` and the checkpoints.
# `train.train_and_evaluate` is what the command line runs; XLA reads its
# options when JAX starts, so `startup.set_xla_flags` comes first.

# %%
def has_checkpoint(workdir):
  try:
    return bool(checkpoint_params.find_checkpoints(workdir))
  except checkpoint_params.CheckpointNotFoundError:
    return False


if has_checkpoint(WORKDIR):
  run_dir = WORKDIR
  startup.set_xla_flags(
      predict.load_config(run_dir).execution.xla_cpu_conv_library)
else:
  run_dir = BRIEF_WORKDIR
  config = default.get_config()
  config.num_train_steps = 500  # Of the full job's 3,744 (24 epochs).
  config.log_every_steps = 25
  config.eval_every_steps = config.checkpoint_every_steps = 100
  startup.set_xla_flags(config.execution.xla_cpu_conv_library)
  cli.quiet_console()  # TensorFlow's start-up notices.
  train.train_and_evaluate(config, run_dir)

config, variables, step, class_names = run_loading.load_run(run_dir)
print(f'{run_dir}: step {step}, {config.model.variant} '
      f'AlexNet, width {config.model.width}, {config.image_size}x'
      f'{config.image_size} crops, classes: {", ".join(class_names)}')

# %% [markdown]
# ## Training curves
#
# `metrics.jsonl` has one JSON row per logged step: the training loss and
# accuracy averaged since the previous log, and the evaluation on the
# validation split (`eval_*`) where one ran.

# %%
rows = metrics_writer.read_metrics(run_dir)
train_rows = [r for r in rows if 'train_loss' in r]
eval_rows = [r for r in rows if 'eval_top1' in r]

fig, (loss_ax, top1_ax) = plt.subplots(1, 2, figsize=(10, 3.5),
                                       layout='constrained')
loss_ax.plot([r['step'] for r in train_rows],
             [r['train_loss'] for r in train_rows])
loss_ax.set(xlabel='step', ylabel='training loss', title='Training loss')
top1_ax.plot([r['step'] for r in eval_rows],
             [100 * r['eval_top1'] for r in eval_rows], 'o-')
top1_ax.set(xlabel='step', ylabel='top-1 accuracy (%)', ylim=(0, 100),
            title='Validation top-1 accuracy')
plt.show()
print(f'last evaluation, step {eval_rows[-1]["step"]}: top-1 '
      f'{eval_rows[-1]["eval_top1"]:.3f}, top-5 {eval_rows[-1]["eval_top5"]:.3f}')

# %% [markdown]
# ## conv1's kernels (the paper's Figure 3)
#
# Each kernel is scaled to the full display range on its own, one block per
# tower (the paper's two GPUs), as `alexnet-figure3` draws them. Above each
# kernel: its colour score (the share of its energy off the grey axis; 2/3
# for random weights) and its smoothness (about 0 for noise). In the paper,
# tower 1 learned largely colour-agnostic kernels and tower 2 colour-specific
# ones; `experiments/figure3.py` tests whether two towers differ more than
# chance.

# %%
with tempfile.TemporaryDirectory() as out:
  result = figure3.run_figure3(run_dir, out)
  kernels = Image(filename=result['paths']['png'])  # Read in now.
for tower in result['towers']:
  print(f'tower {tower["tower"]}: colour score {tower["colour"]:.2f}, '
        f'smoothness {tower["smoothness"]:.2f}')
kernels

# %% [markdown]
# ## Classify images
#
# `predict.Predictor` is what `alexnet-predict` runs: the evaluation
# preprocessing (resize, centre crop) in NumPy, then the softmax. The model
# knows only the ten shape classes it was trained on, so every image gets
# one of those names, whatever it shows.

# %%
predictor = predict.Predictor(variables['params'], config.model,
                              config.normalization, config.image_size)
# The run's resize and crop, and its mean image (None for this job).
pre = DataOptions.from_config(config).preprocess
mean_image = predict.load_mean_image(run_dir, config.normalization)
paths = sorted(glob.glob('images/*.jpg'))
fig, axes = plt.subplots(1, len(paths), figsize=(3 * len(paths), 3.2),
                         layout='constrained')
for path, ax in zip(paths, axes):
  image = predict.load_image(path)
  probs = predictor(predict.preprocess(image, pre, mean_image=mean_image))
  best = predict.top_k(probs, 3)
  print(predict.format_predictions(path, best, class_names))
  ax.imshow(predict.preprocess(image, pre)[0])  # The crop the net sees.
  ax.set_title(f'{class_names[best[0][0]]} ({best[0][1]:.2f})')
  ax.set_axis_off()
plt.show()
