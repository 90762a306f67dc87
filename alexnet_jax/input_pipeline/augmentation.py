"""The random side of training, in NumPy: each epoch's order of the
records and each example's augmentation, functions of (config.seed, epoch,
global position) alone, the same for any number of processes.

Epoch `e` is one permutation of all the training records seeded by (seed, e);
global batch `s` is its positions [s * batch_size, (s + 1) * batch_size), and
each process reads only its contiguous slice of each global batch
(`epoch_order`). Each example's augmentation (crop corner, flip, lighting) is
drawn for its global position from a generator seeded by (seed, e)
(`draw_augmentation`), for the whole epoch at once, so no random-number op
runs per image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alexnet_jax.input_pipeline.preprocess import Preprocess

# PCA lighting noise (the paper, section 4.1; fb.resnet.torch's constants
# for pixels in [0, 1], scaled here by 255 for 0-255 pixels). Columns of
# LIGHTING_EIGVEC are the eigenvectors: the RGB offset is
# LIGHTING_EIGVEC @ (alpha * LIGHTING_EIGVAL).
LIGHTING_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
LIGHTING_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)
# Keeps the augmentation's random stream apart from the epoch's permutation.
AUGMENTATION_STREAM = 1


def epoch_order(num_examples: int, global_batch: int, epoch: int, seed: int,
                num_processes: int, process: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """(record indices, global positions) that `process` reads in `epoch`.

  The epoch is one permutation of all records, seeded by (seed, epoch); its
  first steps * global_batch positions form the global batches, and each
  process takes its contiguous slice of every global batch. The examples,
  their order and (via the position) their augmentation are thus the same
  for any number of processes.
  """
  steps = num_examples // global_batch
  per_process = global_batch // num_processes
  permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
  positions = (np.arange(steps)[:, None] * global_batch
               + process * per_process + np.arange(per_process)).ravel()
  return permutation[positions], positions


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The random choices of an epoch's training examples, by global position.

  The host only decodes each example's crop window; the flip and the
  lighting noise are applied to the batch on the accelerator
  (`steps.training_images`).
  """
  offsets: np.ndarray  # int32 [n, 2]: the crop's corner in the resized square.
  flips: np.ndarray  # bool [n]: mirror the crop left-right.
  lights: np.ndarray  # float32 [n, 3]: PCA lighting's RGB offset, 0-255 scale.


def draw_augmentation(preprocess: Preprocess, num_positions: int, epoch: int,
                      seed: int, lighting: tuple[np.ndarray, np.ndarray] = (
                          LIGHTING_EIGVAL, LIGHTING_EIGVEC)) -> Augmentation:
  """The choices for global positions [0, num_positions) of `epoch`: a
  function of (seed, epoch, position) alone. Every draw is made whatever the
  switches say, so turning one off leaves the others unchanged. `lighting`:
  (eigenvalues, eigenvectors as columns) of the RGB covariance, [0, 1]
  scale; ImageNet's unless the training split's were measured."""
  pre, n = preprocess, num_positions
  rng = np.random.default_rng([seed, epoch, AUGMENTATION_STREAM])
  room = pre.resize_size - pre.image_size
  offsets = rng.integers(0, room + 1, (n, 2), dtype=np.int32)
  flips = rng.random(n) < 0.5
  alphas = rng.normal(0.0, 1.0, (n, 3)) * pre.lighting_std
  if not pre.random_crop:
    offsets[:] = room // 2
  if not pre.flip:
    flips[:] = False
  # The paper: I + [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T, for pixels in [0, 1].
  eigval, eigvec = lighting
  lights = 255.0 * (alphas * eigval) @ eigvec.T
  return Augmentation(offsets, flips, lights.astype(np.float32))
