"""experiments.benchmark on the CPU, its variants, and the model FLOP count."""

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import models
from alexnet_jax import startup
from experiments import bench_report
from experiments import common
from experiments import flops as flops_lib
from experiments import harness
from experiments import op_variants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the benchmark with TensorFlow, TFDS and ml_collections unimportable,
# as on the GPU machine (JAX, flax, optax, orbax and torch only).
NO_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; "
         "sys.modules['tensorflow_datasets'] = None; "
         "sys.modules['ml_collections'] = None; "
         "runpy.run_module('experiments.benchmark', run_name='__main__', "
         "alter_sys=True)")
TINY = ['--image_size=67', '--width=0.05', '--num_classes=10',
        '--warmup=1', '--windows=2', '--steps_per_window=2',
        '--ceiling_size=128', '--batch_sizes=2']
SPEC = {'variant': 'default', 'dtype': 'float32', 'devices': 1,
        'batch_per_device': 2, 'image_size': 67, 'width': 0.05,
        'num_classes': 10}


def _env(devices: int = 2) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              JAX_DISABLE_MOST_OPTIMIZATIONS='1',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def test_flops_match_the_layer_table_figures():
  # docs/paper.md (derived from the layer table).
  assert flops_lib.model_flops(train=False) / 2 == pytest.approx(724.4e6,
                                                              rel=1e-4)
  assert flops_lib.model_flops() == pytest.approx(4.14e9, rel=2e-3)
  assert flops_lib.model_flops(groups=1, train=False) / 2 == pytest.approx(
      1.135e9, rel=1e-3)
  assert flops_lib.model_flops('owt', 224, groups=1, train=False) / 2 == (
      pytest.approx(0.714e9, rel=1e-3))
  conv1 = flops_lib.layer_costs()[0].macs
  assert conv1 == 55 * 55 * 96 * 11 * 11 * 3
  # Training: forward, weight gradients, input gradients but conv1's.
  assert flops_lib.model_flops() == pytest.approx(
      3 * flops_lib.model_flops(train=False) - 2 * conv1)


@pytest.mark.parametrize('fields,size', [
    (dict(width=0.25), 67),
    (dict(width=0.25, overlap_pool=False, groups=1), 99),
    (dict(variant='owt', width=0.25, groups=1), 99),
])
def test_flops_match_xla_cost_analysis(fields, size):
  """The analytic forward FLOPs agree with XLA's count of the compiled model
  (which skips the taps on padding, and adds ReLU, pooling and bias: <1%)."""
  model = models.AlexNet(num_classes=10, lrn=False, **fields)
  x = jnp.zeros((2, size, size, 3))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  cost = jax.jit(lambda p, x: model.apply(p, x)).lower(
      params, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla = cost['flops'] / 2
  analytic = flops_lib.model_flops(
      model.variant, size, model.width, model.groups, model.overlap_pool,
      model.num_classes, train=False, count_padding=False)
  assert xla == pytest.approx(analytic, rel=0.02)
  assert flops_lib.model_flops_of(model, size, train=False) > analytic


def test_every_variant_names_config_fields_and_forms_that_exist():
  for name in harness.VARIANTS:
    spec = dict(SPEC, variant=name)
    config = harness.variant_config(spec)
    for dotted, value in harness.VARIANTS[name].items():
      if dotted == 'ops':  # The forms of the operations it swaps in.
        assert set(value) <= set(op_variants.SWAPS), name
        continue
      node = config
      for part in dotted.split('.'):
        node = node[part]
      assert node == value, (name, dotted)
  assert set(op_variants.SWAPS) <= set(harness.VARIANTS)
  # Later names win; the forms add up, in order.
  assert harness.variant_overrides('flax_baseline+one_tower+s2d') == {
      'model.groups': 1,
      'ops': ('conv_xla', 'lrn_banded', 'pool_reduce_window', 's2d')}
  config = harness.variant_config(
      dict(SPEC, variant='flax_baseline+lrn_matmul+s2d', image_size=0))
  assert config['image_size'] == 227
  assert config['execution'] == {'xla_cpu_conv_library': 'eigen'}
  owt = harness.variant_config(dict(SPEC, variant='owt', image_size=0))
  model = harness.build_model(owt)  # groups and lrn: the variant's own.
  assert (model.variant, model.groups, model.lrn, owt['image_size']) == (
      'owt', 1, False, 224)
  with pytest.raises(ValueError, match=r"variant 'x': config.execution.lrm "
                     r"does not exist; the fields there are "
                     r"\['xla_cpu_conv_library'\]"):
    common.with_overrides(config, {'execution.lrm': 'shift'}, "variant 'x'")


@pytest.mark.slow  # Two training steps compiled, about 30 s.
def test_rows_compile_the_forms_their_variant_swaps_in():
  # XLA's grouped convolution, and conv1's 67x67x3 input as 17x17 blocks of
  # 4x4x3; then the library's forms again, in the same process.
  marks = ('feature_group_count=2', '17,17,48')
  swapped = harness.JaxRow(dict(SPEC, variant='conv_xla+s2d')).step.as_text()
  default = harness.JaxRow(SPEC).step.as_text()
  assert [m in swapped for m in marks] == [True, True]
  assert [m in default for m in marks] == [False, False]


def test_bad_flags_fail_in_one_line_before_compiling(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark',
       f'--output={tmp_path}/x.json', '--variants=default,lrn_fast'],
      cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "benchmark: variant 'lrn_fast': 'lrn_fast' is not one of "
      f"{tuple(harness.VARIANTS)}.")


def test_report_table_has_the_communication_and_error_cells():
  row = dict(SPEC, variant='towers', devices=2, images_per_sec_per_device=1.0,
             bytes_sent_per_device=2.5e6, hlo_bytes_sent_per_device=2.5e6)
  failed = dict(SPEC, error='ValueError: devices=9: this machine has 1')
  report = {'machine': {'device_kind': 'cpu'}, 'notes': [],
            'settings': {'windows': 2, 'steps_per_window': 1},
            'rows': [row, failed]}
  table = bench_report.markdown(report)
  assert '| 2.50, 2.50 |' in table
  assert '| default | float32 | 1 | 2 | failed: ValueError' in table


# The paper net at width 0.05, 10 classes, 67x67, by hand: conv channels
# round(c * 0.05 / 2) * 2 = 4, 12, 20, 20, 12 (conv2, conv4, conv5 in two
# towers), fc width round(4096 * 0.05) = 205, pool5 is 1x1.
TINY_PAPER_PARAMS = (
    11 * 11 * 3 * 4 + 4  # conv1
    + 5 * 5 * 2 * 12 + 12  # conv2: 4 / 2 inputs per tower
    + 3 * 3 * 12 * 20 + 20  # conv3
    + 3 * 3 * 10 * 20 + 20  # conv4
    + 3 * 3 * 10 * 12 + 12  # conv5
    + 12 * 205 + 205  # fc6
    + 205 * 205 + 205  # fc7
    + 205 * 10 + 10)  # fc8


@pytest.mark.slow
def test_cli_on_cpu_without_tensorflow(tmp_path):
  output = tmp_path / 'bench' / 'cpu.json'
  proc = subprocess.run(
      [sys.executable, '-c', NO_TF, f'--output={output}', '--devices=1,2',
       '--variants=default,lrn_matmul+s2d,towers', '--torch=none', *TINY],
      cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output) as f:
    result = json.load(f)
  machine = result['machine']
  assert machine['backend'] == 'cpu' and machine['local_devices'] == 2
  assert machine['jax'] == jax.__version__ and machine['date'].startswith('20')
  rows = {(r['variant'], r['devices']): r for r in result['rows']}
  # Width 0.05 leaves fc6 205 neurons, which two devices cannot split: that
  # row fails alone, named; the one-device towers row needs a pair.
  assert 'fc6/fc7' in rows[('towers', 2)]['error']
  assert 'error' in rows[('towers', 1)]
  flops = flops_lib.model_flops('paper', 67, 0.05, 2, True, 10)
  ceiling = result['matmul_ceiling_flops']['float32']
  for key in [(v, n) for v in ('default', 'lrn_matmul+s2d') for n in (1, 2)]:
    r = rows[key]
    assert 'error' not in r, r
    assert r['global_batch'] == 2 * r['devices']
    assert r['step_ms'] > 0 and r['compile_s'] > 0
    assert r['process_cpu_ms_per_step'] >= 0
    assert r['images_per_sec_per_device'] == pytest.approx(
        2 / (r['step_ms'] / 1e3))
    assert len(r['step_ms_windows']) == 2
    assert r['train_gflop_per_image'] == pytest.approx(flops / 1e9)
    assert r['fraction_of_ceiling'] == pytest.approx(
        flops * r['images_per_sec_per_device'] / ceiling)
    assert r['xla_memory_bytes'] > 0 and r['loss_finite']
    assert r['peak_bytes_in_use'] is None  # A CPU reports no memory stats.
    # Host memory, which a CPU run is limited by: JAX alone is over 100 MB.
    assert 1e8 < r['process_peak_rss_bytes'] < 2e10
    assert r['params'] == TINY_PAPER_PARAMS
    # The training loop's XLA options (CPU: Eigen convolutions).
    assert r['xla_options'] == startup.XLA_CPU_CONV_LIBRARIES['eigen']
  assert rows[('lrn_matmul+s2d', 1)]['overrides'] == {
      'ops': ['lrn_matmul', 's2d']}
  assert 'Peak memory omitted' in ' '.join(result['notes'])
  table = (tmp_path / 'bench' / 'cpu.md').read_text()
  assert table.count('| lrn_matmul+s2d | float32 | ') == 2
  assert proc.stdout.strip().endswith(table.strip().splitlines()[-1])


@pytest.mark.slow
def test_isolated_rows_run_in_their_own_process(tmp_path):
  output = tmp_path / 'iso.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', f'--output={output}',
       '--isolate', '--devices=1', '--variants=owt', '--dtypes=bfloat16',
       '--batch_sizes=2,4', f'--profile_dir={tmp_path}/profile', *TINY[:-1]],
      cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output) as f:
    result = json.load(f)
  small, large = result['rows']
  for row, batch in ((small, 2), (large, 4)):
    assert 'error' not in row, row
    assert (row['variant'], row['dtype']) == ('owt', 'bfloat16')
    assert row['batch_per_device'] == batch
    assert row['step_ms'] > 0 and row['loss_finite']
  # Each row's own process: its own RSS peak (a shared process would give
  # both rows the same maximum).
  assert small['process_peak_rss_bytes'] != large['process_peak_rss_bytes']
  assert result['machine']['backend'] == 'cpu'
  assert glob.glob(f'{tmp_path}/profile/**/*.xplane.pb', recursive=True)


@pytest.mark.slow
def test_loop_against_torch_alternates_and_reports_medians(tmp_path):
  pytest.importorskip('torch')
  output = tmp_path / 'loop_vs_torch.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.loop_vs_torch', '--rounds=2',
       '--steps=4', '--log_every=2', '--width=0.05', '--image_size=67',
       '--batch_size=4', '--torch_formats=nchw', f'--output={output}'],
      cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.load(open(output))
  names = ['jax loop', 'torch eager nchw']
  assert [r['order'] for r in result['rounds']] == [names, names[::-1]]
  for r in result['rounds']:
    # Steps 2 and 4 of the loop are timed; PyTorch times 2 windows of 2.
    assert len(r['results']['jax loop']['images_per_sec_windows']) == 2
    assert len(r['results']['torch eager nchw']['images_per_sec_windows']) == 2
    for name in names:  # Each child's own peak: JAX alone is over 100 MB.
      assert 1e8 < r['results'][name]['peak_rss_bytes'] < 2e10
  for name in names:
    assert result['medians'][name] == pytest.approx(
        sum(r['results'][name]['images_per_sec'] for r in result['rounds'])
        / 2)
  assert result['best_torch'] == 'torch eager nchw'
  assert result['loop_vs_best_torch'] == pytest.approx(
      result['medians']['jax loop'] / result['medians']['torch eager nchw'])
  assert proc.stdout.strip().splitlines()[-1].endswith(
      f"{result['loop_vs_best_torch']:.2f}x.")
