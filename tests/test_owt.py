"""hybrid_fc_batch='per_worker': Krizhevsky (2014)'s update, fc6-fc8 updated
on each worker's share in turn, against a sequential reference written here
with the whole model and the paper's update rule by hand."""

import pytest

from alexnet_jax import config_lib
from conftest import tiny_config
from test_parallelism import _run


@pytest.mark.slow  # A process with 8 simulated devices, about 45 s.
def test_per_worker_matches_a_sequential_reference_and_one_worker_global():
  _run("""
      config = config_for('hybrid', hybrid_fc_batch='per_worker')
      model = models.model_from_config(config.model)
      tx = optim.create_optimizer(config.optimizer)
      batch = next(input_pipeline.create_data(config).train_batches())
      images = steps.training_images(
          {'image': jnp.reshape(batch['image'], (16, 67, 67, 3))},
          steps.Normalization.from_config(config.normalization))
      labels = jnp.reshape(batch['label'], (16,))
      lr, m, wd = 0.05, config.optimizer.momentum, config.optimizer.weight_decay
      fc = ('fc6', 'fc7', 'fc8')

      def reference(workers, steps_run=2, conv_factor=1.0):
        # Each share's gradient at (the step's conv params, the fc params
        # of its turn); fc updated after each share, conv once on the mean
        # at the learning rate times conv_factor.
        p = steps.create_train_state(model, tx, 67, config.seed).params
        v = jax.tree_util.tree_map(jnp.zeros_like, p)
        n = 16 // workers
        for _ in range(steps_run):
          conv_g = {k: jax.tree_util.tree_map(jnp.zeros_like, p[k])
                    for k in p if k not in fc}
          for w in range(workers):
            def loss(q, w=w):
              logits = model.apply({'params': q}, images[w * n:(w + 1) * n])
              return jnp.mean(steps.cross_entropy(
                  logits, labels[w * n:(w + 1) * n]))
            g = jax.jit(jax.grad(loss))(p)
            for k in p:
              if k in fc:  # v <- m v - wd lr w - lr g; w <- w + v.
                v[k] = jax.tree_util.tree_map(
                    lambda v_, w_, g_: m * v_ - wd * lr * w_ - lr * g_,
                    v[k], p[k], g[k])
                p[k] = jax.tree_util.tree_map(jnp.add, p[k], v[k])
              else:
                conv_g[k] = jax.tree_util.tree_map(
                    lambda a, b: a + b / workers, conv_g[k], g[k])
          c = lr * conv_factor
          for k in conv_g:
            v[k] = jax.tree_util.tree_map(
                lambda v_, w_, g_: m * v_ - wd * c * w_ - c * g_,
                v[k], p[k], conv_g[k])
            p[k] = jax.tree_util.tree_map(jnp.add, p[k], v[k])
        return p

      def run(mode_config, devices, steps_run=2):
        step, _, put = train.make_steps(
            model, tx, train.step_options(mode_config, 10**6, 2), mode_config,
            devices=devices)
        state = steps.create_train_state(model, tx, 67, config.seed)
        for _ in range(steps_run):
          state, metrics = step(state, put(batch))
          assert float(metrics['finite'][0]) == 1.0
        return jax.device_get(state.params)

      def worst(a, b):
        rel = jax.tree_util.tree_map(
            lambda x, y: float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y)),
            a, b)
        return max(jax.tree_util.tree_leaves(rel))

      # One worker: the global step (the hybrid's exact one-device form).
      one = run(config, jax.devices()[:1])
      assert worst(one, run(config_for('hybrid'), jax.devices()[:1])) < 1e-5
      for workers in (2, 4):
        got = run(config, jax.devices()[:workers])
        want = reference(workers)
        assert worst(got, want) < 1e-4, (workers, worst(got, want))
        # K updates of the fc layers are another algorithm than one.
        assert worst(want, reference(1)) > 1e-3, workers
      # The convolutional layers' rate scaled with K (the fully connected
      # layers keep the base rate): linear at K=2, sqrt at K=4, both 2x.
      for workers, rule in ((2, 'linear'), (4, 'sqrt')):
        scaled = config_for('hybrid', hybrid_fc_batch='per_worker',
                            hybrid_conv_lr_scaling=rule)
        got = run(scaled, jax.devices()[:workers])
        want = reference(workers, conv_factor=2.0)
        assert worst(got, want) < 1e-4, (rule, worst(got, want))
        assert worst(want, reference(workers)) > 1e-3, rule
      print('OK')
      """)


def test_conv_lr_scaling_needs_per_worker_updates():
  config = tiny_config(parallelism='data', hybrid_conv_lr_scaling='linear')
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.hybrid_conv_lr_scaling='linear'.*"
                           r"per_worker"):
    config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError,
                     match=r"hybrid_conv_lr_scaling='cube'.*expected one of"):
    config_lib.validate(tiny_config(hybrid_conv_lr_scaling='cube'))


def test_per_worker_needs_the_hybrid_mode():
  config = tiny_config(hybrid_fc_batch='per_worker')
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.hybrid_fc_batch='per_worker'.*hybrid"):
    config_lib.validate(config)
