"""The optimizer follows the paper's update rule; schedules; the plateau rule."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alexnet_jax import optim


def _opt_config(**kw):
  base = dict(rule='paper', learning_rate=0.1, momentum=0.9,
              weight_decay=5e-4, schedule='step', warmup_epochs=0.0,
              lr_drop_epochs=(1,), lr_drop_factor=0.1, plateau_patience=2,
              plateau_min_delta=0.0, plateau_max_drops=3)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _run(config, grads, w0, steps_per_epoch=3):
  """The optimizer run as the training step runs it: the learning rate set
  from the schedule at each step before the update."""
  tx = optim.create_optimizer(config)
  schedule = optim.create_schedule(config, steps_per_epoch, total_steps=10)
  params = {'w': jnp.asarray(w0)}
  state = tx.init(params)
  history = []
  for step, g in enumerate(grads):
    state = optim.set_learning_rate(state, schedule(step))
    updates, state = tx.update({'w': jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
    history.append((np.asarray(params['w']),
                    float(state.hyperparams['learning_rate'])))
  return history


def test_paper_rule_step_by_step_across_a_learning_rate_drop():
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=5).astype(np.float32)
  grads = rng.normal(size=(6, 5)).astype(np.float32)
  history = _run(_opt_config(), grads, w0)
  # The paper: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v.
  # The learning rate drops x0.1 after epoch 1 (= 3 steps).
  w, v = w0.astype(np.float64), np.zeros(5)
  for step, (g, (got_w, got_lr)) in enumerate(zip(grads, history)):
    lr = 0.1 if step < 3 else 0.01
    v = 0.9 * v - 0.0005 * lr * w - lr * g
    w = w + v
    assert got_lr == pytest.approx(lr)
    np.testing.assert_allclose(got_w, w, rtol=1e-5, atol=1e-6)


def test_sgd_rule_equals_paper_rule_until_the_learning_rate_changes():
  rng = np.random.default_rng(1)
  w0 = rng.normal(size=4).astype(np.float32)
  grads = rng.normal(size=(5, 4)).astype(np.float32)
  paper = _run(_opt_config(rule='paper'), grads, w0)
  sgd = _run(_opt_config(rule='sgd'), grads, w0)
  for step in range(3):
    np.testing.assert_allclose(paper[step][0], sgd[step][0], rtol=1e-5)
  # After the drop, optax.sgd scales the whole velocity by the new rate.
  assert not np.allclose(paper[4][0], sgd[4][0], rtol=1e-4)


def test_schedules():
  cfg = _opt_config(schedule='cosine', warmup_epochs=1.0)
  s = optim.create_schedule(cfg, steps_per_epoch=10, total_steps=100)
  assert float(s(0)) == 0.0
  assert float(s(10)) == pytest.approx(0.1)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-6)
  # Without warmup: lr * (1 + cos(pi * step / total)) / 2 from the first step.
  s = optim.create_schedule(_opt_config(schedule='cosine'), 10, 100)
  assert [float(s(i)) for i in (0, 25, 50, 100, 120)] == pytest.approx(
      [0.1, 0.05 * (1 + np.cos(np.pi / 4)), 0.05, 0.0, 0.0], abs=1e-7)
  s = optim.create_schedule(_opt_config(schedule='step', lr_drop_epochs=(1, 2)),
                            10, 100)
  assert [float(s(i)) for i in (9, 10, 19, 20)] == pytest.approx(
      [0.1, 0.01, 0.01, 0.001])
  s = optim.create_schedule(_opt_config(schedule='constant'), 10, 100)
  assert float(s(57)) == pytest.approx(0.1)
  with pytest.raises(ValueError, match='optimizer.schedule'):
    optim.create_schedule(_opt_config(schedule='linear'), 10, 100)


def test_plateau_divides_by_ten_when_validation_error_stops_improving():
  rule = optim.Plateau(patience=2, factor=0.1, min_delta=0.0, max_drops=2)
  state = optim.Plateau.initial_state()
  lrs = []
  for error in (0.9, 0.8, 0.8, 0.81, 0.7, 0.75, 0.76, 0.77, 0.78, 0.79, 0.8):
    state = rule.update(state, error)
    lrs.append(0.01 * float(state['lr_scale']))
  expected = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 1e-4, 1e-4, 1e-4, 1e-4,
              1e-4]  # Two bad evals each time; at most two drops.
  assert lrs == pytest.approx(expected)
  assert int(state['drops']) == 2


def test_set_learning_rate_changes_the_next_update():
  tx = optim.create_optimizer(_opt_config(schedule='plateau'))
  params = {'w': jnp.ones(3)}
  state = optim.set_learning_rate(tx.init(params), 0.001)
  updates, state = tx.update({'w': jnp.ones(3)}, state, params)
  # First step from v=0: v = -lr * (g + wd * w).
  np.testing.assert_allclose(updates['w'], -0.001 * (1 + 5e-4), rtol=1e-6)


def test_plateau_best_moves_only_on_a_real_improvement():
  # Steady gains of 0.03 with min_delta=0.05: every other evaluation is an
  # improvement on the best (0.9 -> 0.84 -> 0.78), so the rate never drops
  # until the error stalls. Hand-worked: (best, bad evals) after each error.
  rule = optim.Plateau(patience=2, factor=0.1, min_delta=0.05, max_drops=3)
  state = optim.Plateau.initial_state()
  trace = []
  for error in (0.9, 0.87, 0.84, 0.81, 0.78, 0.78, 0.78, 0.75):
    state = rule.update(state, error)
    trace.append((float(state['best_error']), int(state['bad_evals']),
                  0.01 * float(state['lr_scale'])))
  expected = [(0.9, 0, 0.01), (0.9, 1, 0.01), (0.84, 0, 0.01), (0.84, 1, 0.01),
              (0.78, 0, 0.01), (0.78, 1, 0.01), (0.78, 0, 0.001),
              (0.78, 1, 0.001)]
  for got, want in zip(trace, expected):
    assert got == pytest.approx(want), (trace, expected)


@pytest.mark.parametrize('min_delta', [0.0, 0.02])
def test_plateau_matches_torch_reduce_lr_on_plateau(min_delta):
  torch = pytest.importorskip('torch')
  errors = [0.9, 0.85, 0.84, 0.835, 0.83, 0.82, 0.815, 0.81, 0.8, 0.8, 0.79,
            0.7, 0.69, 0.69, 0.695, 0.68, 0.6, 0.61, 0.62, 0.63]
  rule = optim.Plateau(patience=2, factor=0.1, min_delta=min_delta,
                       max_drops=100)
  state = optim.Plateau.initial_state()
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
  # Our patience counts the bad evaluation that triggers the drop; PyTorch's
  # drops once its count exceeds patience.
  ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
      opt, mode='min', factor=0.1, patience=1, threshold=min_delta,
      threshold_mode='abs', cooldown=0, eps=0.0)
  ours, theirs = [], []
  for error in errors:
    state = rule.update(state, error)
    # float32, as the rule stores it.
    ref.step(float(np.float32(error)))
    ours.append(0.01 * float(state['lr_scale']))
    theirs.append(opt.param_groups[0]['lr'])
  assert ours == pytest.approx(theirs, rel=1e-6)
  assert len(set(theirs)) > 2  # The sequence does make PyTorch drop.


def test_decay_biases_false_leaves_biases_undecayed():
  w0 = {'conv': {'kernel': np.array([2.0, -1.0], np.float32),
                 'bias': np.array([3.0], np.float32)}}
  g = {'conv': {'kernel': np.array([0.5, 0.25], np.float32),
                'bias': np.array([1.0], np.float32)}}
  lr, wd = 0.1, 0.01
  for decay_biases in (True, False):
    cfg = _opt_config(learning_rate=lr, weight_decay=wd, schedule='constant',
                      decay_biases=decay_biases)
    tx = optim.create_optimizer(cfg)
    params = {k: {n: jnp.asarray(v) for n, v in d.items()}
              for k, d in w0.items()}
    updates, _ = tx.update(
        {k: {n: jnp.asarray(v) for n, v in d.items()} for k, d in g.items()},
        tx.init(params), params)
    # First step from v=0: update = -lr * (g + wd * w), wd only where decayed.
    np.testing.assert_allclose(updates['conv']['kernel'],
                               [-0.1 * (0.5 + 0.02), -0.1 * (0.25 - 0.01)],
                               rtol=1e-6)
    bias_wd = 0.01 * 3.0 if decay_biases else 0.0
    np.testing.assert_allclose(updates['conv']['bias'],
                               [-0.1 * (1.0 + bias_wd)], rtol=1e-6)


def test_decay_biases_is_validated():
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  assert config.optimizer.decay_biases is True  # The paper's rule.
  config.optimizer = ml_collections.ConfigDict(
      {**config.optimizer.to_dict(), 'decay_biases': 'no'})
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.optimizer\.decay_biases='no'"):
    train.validate(config)


def test_set_learning_rate_works_for_any_injected_optax_rule():
  # The step's way of setting the rate (hyperparams, as optax documents)
  # gives another optax rule the update of that rule built at that rate.
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = {'w': jnp.array([0.5, 0.25, -1.0])}
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=1.0)
  state = optim.set_learning_rate(tx.init(params), 0.001)
  got, _ = tx.update(grads, state, params)
  want, _ = optax.adam(0.001).update(grads, optax.adam(0.001).init(params))
  np.testing.assert_allclose(got['w'], want['w'], rtol=1e-4)
  assert not np.allclose(got['w'], tx.update(grads, tx.init(params))[0]['w'])
