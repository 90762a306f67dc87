r"""The ablation variants: each name maps to dotted config-field overrides.

  python -m experiments.ablate --config=configs/default.py --workdir=/tmp/ablate \
      --sweep=experiments/sweeps.py --variants=baseline,no_lrn,no_overlap

`experiments.ablate` reads `sweep()` from this file (or from the file
`--sweep` names; copy this one to add your own variants). The overrides apply
on top of the base config and its `--config.x=y` flags; `baseline` changes
nothing. Each variant removes one thing the paper credits, with what the paper
reports that thing is worth on ImageNet (docs/paper.md):

  no_lrn       local response normalization: 1.4/1.2 points of top-1/top-5
  no_overlap   overlapping 3/2 pooling (-> 2/2): 0.4/0.3 points
  no_dropout   dropout on fc6, fc7: prevents heavy overfitting, at about twice
               the iterations to converge
  one_tower    two towers (-> one, groups=1): 1.7/1.2 points against one tower
               with half the kernels in conv1-conv4. This variant keeps the
               kernel counts (62.4 M parameters instead of 61.0 M): the model
               has no per-layer width, so the paper's smaller one-tower net is
               not expressible here.
  tanh         ReLU (-> tanh): six times faster to 25% CIFAR-10 training error
               (Figure 1)
  no_lighting  PCA lighting noise: over 1 point of top-1 (section 4.1)
"""

from typing import Any


def sweep() -> dict[str, dict[str, Any]]:
  return {
      'baseline': {},
      'no_lrn': {'model.lrn': False},
      'no_overlap': {'model.overlap_pool': False},
      'no_dropout': {'model.dropout_rate': 0.0},
      'one_tower': {'model.groups': 1},
      'tanh': {'model.activation': 'tanh'},
      'no_lighting': {'augment.lighting_std': 0.0},
  }
