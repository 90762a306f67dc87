"""The paper's two-tower split and the "one weird trick" hybrid.

The 8-device checks run in subprocesses (the simulated device count is fixed
when JAX starts), each paying its compilations once.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from alexnet_jax import config_lib
from conftest import ROOT

_PRELUDE = '''
import os, sys, tempfile
sys.path.insert(0, %r)
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
import jax, jax.numpy as jnp, numpy as np
jax.config.update('jax_disable_most_optimizations', True)
from jax.sharding import NamedSharding
from conftest import tiny_config
from alexnet_jax import models, optim, parallelism as par
from alexnet_jax import input_pipeline
from alexnet_jax import placement, steps, train
from experiments import collectives as col
assert jax.device_count() == 8

def config_for(mode, **kw):
  # Width 0.0625: fc6/fc7 of 256 neurons split evenly over 2 or 8 devices.
  return tiny_config(**{'model.width': 0.0625, 'model.initialization': 'he',
                        'model.dropout_rate': 0.0, 'batch_size': 16,
                        'eval_batch_size': 16, 'dataset': 'fake',
                        'optimizer.warmup_epochs': 0.0,
                        'optimizer.learning_rate': 0.05, 'log_every_steps': 1,
                        'parallelism': mode, **kw})
''' % os.path.join(ROOT, 'tests')


def _run(script: str) -> str:
  out = subprocess.run([sys.executable, '-c', _PRELUDE + textwrap.dedent(
      script)], capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert 'OK' in out.stdout, out.stdout[-2000:]
  return out.stdout


@pytest.mark.slow
def test_towers_and_hybrid_train_the_single_device_net(tmp_path):
  """Logits and gradients against the one-device model; 3 training steps in
  each mode, resuming across modes; the collectives of each compiled step
  against experiments.collectives' `step_collectives`."""
  _run("""
      workdir = %r
      rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
      config = config_for('data')
      model = models.model_from_config(config.model)
      x = jax.random.normal(jax.random.key(0), (16, 67, 67, 3))
      labels = jnp.arange(16) %% 10
      params = model.init(jax.random.key(1), x[:1])['params']

      def loss(p):
        logits = model.apply({'params': p}, x)
        return jnp.mean(steps.cross_entropy(logits, labels)), logits
      (_, want_logits), want_grads = jax.jit(
          jax.value_and_grad(loss, has_aux=True))(params)
      assert float(jnp.std(want_logits)) > 0.1
      for mode in ('towers', 'hybrid'):
        mesh = par.make_mesh(mode)
        specs = par.param_specs(params, mode)
        placed = jax.device_put(params, jax.tree_util.tree_map(
            lambda s: NamedSharding(mesh, s), specs))
        logits = jax.jit(par.logits_fn(model, mesh, specs, mode))(placed, x)
        assert rel(logits, want_logits) < 1e-5, mode
        _, _, grads = jax.jit(par.grads_fn(model, mesh, specs, mode))(
            placed, x, labels, jax.random.key(0))
        worst = jax.tree_util.tree_map(rel, grads, want_grads)
        assert max(jax.tree_util.tree_leaves(worst)) < 1e-5, (mode, worst)

      # 3 steps in each mode: data (8), towers (4 x 2), hybrid (8).
      tx = optim.create_optimizer(config.optimizer)
      batch = next(input_pipeline.create_data(config).train_batches())
      built, losses, norms, finals = {}, {}, {}, {}
      for mode in ('data', 'towers', 'hybrid'):
        state = steps.create_train_state(model, tx, 67, config.seed)
        step, _, put = train.make_steps(
            model, tx, train.step_options(config, 10**6, 3), config_for(mode))
        if mode == 'data':
          state, b = placement.replicate(state), batch
        else:
          b = put(batch)
        built[mode] = (step, b)
        losses[mode] = []
        for _ in range(3):
          state, metrics = step(state, b)
          losses[mode].append(float(metrics['train_loss'][0]))
        finals[mode] = state
        norms[mode] = float(metrics['param_norm'][0])
        assert float(metrics['finite'][0]) == 1.0
        np.testing.assert_allclose(losses[mode], losses['data'], rtol=1e-4)
        np.testing.assert_allclose(norms[mode], norms['data'], rtol=1e-5)
      assert abs(losses['data'][-1] - losses['data'][0]) > 1e-2  # It trains.

      # In towers each device holds half of every layer's parameters.
      placed = finals['towers'].params
      total = sum(a.nbytes for a in jax.tree_util.tree_leaves(placed))
      for d in jax.devices():
        held = sum(s.data.nbytes for a in jax.tree_util.tree_leaves(placed)
                   for s in a.addressable_shards if s.device == d)
        assert abs(held / total - 0.5) < 0.001, held / total
      for layer, leaves in placed.items():
        k = leaves['kernel']
        assert k.addressable_shards[0].data.size * 2 == k.size, layer

      # Checkpoints: towers -> data -> towers, restored as the loop does.
      from alexnet_jax import checkpointing
      ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'ckpt'))
      state = steps.create_train_state(model, tx, 67, config.seed)
      for i, mode in enumerate(('towers', 'data', 'towers')):
        state = placement.replicate(ckpt.restore_latest(state))
        step, b = built[mode]
        state, metrics = step(state, b)
        ckpt.save(i + 1, state)
        assert abs(float(metrics['train_loss'][0]) - losses['data'][i]) <= (
            1e-4 * losses['data'][i]), (i, mode)
      ckpt.close()

      # The loop itself, in towers mode.
      last = train.train_and_evaluate(config_for('towers', num_train_steps=3),
                                      os.path.join(workdir, 'loop'))
      assert abs(last['train_loss'] - losses['data'][-1]) <= 1e-4 * (
          losses['data'][-1]), last
      assert 0 <= last['eval_top1'] <= 1

      # What moves: each compiled step's collectives against the layer shapes.
      for mode in ('data', 'towers', 'hybrid'):
        step, b = built[mode]
        compiled = step.lower(
            steps.create_train_state(model, tx, 67, config.seed), b).compile()
        hlo = col.hlo_collectives(compiled.as_text(), 8)
        # Scalars (metrics, norms) and groups of one device move nothing.
        hlo = [c for c in hlo if c.elements > 1 and c.group > 1]
        want = col.step_collectives(model, mode, 67, 16, 8)
        # All-gathers and reduce-scatters (activations): the same count and
        # sizes. All-reduces (gradients, fc8's partial sums): the same bytes
        # over groups of the same size (XLA combines some, splits others).
        exchanges = lambda cs: sorted((c.kind, c.elements, c.group)
                                      for c in cs if c.kind != 'all-reduce')
        reduced = lambda cs: sorted(
            (g, sum(c.bytes for c in cs
                    if c.kind == 'all-reduce' and c.group == g))
            for g in {c.group for c in cs if c.kind == 'all-reduce'})
        assert exchanges(hlo) == exchanges(want), mode
        assert reduced(hlo) == reduced(want), mode
        assert (mode == 'data') == (not exchanges(want))
        sent = col.bytes_sent_per_device(want)
        assert abs(col.bytes_sent_per_device(hlo) - sent) < 1e-6 * sent, mode
      print('OK', losses)
      """ % str(tmp_path))


def _config(mode, **overrides):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  return tiny_config(parallelism=mode, **overrides)


def test_modes_that_do_not_fit_name_the_field(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match='config.parallelism'):
    train.validate(_config('pipeline'))
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.parallelism='towers'.*even device count"):
    train.validate(_config('towers', batch_size=12, eval_batch_size=12))
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  with pytest.raises(config_lib.ConfigError, match='config.model.groups=1'):
    train.validate(_config('towers', **{'model.groups': 1}))
  with pytest.raises(config_lib.ConfigError,
                     match='config.model.lrn_across_towers=True'):
    train.validate(_config('towers',
                           **{'model.lrn_across_towers': True}))
  # Width 0.05: fc6/fc7 have 205 neurons, not divisible by 2.
  with pytest.raises(config_lib.ConfigError,
                     match=r'config.model.width=0.05.*205 neurons'):
    train.validate(_config('hybrid'))
  train.validate(_config('towers', **{'model.width': 0.0625}))
  # Two processes of one device each: a tower pair would span them.
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'local_device_count', lambda: 1)
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.parallelism='towers'.*per process, got 1"):
    train.validate(_config('towers', **{'model.width': 0.0625}))
  train.validate(_config('hybrid', **{'model.width': 0.0625}))
  monkeypatch.setattr(jax, 'local_device_count', lambda: 2)
  monkeypatch.setattr(jax, 'device_count', lambda: 4)
  train.validate(_config('towers', **{'model.width': 0.0625}))


def test_bytes_each_host_sends_by_hand():
  # The paper net at 227x227 on 2 hosts, 256 images a step, float32. Data and
  # towers: each host all-reduces the whole gradient with the other (a ring
  # of 2 sends half the array twice): all 60,965,224 parameters' 4 bytes.
  from alexnet_jax import models  # pylint: disable=g-import-not-at-top
  from experiments import collectives  # pylint: disable=g-import-not-at-top
  model = models.AlexNet(num_classes=1000)
  for mode in ('data', 'towers'):
    assert collectives.bytes_sent_per_host(model, mode, 227, 256, 2) == (
        60_965_224 * 4)
  # Hybrid: half of pool5 (256 x 6x6x256) and of fc6's output (256 x 4096)
  # out, half of their gradients back; the 1000 logits' partial sums
  # all-reduced; the convolutions' 2,334,080 parameters' gradients (conv1
  # 96x11x11x3+96, conv2 256x5x5x48+256, conv3 384x3x3x256+384, conv4 and
  # conv5 384 and 256 x3x3x192 plus biases); half of the 256 labels.
  want = (256 * 6 * 6 * 256 * 4 + 256 * 4096 * 4 + 256 * 1000 * 4
          + (34_944 + 307_456 + 885_120 + 663_936 + 442_624) * 4 + 128 * 4)
  assert collectives.bytes_sent_per_host(model, 'hybrid', 227, 256, 2) == want
  assert collectives.bytes_sent_per_host(model, 'hybrid', 227, 256, 1) == 0
