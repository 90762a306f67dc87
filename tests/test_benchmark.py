"""experiments.benchmark on the CPU, and the model FLOP count it relies on."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from alexnet_jax import models
from alexnet_jax import startup
from experiments import benchmark
from experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the benchmark with TensorFlow, TFDS and ml_collections unimportable,
# as on the GPU machine (JAX, flax, optax, orbax and torch only).
NO_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; "
         "sys.modules['tensorflow_datasets'] = None; "
         "sys.modules['ml_collections'] = None; "
         "runpy.run_module('experiments.benchmark', run_name='__main__', "
         "alter_sys=True)")
TINY = ['--image_size=67', '--width=0.05', '--num_classes=10',
        '--batch_sizes=2', '--warmup=1', '--windows=2', '--steps_per_window=2']


def _env(devices: int = 2) -> dict:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              JAX_DISABLE_MOST_OPTIMIZATIONS='1',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def test_flops_match_the_layer_table_figures():
  # docs/paper.md (derived from the layer table).
  assert common.model_flops(train=False) / 2 == pytest.approx(724.4e6,
                                                              rel=1e-4)
  assert common.model_flops() == pytest.approx(4.14e9, rel=2e-3)
  assert common.model_flops(groups=1, train=False) / 2 == pytest.approx(
      1.135e9, rel=1e-3)
  assert common.model_flops('owt', 224, groups=1, train=False) / 2 == (
      pytest.approx(0.714e9, rel=1e-3))
  conv1 = common.layer_costs()[0].macs
  assert conv1 == 55 * 55 * 96 * 11 * 11 * 3
  # Training: forward, weight gradients, input gradients but conv1's.
  assert common.model_flops() == pytest.approx(
      3 * common.model_flops(train=False) - 2 * conv1)


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
  analytic = common.model_flops(
      model.variant, size, model.width, model.groups, model.overlap_pool,
      model.num_classes, train=False, count_padding=False)
  assert xla == pytest.approx(analytic, rel=0.02)
  assert common.model_flops_of(model, size, train=False) > analytic


def test_peak_table():
  assert benchmark.peak_flops('NVIDIA H200', 'bfloat16') == (989e12, 'bf16')
  assert benchmark.peak_flops('NVIDIA H100 80GB HBM3', 'float32') == (
      494.7e12, 'tf32')
  assert benchmark.peak_flops('NVIDIA H100 PCIe', 'bfloat16')[0] == 756e12
  assert benchmark.peak_flops('NVIDIA A100-SXM4-80GB', 'bfloat16')[0] == 312e12
  assert benchmark.peak_flops('TPU v4', 'bfloat16')[0] == 275e12
  assert benchmark.peak_flops('TPU v5 lite', 'bfloat16')[0] == 197e12
  assert benchmark.peak_flops('TPU v5p', 'bfloat16')[0] == 459e12
  assert benchmark.peak_flops('TPU v6 lite', 'bfloat16')[0] == 918e12
  peak, why = benchmark.peak_flops('cpu', 'float32')
  assert peak is None and 'cpu' in why


def test_row_specs_skip_options_that_do_not_apply():
  specs = benchmark.row_specs(
      [8, 16], ['float32'], ['paper', 'owt', 'no_lrn'], ['split', 'xla'],
      ['matmul', 'reduce_window'], [1], 0, 1.0, 1000)
  by_variant = {v: [s for s in specs if s['variant'] == v]
                for v in ('paper', 'owt', 'no_lrn')}
  assert len(by_variant['paper']) == 2 * 2 * 2  # conv x lrn x batch
  assert len(by_variant['owt']) == 2  # one tower, no LRN: batch only
  assert {s['conv_impl'] for s in by_variant['owt']} == {'-'}
  assert {s['image_size'] for s in by_variant['owt']} == {224}
  assert len(by_variant['no_lrn']) == 2 * 2
  assert {s['lrn_impl'] for s in by_variant['no_lrn']} == {'-'}
  model = benchmark.build_model(by_variant['owt'][0])
  assert (model.variant, model.groups, model.lrn) == ('owt', 1, False)


def test_a_failed_row_is_reported_not_fatal():
  spec = benchmark.row_specs([2], ['float32'], ['paper'], ['split'],
                             ['matmul'], [jax.local_device_count() + 1], 67,
                             0.05, 10)[0]
  row = benchmark.run_row_safely(spec, 0, 1, 1, True)
  assert 'local devices' in row['error']
  table = benchmark.markdown([row], {'device_kind': 'cpu'}, [])
  assert 'failed: ValueError' in table


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


def test_cli_on_cpu_without_tensorflow(tmp_path):
  output = tmp_path / 'bench' / 'cpu.json'
  proc = subprocess.run(
      [sys.executable, '-c', NO_TF, f'--output={output}', '--devices=1,2',
       *TINY],
      cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output) as f:
    result = json.load(f)
  machine = result['machine']
  assert machine['backend'] == 'cpu' and machine['local_devices'] == 2
  assert machine['jax'] == jax.__version__ and machine['date'].startswith('20')
  rows = result['rows']
  assert [(r['devices'], r['dtype']) for r in rows] == [
      (1, 'float32'), (2, 'float32')]
  flops = common.model_flops('paper', 67, 0.05, 2, True, 10)
  for r in rows:
    assert 'error' not in r, r
    assert r['global_batch'] == 2 * r['devices']
    assert r['train_step_ms'] > 0 and r['infer_step_ms'] > 0
    assert r['train_compile_s'] > 0 and r['infer_compile_s'] > 0
    assert r['train_images_per_sec_per_device'] == pytest.approx(
        2 / (r['train_step_ms'] / 1e3))
    assert r['train_images_per_sec'] == pytest.approx(
        r['devices'] * r['train_images_per_sec_per_device'])
    assert len(r['train_step_ms_windows']) == 2
    assert r['train_gflop_per_image'] == pytest.approx(flops / 1e9)
    assert r['train_xla_memory_bytes'] > 0
    assert r['train_loss_finite']
    # A CPU has no peak in the table and reports no memory stats.
    assert r['train_mfu'] is None and r['peak_bytes_in_use'] is None
    # Host memory, which a CPU run is limited by: JAX alone is over 100 MB.
    assert 1e8 < r['process_peak_rss_bytes'] < 2e10
    assert r['params'] == TINY_PAPER_PARAMS
    # The training loop's XLA options (CPU: Eigen convolutions).
    assert r['xla_options'] == startup.XLA_CPU_CONV_LIBRARIES['eigen']
  notes = ' '.join(result['notes'])
  assert 'MFU omitted' in notes and 'Peak memory omitted' in notes
  table = (tmp_path / 'bench' / 'cpu.md').read_text()
  assert table.count('| paper | float32 | split | ') == 2
  assert proc.stdout.strip().endswith(table.strip().splitlines()[-1])


def test_isolated_rows_run_in_their_own_process(tmp_path):
  output = tmp_path / 'iso.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', f'--output={output}',
       '--isolate', '--devices=1', '--variants=owt', '--dtypes=bfloat16',
       '--inference=false',
       *TINY],
      cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(output) as f:
    result = json.load(f)
  (row,) = result['rows']
  assert 'error' not in row, row
  assert (row['variant'], row['dtype']) == ('owt', 'bfloat16')
  assert row['train_step_ms'] > 0 and row['train_loss_finite']
  assert 'infer_step_ms' not in row
  assert result['machine']['backend'] == 'cpu'


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
