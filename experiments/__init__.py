"""Experiments built on `alexnet_jax`: ablation sweeps, Figure 1, benchmarks.

  python -m experiments.ablate --config=configs/default.py --workdir=DIR
  python -m experiments.figure1 --config=configs/default.py --workdir=DIR
  python -m experiments.benchmark --output=bench.json
"""
