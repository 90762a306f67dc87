"""experiments.ablate and experiments.figure1: runs, skips, resumes, outputs."""

import copy
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import train
from experiments import ablate
from experiments import common
from experiments import figure1
from experiments import summaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# configs/default.py shrunk to seconds on a CPU, as dotted overrides (so the
# same config can be given to the CLI as --config.x=y flags).
TINY = {
    'dataset': 'fake',
    'model.width': 0.05,
    'image_size': 67,
    'resize_size': 72,
    'batch_size': 8,
    'eval_batch_size': 8,
    'fake_data.num_train_examples': 64,
    'fake_data.eval_steps': 1,
    'num_train_steps': 4,
    'log_every_steps': 1,
    'eval_every_steps': 2,
    'checkpoint_every_steps': 0,
}


def _tiny_base():
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.lock()
  return common.with_overrides(config, TINY, 'test')


class _Recorder:
  """train_and_evaluate, counting calls; `stop_at[variant]` ends a session
  early (as SIGTERM would) by training that session to a smaller step."""

  def __init__(self, stop_at=None):
    self.calls = []
    self.stop_at = stop_at or {}

  def __call__(self, config, workdir):
    variant = os.path.basename(os.path.dirname(workdir))
    self.calls.append(variant)
    if variant in self.stop_at:
      config = copy.deepcopy(config)
      config.num_train_steps = self.stop_at[variant]
    return train.train_and_evaluate(config, workdir)


def _never_train(config, workdir):
  raise AssertionError(f'trained {workdir} again')


def _read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_ablation_interrupt_resume_skip_and_outputs(tmp_path):
  base = _tiny_base()
  variants = {'baseline': {}, 'no_overlap': {'model.overlap_pool': False}}
  workdir = str(tmp_path / 'ablate')

  # Session 1: no_overlap stops at step 2 of 4; the sweep stops there.
  first = _Recorder(stop_at={'no_overlap': 2})
  with pytest.raises(common.RunInterrupted, match='stopped at step 2 of 4'):
    ablate.run_ablation(base, workdir, variants, seeds=1, train_fn=first)
  assert first.calls == ['baseline', 'no_overlap']
  record = common.read_record(os.path.join(workdir, 'no_overlap', 'seed0'))
  assert record['last_step'] == 2 and record['sessions'] == 1
  interrupted_wall = record['wall_time_s']

  # Session 2: the finished baseline is skipped, no_overlap resumes at step 2.
  second = _Recorder()
  paths = ablate.run_ablation(base, workdir, variants, seeds=1,
                              target_train_error=0.9, train_fn=second)
  assert second.calls == ['no_overlap']
  run_dir = os.path.join(workdir, 'no_overlap', 'seed0')
  record = common.read_record(run_dir)
  assert record['sessions'] == 2 and record['last_step'] == 4
  assert record['wall_time_s'] > interrupted_wall
  train_steps = [r['step'] for r in common.read_rows(run_dir)
                 if 'train_loss' in r]
  assert train_steps == [1, 2, 3, 4]

  # The CSV: one row per variant and seed, with the run's numbers.
  rows = _read_csv(paths['csv'])
  assert [r['variant'] for r in rows] == ['baseline', 'no_overlap']
  assert tuple(rows[0]) == ablate.CSV_FIELDS
  for row in rows:
    assert int(row['steps']) == 4 and row['seed'] == '0'
    for field in ('final_eval_top1_error', 'final_eval_top5_error',
                  'best_eval_top1_error'):
      assert 0.0 <= float(row[field]) <= 1.0
    assert float(row['best_eval_top1_error']) <= float(
        row['final_eval_top1_error'])
    assert math.isfinite(float(row['final_train_loss']))
    assert float(row['wall_time_s']) > 0
    # Logged every step with a target of 90% error: the first logged step
    # whose training error is at most 0.9, read from metrics.jsonl here.
    with open(os.path.join(row['workdir'], 'metrics.jsonl')) as f:
      logged = [json.loads(l) for l in f if l.strip()]
    hits = [r['step'] for r in logged
            if 'train_top1' in r and 1.0 - r['train_top1'] <= 0.9]
    got = row['steps_to_target_train_error']
    assert (float(got) == hits[0]) if hits else got == '', (got, hits)
  wall = {r['variant']: float(r['wall_time_s']) for r in rows}
  assert wall['no_overlap'] == pytest.approx(record['wall_time_s'])

  # The Markdown: both variants, the paper's 0.4/0.3 beside no_overlap, the
  # change in points, the scale sentence.
  with open(paths['md']) as f:
    md = f.read()
  line = next(l for l in md.splitlines() if l.startswith('| `no_overlap`'))
  assert '+0.4 / +0.3' in line
  delta = 100 * (float(rows[1]['final_eval_top1_error']) -
                 float(rows[0]['final_eval_top1_error']))
  assert f'{delta:+.2f}' in line
  assert '| `baseline`' in md and '0 (baseline)' in md
  assert 'the fake dataset' in md and '90 epochs of ImageNet' in md
  for key in ('curves', 'deltas'):
    with open(paths[key], 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.basename(paths[key]) in md

  # Session 3: everything finished, nothing trains, the numbers stay.
  ablate.run_ablation(base, workdir, variants, seeds=1,
                      target_train_error=0.9, train_fn=_never_train)
  assert _read_csv(paths['csv']) == rows

  # The command line on the same workdir and config skips every run too.
  flags = [f'--config.{k}={v}' for k, v in TINY.items()]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.ablate',
       '--config=configs/default.py', f'--workdir={workdir}',
       '--variants=baseline,no_overlap', '--target_train_error=0.9', *flags],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'finished before; skipped' in proc.stderr
  assert 'training to step' not in proc.stderr
  assert '| `no_overlap`' in proc.stdout
  assert _read_csv(paths['csv']) == rows


def test_steps_to_reach_on_a_hand_made_series():
  steps = np.array([10, 20, 30, 40])
  errors = np.array([0.95, 0.91, 0.9, 0.5])
  assert summaries.steps_to_reach(steps, errors, 0.9) == 30.0  # At the target.
  assert summaries.steps_to_reach(steps, errors, 0.99) == 10.0
  assert summaries.steps_to_reach(steps, errors, 0.6) == 40.0
  assert math.isnan(summaries.steps_to_reach(steps, errors, 0.4))  # Never.


def test_figure1_ratio_from_recorded_runs(tmp_path):
  """figure1's outputs from runs whose metrics are written by hand."""
  base = _tiny_base()
  errors = {'relu': [0.9, 0.5, 0.2, 0.1], 'tanh': [0.9, 0.8, 0.6, 0.2]}

  def fake_train(config, workdir):
    variant = os.path.basename(os.path.dirname(workdir))
    assert config.model.activation == variant
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      for step, err in enumerate(errors[variant], 1):
        f.write(json.dumps({'step': step, 'train_loss': err,
                            'train_top1': 1 - err}) + '\n')

  result = figure1.run_figure1(base, str(tmp_path), threshold=0.25,
                               train_fn=fake_train)
  assert result['steps_to_threshold'] == {'relu': [3.0], 'tanh': [4.0]}
  assert result['ratio_kind'] == 'exact'
  assert result['ratio_value'] == pytest.approx(4 / 3)
  with open(result['paths']['json']) as f:
    assert json.load(f)['ratio_value'] == pytest.approx(4 / 3)
  with open(result['paths']['md']) as f:
    md = f.read()
  assert '1.33x' in md and '6x' in md
  with open(result['paths']['png'], 'rb') as f:
    assert f.read(4) == b'\x89PNG'

  # tanh never reaching the threshold gives a lower bound, stored as JSON null
  # steps (never NaN).
  errors['tanh'] = [0.9, 0.8, 0.7, 0.6]
  result = figure1.run_figure1(
      base, str(tmp_path / 'again'), threshold=0.25, train_fn=fake_train)
  assert result['ratio_kind'] == 'lower_bound'
  assert result['ratio_value'] == pytest.approx(4 / 3)
  with open(result['paths']['json']) as f:
    assert json.load(f)['steps_to_threshold']['tanh'] == [None]


def test_variant_stats_pairs_deltas_by_seed():
  rows = []
  for variant, errs in (('baseline', [0.50, 0.40]), ('no_lrn', [0.52, 0.46])):
    for k, err in enumerate(errs):
      rows.append({'variant': variant, 'seed_index': k,
                   'final_eval_top1_error': err, 'final_eval_top5_error': err,
                   'best_eval_top1_error': err, 'best_eval_top5_error': err,
                   'final_train_loss': 1.0,
                   'steps_to_target_train_error': math.nan,
                   'wall_time_s': 1.0})
  stats = ablate.variant_stats(rows, ['baseline', 'no_lrn'], 'baseline')
  mean, std, n = stats['no_lrn']['delta_final_eval_top1_error']
  assert n == 2 and mean == pytest.approx(0.04)
  assert std == pytest.approx(np.std([0.02, 0.06], ddof=1))
  assert stats['no_lrn']['final_eval_top1_error'][0] == pytest.approx(0.49)
  assert stats['no_lrn']['steps_to_target_train_error'][2] == 0


def test_sweep_file_and_override_errors(tmp_path):
  sweep = ablate.load_sweep(ablate.DEFAULT_SWEEP)
  for name in ('baseline', 'no_lrn', 'no_overlap', 'no_dropout', 'one_tower',
               'tanh', 'no_lighting'):
    assert name in sweep
  assert sweep['one_tower'] == {'model.groups': 1}

  with pytest.raises(ValueError, match=r"\['nope'\] not in"):
    ablate.select(sweep, ['baseline', 'nope'], 'sweeps.py')

  bad = tmp_path / 'bad.py'
  bad.write_text('def sweep():\n  return {"x": {"model.lrm": False}}\n')
  variants = ablate.load_sweep(str(bad))
  with pytest.raises(ValueError, match=r'config\.model\.lrm does not exist'):
    common.plan_runs(_tiny_base(), str(tmp_path), variants, 1, str(bad))
  with pytest.raises(ValueError, match='model.activation'):
    common.plan_runs(_tiny_base(), str(tmp_path),
                     {'gelu': {'model.activation': 'gelu'}}, 1, 'test')
  no_fn = tmp_path / 'none.py'
  no_fn.write_text('X = 1\n')
  with pytest.raises(ValueError, match='defines no sweep'):
    ablate.load_sweep(str(no_fn))
  with pytest.raises(ValueError, match='names a directory'):
    common.check_name('a/b', 'Variant name')


def test_a_workdir_of_another_config_is_refused(tmp_path):
  base = _tiny_base()
  (run,) = common.plan_runs(base, str(tmp_path), {'baseline': {}}, 1, 't')
  os.makedirs(run.workdir)
  other = common.with_overrides(base, {'model.lrn': False}, 't')
  with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
    f.write(other.to_json_best_effort())
  # The run's config says None: the variant's LRN, True.
  with pytest.raises(ValueError, match=r'model\.lrn False -> True'):
    common.execute(run, _never_train)
  # Durations and cadences may change between sessions of one run.
  longer = common.with_overrides(base, {'num_train_steps': 9,
                                        'log_every_steps': 3}, 't')
  with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
    f.write(longer.to_json_best_effort())
  common.check_same_experiment(run)
  # So may the execution choices, and the places older records kept them.
  record = json.loads(base.to_json_best_effort())
  record['model']['lrn_impl'] = 'matmul'
  record['execution']['conv_impl'] = 'xla'
  record['xla_cpu_conv_library'] = record['execution'].pop(
      'xla_cpu_conv_library')
  with open(os.path.join(run.workdir, 'config.json'), 'w') as f:
    json.dump(record, f)
  common.check_same_experiment(run)
