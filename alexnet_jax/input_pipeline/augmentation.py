"""The random side of training, in NumPy: each epoch's order of the records
and each example's augmentation, functions of (seed, epoch, global position)
alone (the same for any number of processes), drawn for a whole epoch."""

import dataclasses

import numpy as np

from alexnet_jax.input_pipeline.preprocess import Preprocess

# PCA lighting (the paper, section 4.1): fb.resnet.torch's ImageNet constants
# for pixels in [0, 1]; the columns of LIGHTING_EIGVEC are the eigenvectors.
LIGHTING_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
LIGHTING_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)
# Keeps the augmentation's random stream apart from the epoch's permutation.
AUGMENTATION_STREAM = 1


def epoch_order(num_examples: int, global_batch: int, epoch: int, seed: int,
                num_processes: int, process: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """(record indices, global positions) that `process` reads in `epoch`: one
  permutation of all records seeded by (seed, epoch), cut into global
  batches, of which each process reads its contiguous slice."""
  steps = num_examples // global_batch
  per_process = global_batch // num_processes
  permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
  positions = (np.arange(steps)[:, None] * global_batch
               + process * per_process + np.arange(per_process)).ravel()
  return permutation[positions], positions


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """An epoch's random choices, by global position."""
  offsets: np.ndarray  # int32 [n, 2]: the crop's corner in the resized square.
  flips: np.ndarray  # bool [n]: mirror the crop left-right.
  lights: np.ndarray  # float32 [n, 3]: PCA lighting's RGB offset, 0-255 scale.


def draw_augmentation(preprocess: Preprocess, num_positions: int, epoch: int,
                      seed: int, lighting: tuple[np.ndarray, np.ndarray] = (
                          LIGHTING_EIGVAL, LIGHTING_EIGVEC)) -> Augmentation:
  """The choices for global positions [0, num_positions) of `epoch`; every
  draw is made whatever the switches say, so turning one off leaves the
  others unchanged. `lighting`: (eigenvalues, eigenvectors as columns)."""
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
