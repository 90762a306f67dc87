"""The pmapped train step and the training loop, on generated data."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from alexnet_jax import metrics_writer
from alexnet_jax import models
from alexnet_jax import placement
from alexnet_jax import progress
from alexnet_jax import steps
from alexnet_jax import train
from conftest import ROOT


@pytest.mark.slow
def test_eight_devices_match_one_device_on_the_same_global_batch():
  # Runs in a subprocess: the simulated device count is fixed at JAX start.
  script = textwrap.dedent('''
      import os, sys
      sys.path.insert(0, %r)
      os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
      import jax, numpy as np
      jax.config.update('jax_disable_most_optimizations', True)
      from conftest import tiny_config
      from alexnet_jax import models, optim, placement, steps, train
      config = tiny_config(**{'model.dropout_rate': 0.0, 'batch_size': 16})
      model = models.model_from_config(config.model)
      tx = optim.create_optimizer(config.optimizer)
      rng = np.random.default_rng(0)
      images = rng.integers(0, 256, (3, 16, 67, 67, 3), dtype=np.uint8)
      labels = rng.integers(0, 10, (3, 16)).astype(np.int32)
      results = []
      for n in (8, 1):
        step, _ = steps.make_pmapped_steps(
            model, tx, train.step_options(config, 10, 10),
            devices=jax.devices()[:n])
        state = placement.replicate(
            steps.create_train_state(model, tx, 67, config.seed),
            jax.devices()[:n])
        for i in range(3):
          batch = {'image': images[i].reshape(n, -1, 67, 67, 3),
                   'label': labels[i].reshape(n, -1)}
          state, metrics = step(state, batch)
        results.append((jax.device_get(state.params),
                        float(metrics['train_loss'][0])))
      (p8, l8), (p1, l1) = results
      assert jax.device_count() == 8
      np.testing.assert_allclose(l8, l1, rtol=1e-5)
      jax.tree_util.tree_map(
          lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
          p8, p1)
      moved = jax.device_get(
          steps.create_train_state(model, tx, 67, config.seed).params)
      assert not np.allclose(moved['fc8']['kernel'], p1['fc8']['kernel'])
      print('OK', l8, l1)
      ''' % os.path.join(ROOT, 'tests'))
  out = subprocess.run([sys.executable, '-c', script], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK' in out.stdout


def test_fake_data_run_writes_metrics_config_and_checkpoint(tmp_path, tiny,
                                                          monkeypatch):
  # A fake clock: each training step takes 1 s, each evaluation 100 s.
  clock = _FakeClock()
  monkeypatch.setattr(progress, 'time', type('T', (), {'perf_counter': clock}))
  make_steps = steps.make_pmapped_steps

  def timed_steps(*args, **kwargs):
    train_step, eval_step = make_steps(*args, **kwargs)

    def step(*a):
      clock.now += 1.0
      return train_step(*a)

    def evaluate(*a):
      clock.now += 100.0
      return eval_step(*a)

    return step, evaluate

  monkeypatch.setattr(train, 'make_pmapped_steps', timed_steps)
  config = tiny(dataset='fake', num_train_steps=5, log_every_steps=2,
                eval_every_steps=3)
  last = train.train_and_evaluate(config, str(tmp_path))
  rows = metrics_writer.read_metrics(str(tmp_path))
  assert [r['step'] for r in rows] == [2, 3, 4, 5]  # The last step is logged.
  logs = [rows[0], rows[2], rows[3]]
  for key in ('train_loss', 'train_top1', 'learning_rate', 'images_per_sec',
              'grad_norm', 'param_norm'):
    assert all(np.isfinite(r[key]) for r in logs), key
    assert key not in rows[1]  # Step 3 evaluates only.
  for key in ('eval_loss', 'eval_top1', 'eval_top5'):
    assert key in rows[1] and key in rows[3] and key not in rows[0]
  # Training images over training time (the clock starts after step 1):
  # step 2 in 1 s; steps 3-4 in 2 s, step 3's evaluation left out; step 5.
  assert [r['images_per_sec'] for r in logs] == pytest.approx([8.0] * 3)
  assert rows[-1]['eval_examples'] == 8
  assert last['step'] == 5
  saved = json.load(open(tmp_path / 'config.json'))
  assert saved['model']['width'] == 0.05 and saved['num_train_steps'] == 5
  assert os.path.isdir(tmp_path / 'checkpoints' / '5')
  assert os.listdir(tmp_path / 'tensorboard')


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_checkpoint(
    tmp_path, tiny):
  # Pixels divided by 1e-38 overflow float32: the loss is NaN from step 1.
  config = tiny(dataset='fake', num_train_steps=3)
  train.train_and_evaluate(config, str(tmp_path))  # A good checkpoint at 3.
  config = tiny(dataset='fake', num_train_steps=6, allow_config_change=True,
                **{'normalization.std': (1e-38, 1e-38, 1e-38)})
  with pytest.raises(train.NonFiniteLossError, match=r'at step 4\b.*step 3'):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3']


@pytest.mark.slow
def test_nonfinite_skip_leaves_parameters_unchanged(tmp_path, tiny):
  config = tiny(dataset='fake', num_train_steps=2, nonfinite='skip',
                **{'normalization.std': (1e-38, 1e-38, 1e-38)})
  model = models.model_from_config(config.model)
  from alexnet_jax import optim  # pylint: disable=g-import-not-at-top
  tx = optim.create_optimizer(config.optimizer)
  state = steps.create_train_state(model, tx, config.image_size, config.seed)
  initial = jax.device_get(state.params)
  train.train_and_evaluate(config, str(tmp_path))
  from alexnet_jax import checkpointing  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'))
  state = ckpt.restore_latest(state)
  assert int(state.step) == 2
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         jax.device_get(state.params), initial)


def test_topk_correct():
  logits = np.array([[0.1, 0.5, 0.2, 0.9], [3.0, 2.0, 1.0, 0.0]], np.float32)
  labels = np.array([1, 3], np.int32)
  np.testing.assert_array_equal(steps.topk_correct(logits, labels, 1), [0, 0])
  np.testing.assert_array_equal(steps.topk_correct(logits, labels, 2), [1, 0])
  np.testing.assert_array_equal(steps.topk_correct(logits, labels, 4), [1, 1])


def test_evaluate_batches_sums_every_batch():
  # Three batches' sums (one device row each), as the eval step returns them.
  sums = [{'loss': [6.0], 'top1': [1.0], 'top5': [3.0], 'count': [3.0]},
          {'loss': [2.0], 'top1': [2.0], 'top5': [2.0], 'count': [2.0]},
          {'loss': [4.0], 'top1': [0.0], 'top5': [1.0], 'count': [3.0]}]
  batches = iter(range(3))
  got = steps.evaluate_batches(
      lambda params, i: {k: np.asarray(v) for k, v in sums[i].items()},
      None, batches)
  assert got == pytest.approx({'eval_loss': 12 / 8, 'eval_top1': 3 / 8,
                               'eval_top5': 6 / 8, 'eval_examples': 8})
  with pytest.raises(ValueError, match='yielded no batches'):
    steps.evaluate_batches(lambda params, batch: {}, None, iter([]))


def test_topk_counts_ties_against_the_model():
  nan, inf = np.nan, np.inf
  logits = np.array([
      [2.0, 2.0, 2.0, 2.0],  # Constant: all four classes tie.
      [3.0, 2.0, 2.0, 1.0],  # Label 1 ties with class 2 for second place.
      [3.0, 2.0, 2.0, 1.0],  # Label 2, the same tie.
      [1.0, 5.0, 5.0, 5.0],  # Label 1 ties for first place with 2 others.
      [nan, nan, nan, nan],  # All NaN.
      [9.0, nan, 0.0, 0.0],  # One NaN, label the largest finite logit.
      [9.0, -inf, 0.0, 0.0],  # An infinite logit elsewhere in the row.
      [inf, 0.0, 0.0, 0.0],  # The label's logit is infinite.
  ], np.float32)
  labels = np.array([1, 1, 2, 1, 0, 0, 0, 0], np.int32)
  # Rank = other classes scoring >= the label: 3, 2, 2, 2, then misses.
  expected = {1: [0, 0, 0, 0, 0, 0, 0, 0],
              2: [0, 0, 0, 0, 0, 0, 0, 0],
              3: [0, 1, 1, 1, 0, 0, 0, 0],
              4: [1, 1, 1, 1, 0, 0, 0, 0]}
  for k, want in expected.items():
    np.testing.assert_array_equal(steps.topk_correct(logits, labels, k), want,
                                  err_msg=f'k={k}')


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(tmp_path, tiny):
  config = tiny(dataset='fake', num_train_steps=4, log_every_steps=2,
                eval_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path / 'a'))
  train.train_and_evaluate(config, str(tmp_path / 'b'))
  timing = ('images_per_sec', 'images_per_sec_per_device', 'elapsed_s')
  strip = lambda rows: [{k: v for k, v in r.items() if k not in timing}
                        for r in rows]
  a = strip(metrics_writer.read_metrics(str(tmp_path / 'a')))
  b = strip(metrics_writer.read_metrics(str(tmp_path / 'b')))
  assert a == b and len(a) == 2


def test_unknown_dataset_lists_close_matches(tmp_path, tiny):
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  config = tiny(dataset='imagenet2013')
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.dataset='imagenet2013'.*'imagenet2012'"):
    train.train_and_evaluate(config, str(tmp_path))


def _tiny_steps(config, total_steps=None):
  from alexnet_jax import optim  # pylint: disable=g-import-not-at-top
  model = models.model_from_config(config.model)
  tx = optim.create_optimizer(config.optimizer)
  step, _ = steps.make_pmapped_steps(
      model, tx, train.step_options(config, 10, total_steps or 10),
      devices=jax.devices()[:1])
  state = placement.replicate(
      steps.create_train_state(model, tx, config.image_size, config.seed),
      jax.devices()[:1])
  rng = np.random.default_rng(0)
  batches = [{'image': rng.integers(0, 256, (1, 8, 67, 67, 3), np.uint8),
              'label': rng.integers(0, 10, (1, 8)).astype(np.int32)}
             for _ in range(5)]
  return step, state, batches


def test_norms_are_computed_on_logged_steps_only(tiny):
  # log_every_steps=2 and total_steps=5: steps 2, 4 and 5 are logged.
  step, state, batches = _tiny_steps(tiny(), total_steps=5)
  for i, batch in enumerate(batches, start=1):
    before = jax.device_get(state.params)
    state, metrics = step(state, batch)
    after = jax.device_get(state.params)
    m = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
    assert np.isfinite(m['grad_norm']) and m['grad_norm'] > 0
    if i in (2, 4, 5):
      flat = lambda t: np.concatenate(
          [np.ravel(x) for x in jax.tree_util.tree_leaves(t)]).astype(np.float64)
      np.testing.assert_allclose(m['param_norm'], np.linalg.norm(flat(after)),
                                 rtol=1e-5)
      np.testing.assert_allclose(
          m['update_norm'], np.linalg.norm(flat(after) - flat(before)),
          rtol=1e-3)
    else:
      assert np.isnan(m['param_norm']) and np.isnan(m['update_norm']), i


def test_train_loss_is_the_mean_of_the_logging_window(tiny):
  # log_every_steps=2: the windows are steps (1, 2), (3, 4) and (5).
  step, state, batches = _tiny_steps(tiny())
  losses = []
  for i, batch in enumerate(batches, start=1):
    state, metrics = step(state, batch)
    m = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
    losses.append(m['step_loss'])
    first = i - 1 - (i - 1) % 2  # The window's first step, 0-based.
    assert m['window_count'] == i - first
    assert m['train_loss'] == pytest.approx(np.mean(losses[first:]), rel=1e-6)
  assert len(set(losses)) == 5  # Each step's own loss.


def test_nonfinite_step_keeps_parameters_and_momentum(tiny):
  config = tiny(**{'normalization.std': (1e-38, 1e-38, 1e-38)})
  step, state, batches = _tiny_steps(config)
  # The momentum and the update count (the learning rate is set each step).
  kept = lambda s: (s.params, s.opt_state.inner_state, s.opt_state.count)
  before = jax.device_get(kept(state))
  state, metrics = step(state, batches[0])
  assert float(metrics['finite'][0]) == 0.0
  assert int(state.step) == 1
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         jax.device_get(kept(state)), before)


def _with_conv_library(config, library):
  """`config` with config.execution.xla_cpu_conv_library = `library`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if 'execution' not in config:  # Configs from before the execution section.
    config.execution = ml_collections.ConfigDict()
  config.execution.xla_cpu_conv_library = library
  return config


# XLA's own name and value for "YNNPACK for dots only" (XLA_FLAGS=--help).
_EIGEN_FLAG = ('--xla_cpu_experimental_ynn_fusion_type='
               'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT')


def test_xla_flags_by_config(monkeypatch):
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  from alexnet_jax import startup  # pylint: disable=g-import-not-at-top
  eigen, default = 'eigen', 'xla_default'
  monkeypatch.setattr(startup, '_settled', None)  # A new process.
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  startup.set_xla_flags(eigen)
  assert os.environ['XLA_FLAGS'] == (
      '--xla_force_host_platform_device_count=2 ' + _EIGEN_FLAG)
  startup.set_xla_flags(eigen)  # Set once, not twice.
  assert os.environ['XLA_FLAGS'].count('ynn') == 1
  # XLA has read them (or may have): another library is refused, not ignored.
  with pytest.raises(RuntimeError, match='xla_cpu_conv_library'):
    startup.set_xla_flags(default)
  assert os.environ['XLA_FLAGS'].count('ynn') == 1
  monkeypatch.setattr(startup, '_settled', None)  # A new process.
  startup.set_xla_flags(default)
  assert os.environ['XLA_FLAGS'] == '--xla_force_host_platform_device_count=2'
  with pytest.raises(config_lib.ConfigError,
                     match=r"execution\.xla_cpu_conv_library='mkl'"):
    startup.set_xla_flags('mkl')
  assert startup.compiler_options(eigen, backend='cpu') == {
      _EIGEN_FLAG[2:].split('=')[0]: _EIGEN_FLAG.split('=')[1]}
  assert startup.compiler_options(eigen, backend='gpu') == {}
  assert (tuple(startup.XLA_CPU_CONV_LIBRARIES) ==
          config_lib.XLA_CPU_CONV_LIBRARIES)


@pytest.mark.slow
def test_eigen_and_default_convolutions_train_alike(tiny):
  from alexnet_jax import startup  # pylint: disable=g-import-not-at-top
  results = []
  for library in ('eigen', 'xla_default'):
    config = _with_conv_library(tiny(**{'model.dropout_rate': 0.0}), library)
    step, state, batches = _tiny_steps(config)
    # One process, both libraries: compile options rather than XLA_FLAGS.
    step = step.lower(state, batches[0]).compile(
        startup.compiler_options(library, backend='cpu') or None)
    for batch in batches[:3]:
      state, metrics = step(state, batch)
    results.append((jax.device_get(state.params),
                    float(metrics['train_loss'][0])))
  (pa, la), (pb, lb) = results
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      pa, pb)


def _computations_with_convolutions(hlo_text: str) -> set[str]:
  names, current = set(), None
  for line in hlo_text.split('\n'):
    if line and not line.startswith(' '):
      current = line.removeprefix('ENTRY ').lstrip('%').split(' ')[0]
    if 'convolution(' in line:
      names.add(current.split('.')[0])
  return names


@pytest.mark.slow
def test_eigen_flag_takes_convolutions_out_of_ynnpack_fusions(tiny, tmp_path):
  step, state, batches = _tiny_steps(tiny())
  default = _computations_with_convolutions(
      step.lower(state, batches[0]).compile().as_text())
  if default == {'main'}:
    pytest.skip('This XLA fuses no convolution by default.')
  # XLA reads XLA_FLAGS at JAX's start: the eigen step compiles in a new
  # process that sets them as the commands do.
  script = textwrap.dedent('''
      import os, sys
      sys.path.insert(0, %r)
      os.environ.pop('XLA_FLAGS', None)
      import jax
      jax.config.update('jax_disable_most_optimizations', True)
      from conftest import tiny_config
      from alexnet_jax import startup
      import test_train
      config = test_train._with_conv_library(tiny_config(), 'eigen')
      startup.set_xla_flags('eigen')
      step, state, batches = test_train._tiny_steps(config)
      with open(%r, 'w') as f:
        f.write(step.lower(state, batches[0]).compile().as_text())
      ''' % (os.path.join(ROOT, 'tests'), str(tmp_path / 'hlo.txt')))
  out = subprocess.run([sys.executable, '-c', script], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  eigen = _computations_with_convolutions((tmp_path / 'hlo.txt').read_text())
  assert eigen == {'main'}, eigen


class _FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_skipped_step_does_not_delay_the_schedule(tiny):
  # Warmup over 4 steps (0.4 epochs of 10): lr(step) = 0.01 * step / 4.
  config = tiny(**{'optimizer.schedule': 'constant',
                   'optimizer.warmup_epochs': 0.4})
  step, state, batches = _tiny_steps(config)
  bad = dict(batches[0], label=np.full_like(batches[0]['label'], 10**6))
  lrs = []
  for i, batch in enumerate([bad] + batches[1:4]):
    state, metrics = step(state, batch)
    assert float(metrics['finite'][0]) == (i > 0)  # Step 0 is skipped.
    lrs.append(float(metrics['learning_rate'][0]))
  # Steps 1-3 use the global step's rate, as an unskipped run does.
  assert lrs[1:] == pytest.approx([0.0025, 0.005, 0.0075])


def _restored_state(config, workdir):
  from alexnet_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from alexnet_jax import optim  # pylint: disable=g-import-not-at-top
  model = models.model_from_config(config.model)
  tx = optim.create_optimizer(config.optimizer)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'))
  state = ckpt.restore_latest(
      steps.create_train_state(model, tx, config.image_size, config.seed))
  ckpt.close()
  return jax.device_get(state)


@pytest.mark.slow
def test_resume_mid_window_with_plateau_matches_uninterrupted(tmp_path, tiny):
  # Logs every 3 steps, evaluates every 2. The plateau rule (patience 1, and
  # min_delta 1.0 so no evaluation after the first improves) divides the rate
  # by 10 at the evaluations of steps 4 and 6. The resumed run stops at step
  # 4, inside the window 4-6, whose step-4 sums come from the checkpoint.
  fields = {'dataset': 'fake', 'log_every_steps': 3, 'eval_every_steps': 2,
            'optimizer.schedule': 'plateau', 'optimizer.warmup_epochs': 0.0,
            'optimizer.learning_rate': 0.01, 'optimizer.plateau_patience': 1,
            'optimizer.plateau_min_delta': 1.0}
  config = tiny(num_train_steps=6, **fields)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(config, straight)
  train.train_and_evaluate(tiny(num_train_steps=4, **fields), resumed)
  train.train_and_evaluate(config, resumed)
  a = {r['step']: r for r in metrics_writer.read_metrics(straight)}
  b = {r['step']: r for r in metrics_writer.read_metrics(resumed)}
  assert sorted(a) == [2, 3, 4, 6] and sorted(b) == [2, 3, 4, 6]
  # Steps 5 and 6 ran at the rate cut at step 4's evaluation.
  assert a[3]['learning_rate'] == pytest.approx(0.01)
  assert a[6]['learning_rate'] == pytest.approx(0.001)
  for key in ('train_loss', 'train_top1', 'learning_rate', 'eval_loss'):
    assert a[6][key] == b[6][key], key
  # The cut at step 6 is in both final checkpoints, with the rule's state.
  for state in (_restored_state(config, straight),
                _restored_state(config, resumed)):
    assert float(state.plateau['lr_scale']) == pytest.approx(0.01)
    assert int(state.plateau['drops']) == 2


@pytest.mark.slow
def test_dropout_masks_depend_on_step_and_device_and_repeat(tiny):
  # jax.vmap with axis_name='batch' stands in for the devices: lax.axis_index
  # gives each lane its index, as pmap does. fc7's update (its gradient,
  # averaged over lanes) shows whether the dropout masks on fc6's and fc7's
  # outputs differ.
  import functools  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alexnet_jax import optim  # pylint: disable=g-import-not-at-top
  config = tiny(**{'optimizer.warmup_epochs': 0.0})  # The same rate at 5, 6.
  assert config.model.dropout_rate == 0.5
  model = models.model_from_config(config.model)
  tx = optim.create_optimizer(config.optimizer)
  state = steps.create_train_state(model, tx, config.image_size, config.seed)
  step_fn = jax.jit(jax.vmap(
      functools.partial(steps.train_step, model=model, tx=tx,
                        options=train.step_options(config, 10, 10)),
      in_axes=(None, 0), axis_name='batch'))
  rng = np.random.default_rng(0)
  a, b = ({'image': rng.integers(0, 256, (4, 67, 67, 3), np.uint8),
           'label': rng.integers(0, 10, (4,)).astype(np.int32)}
          for _ in range(2))
  before = np.asarray(state.params['fc7']['kernel'])

  def fc7_update(step, lanes):
    stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *lanes)
    new, _ = step_fn(state.replace(step=jnp.int32(step)), stacked)
    return np.asarray(new.params['fc7']['kernel'][0]) - before

  first = fc7_update(5, (a, b))
  assert np.abs(first).max() > 0
  np.testing.assert_array_equal(fc7_update(5, (a, b)), first)  # Same masks.
  differs = lambda x: np.linalg.norm(x - first) > 0.1 * np.linalg.norm(first)
  assert differs(fc7_update(6, (a, b)))  # The next step: other masks.
  # Swapping the lanes' examples changes the averaged gradient only if the
  # two lanes draw different masks.
  assert differs(fc7_update(5, (b, a)))
