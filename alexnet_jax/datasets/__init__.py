"""Datasets bundled with alexnet_jax (procedurally generated, no downloads)."""
