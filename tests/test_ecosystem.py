"""The project among JAX tools: packaging, command lines, TensorBoard,
provenance, profiles, and a quiet console."""

import datetime
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import tomllib

import jax
import pytest
import yaml

from alexnet_jax import metrics_writer
from alexnet_jax import provenance
from alexnet_jax import train
from conftest import ROOT
from conftest import tiny_config


def _pyproject():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


# ----------------------------------------------------------------------------
# Packaging.
# ----------------------------------------------------------------------------


def test_accelerator_extras_name_jax_own_extras():
  extras = _pyproject()['optional-dependencies']
  # jax 0.10's wheel metadata: Provides-Extra cuda12, cuda13, tpu.
  for extra in ('cuda12', 'cuda13', 'tpu'):
    assert any(re.match(rf'jax\[{extra}\]', r) for r in extras[extra]), extra
  # The test extra installs from PyPI alone: no URLs or local paths.
  test = extras['test']
  assert not any('@' in r or '://' in r for r in test)
  for name in ('pytest', 'torch', 'nbclient', 'nbformat', 'ipykernel'):
    assert any(r.startswith(name) for r in test), name


@pytest.mark.slow
def test_tensorboard_is_a_dependency_and_its_command_runs():
  assert any(r.startswith('tensorboard>') for r in _pyproject()['dependencies'])
  out = subprocess.run([sys.executable, '-m', 'tensorboard.main', '--help'],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert '--logdir' in out.stdout


# Each console script and flags its --help must list.
SCRIPT_FLAGS = {
    'alexnet-train': ('--config', '--workdir', '--coordinator_address'),
    'alexnet-evaluate': ('--config', '--workdir'),
    'alexnet-predict': ('--workdir', '--checkpoint', '--top_k'),
    'alexnet-convert': ('--input', '--output', '--variant'),
    'alexnet-ablate': ('--config', '--workdir', '--sweep', '--seeds'),
    'alexnet-benchmark': ('--output', '--batch_sizes', '--profile_dir'),
    'alexnet-figure1': ('--config', '--workdir', '--threshold', '--seeds'),
    'alexnet-figure3': ('--run', '--workdir', '--step'),
    'alexnet-figure4': ('--run', '--workdir', '--step', '--queries',
                        '--examples', '--layer'),
    'alexnet-loop-vs-torch': ('--rounds', '--torch_formats', '--output'),
    'alexnet-input-benchmark': ('--config', '--output', '--imagenet_like_dir'),
    'alexnet-prepare-dataset': ('--config', '--output_dir',
                                '--examples_per_shard'),
}


@pytest.mark.slow
def test_every_console_script_shows_its_own_flags():
  scripts = _pyproject()['scripts']
  assert set(scripts) == set(SCRIPT_FLAGS)
  runs = {}
  for name in scripts:
    # The installed script itself, as a user types it (pip puts it beside
    # this Python).
    path = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.exists(path), f'{name} is not installed: pip install -e .'
    runs[name] = subprocess.Popen([path, '--help'], cwd=ROOT,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
  for name, proc in runs.items():
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, (name, stderr[-2000:])
    assert 'Traceback' not in stderr, (name, stderr[-2000:])
    assert 'python -m ' in stdout, (name, 'no example', stdout[:2000])
    for flag in SCRIPT_FLAGS[name]:
      assert flag in stdout, (name, flag, stdout[-2000:])


def test_license_is_the_apache_2_text_and_citation_cites_the_paper():
  # The verbatim Apache-2.0 text, as absl-py ships it.
  absl_license = [f for f in importlib.metadata.files('absl-py')
                  if f.name == 'LICENSE'][0]
  with open(absl_license.locate(), 'rb') as f:
    expected = hashlib.sha256(f.read()).hexdigest()
  with open(os.path.join(ROOT, 'LICENSE'), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == expected
  assert _pyproject()['license'] == {'text': 'Apache-2.0'}

  with open(os.path.join(ROOT, 'CITATION.cff')) as f:
    cff = yaml.safe_load(f)
  assert cff['cff-version'] == '1.2.0' and cff['type'] == 'software'
  paper = cff['preferred-citation']
  assert paper['title'] == ('ImageNet Classification with Deep Convolutional '
                            'Neural Networks')
  assert [a['family-names'] for a in paper['authors']] == [
      'Krizhevsky', 'Sutskever', 'Hinton']
  assert (paper['year'], paper['volume'], paper['start'], paper['end']) == (
      2012, 25, 1097, 1105)
  # The package's metadata links the same paper.
  assert _pyproject()['urls']['Paper'] == paper['url']
  assert paper['url'].startswith('https://papers.nips.cc/')


# ----------------------------------------------------------------------------
# A run and its resume: provenance, epoch and elapsed_s, TensorBoard, profile.
# ----------------------------------------------------------------------------

FIRST_RUN_ELAPSED = 1000.0  # Stands for a long first run.


@pytest.fixture(scope='module')
def resumed_run(tmp_path_factory):
  """4 steps, then a resume to 6; 2 steps per epoch (16 examples, batch 8)."""
  workdir = str(tmp_path_factory.mktemp('run'))
  settings = {'dataset': 'fake', 'fake_data.num_train_examples': 16,
              'log_every_steps': 2, 'profile_steps': 1}
  train.train_and_evaluate(tiny_config(num_train_steps=4, **settings), workdir)
  rows = metrics_writer.read_metrics(workdir)
  rows[-1]['elapsed_s'] = FIRST_RUN_ELAPSED
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  start = time.monotonic()
  train.train_and_evaluate(tiny_config(num_train_steps=6, **settings), workdir)
  return workdir, time.monotonic() - start


@pytest.mark.slow
def test_each_start_appends_a_provenance_line(resumed_run):
  workdir, _ = resumed_run
  lines = provenance.read(workdir)
  assert [line['start_step'] for line in lines] == [0, 4]
  line = lines[-1]
  for dist in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy'):
    assert line['packages'][dist] == importlib.metadata.version(dist), dist
  assert line['python'] == platform.python_version()
  assert line['backend'] == jax.default_backend()
  assert line['device_kind'] == jax.devices()[0].device_kind
  assert line['device_count'] == jax.device_count()
  assert line['process_count'] == 1
  assert line['hostname'] == socket.gethostname()
  assert line['command'] == sys.argv
  when = datetime.datetime.fromisoformat(line['time_utc'])
  assert when.utcoffset() == datetime.timedelta(0)
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT,
                        capture_output=True, text=True)
  if head.returncode == 0:  # Tests run from a git checkout.
    assert line['git']['commit'] == head.stdout.strip()
    assert isinstance(line['git']['dirty'], bool)
  else:
    assert line['git'] is None


def test_rows_carry_epoch_and_elapsed_across_the_resume(resumed_run):
  workdir, resume_seconds = resumed_run
  rows = metrics_writer.read_metrics(workdir)
  assert [r['step'] for r in rows] == [2, 4, 6]
  assert [r['epoch'] for r in rows] == [1.0, 2.0, 3.0]  # step * 8 / 16.
  assert rows[1]['elapsed_s'] == FIRST_RUN_ELAPSED
  # The resumed run counts on from the first run's last row.
  assert FIRST_RUN_ELAPSED < rows[2]['elapsed_s'] < (
      FIRST_RUN_ELAPSED + resume_seconds)
  assert 0 < rows[0]['elapsed_s']


def test_tensorboard_holds_train_and_eval_scalars_and_the_config(resumed_run):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  workdir, _ = resumed_run
  events = event_accumulator.EventAccumulator(
      os.path.join(workdir, 'tensorboard'),
      size_guidance={event_accumulator.SCALARS: 0,
                     event_accumulator.TENSORS: 0})
  events.Reload()
  tags = events.Tags()
  for tag in ('train/loss', 'train/top1', 'train/learning_rate',
              'train/images_per_sec', 'train/epoch', 'eval/loss',
              'eval/top1', 'eval/top5'):
    assert tag in tags['scalars'], (tag, tags['scalars'])
  assert all(t.startswith(('train/', 'eval/')) for t in tags['scalars'])
  rows = {r['step']: r for r in metrics_writer.read_metrics(workdir)}
  loss = {e.step: e.value for e in events.Scalars('train/loss')}
  assert loss == pytest.approx({s: r['train_loss'] for s, r in rows.items()})
  assert [e.step for e in events.Scalars('eval/top1')] == [4, 6]

  # The config, as text, once per start.
  texts = events.Tensors('config/text_summary')
  assert len(texts) == 2
  text = texts[-1].tensor_proto.string_val[0].decode()
  assert '"num_train_steps": 6' in text

  # And as hyperparameters for the HParams dashboard.
  content = events.SummaryMetadata(
      '_hparams_/session_start_info').plugin_data.content
  hparams = plugin_data_pb2.HParamsPluginData.FromString(
      content).session_start_info.hparams
  assert hparams['model.width'].number_value == 0.05
  assert hparams['dataset'].string_value == 'fake'
  assert hparams['model.overlap_pool'].bool_value is True


def test_negative_profile_steps_is_refused():
  from alexnet_jax import config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match=r'config.profile_steps=-1'):
    config_lib.validate(tiny_config(profile_steps=-1))


def test_profile_steps_writes_a_trace(resumed_run):
  workdir, _ = resumed_run
  traces = glob.glob(os.path.join(workdir, 'profile', '**', '*.xplane.pb'),
                     recursive=True)
  assert len(traces) == 2  # One per start.
  assert all(os.path.getsize(t) > 0 for t in traces)


# ----------------------------------------------------------------------------
# A quiet console.
# ----------------------------------------------------------------------------

NOISE = ('oneDNN', 'TF_ENABLE_ONEDNN_OPTS', 'Logging before InitGoogle',
         'before absl::InitializeLog', "Unable to initialize backend 'tpu'")


@pytest.mark.slow
def test_training_command_prints_no_start_up_notices(tmp_path):
  # As alexnet-train runs it; TensorFlow is imported when the data are
  # created, as a real dataset's input pipeline imports it.
  argv = ['alexnet-train', '--config=configs/default.py',
          f'--workdir={tmp_path}', '--config.dataset=fake',
          '--config.model.width=0.05', '--config.image_size=67',
          '--config.batch_size=8', '--config.eval_batch_size=8',
          '--config.num_train_steps=2', '--config.log_every_steps=2',
          '--config.eval_every_steps=0', '--config.checkpoint_every_steps=0']
  code = '\n'.join([
      'import sys',
      'import jax',
      "jax.config.update('jax_disable_most_optimizations', True)",
      'from alexnet_jax import main, train',
      'real = train.create_data',
      'def create_data(config):',
      '  import tensorflow',
      '  return real(config)',
      'train.create_data = create_data',
      f'sys.argv = {argv!r}',
      'main.run()',
  ])
  # Without JAX_PLATFORMS, JAX probes for a TPU as users' runs do.
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS',
                      'JAX_PLATFORMS')}
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'step 2/2' in out.stderr  # The progress lines still show.
  for noise in NOISE:
    assert noise not in out.stderr, (noise, out.stderr[-3000:])


# ----------------------------------------------------------------------------
# Plots that say what they show.
# ----------------------------------------------------------------------------


def _stats(deltas, seeds):
  """A results table as ablate.variant_stats gives it: (mean, std, n)."""
  std = float('nan') if seeds == 1 else 0.01
  stats = {'baseline': {'runs': seeds}}
  for name, (top1, top5) in deltas.items():
    stats[name] = {'runs': seeds,
                   'delta_final_eval_top1_error': (top1, std, seeds),
                   'delta_final_eval_top5_error': (top5, std, seeds)}
  return stats


def _has_error_bars(ax):
  from matplotlib.collections import LineCollection  # pylint: disable=g-import-not-at-top
  return (any(getattr(c, 'errorbar', None) is not None for c in ax.containers)
          or any(isinstance(c, LineCollection) for c in ax.collections))


def test_split_outliers():
  from experiments import plots  # pylint: disable=g-import-not-at-top
  assert plots.split_outliers({'a': 1.0, 'b': 2.0, 'c': 32.0}) == (
      ['a', 'b'], ['c'])
  assert plots.split_outliers({'a': 1.0, 'b': 2.5, 'c': 6.0}) == (
      ['a', 'b', 'c'], [])  # 6 < 3 x 2.5.
  assert plots.split_outliers(
      {'a': -0.5, 'b': 40.0, 'c': 1.0, 'd': 30.0, 'e': 0.8}) == (
          ['a', 'c', 'e'], ['b', 'd'])  # 30 > 3 x 1; 40 < 3 x 30.
  assert plots.split_outliers({'a': 6.0, 'b': 2.0, 'c': 0.1}) == (
      ['a', 'b', 'c'], [])  # The gap (2 > 3 x 0.1) would leave one of three.


def test_one_seed_deltas_plot_has_no_error_bars_and_says_n(tmp_path):
  from experiments import plots  # pylint: disable=g-import-not-at-top
  # tanh's change dwarfs the others', as in the default job's ablation.
  stats = _stats({'no_lrn': (0.056, 0.001), 'no_dropout': (0.008, 0.0),
                  'tanh': (0.324, 0.008)}, seeds=1)
  fig = plots.deltas_figure(stats, 'baseline', num_classes=10)
  assert 'n = 1 seed' in fig.get_suptitle()
  assert len(fig.axes) == 2  # tanh on a panel of its own.
  assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ['tanh']
  for ax in fig.axes:
    assert not _has_error_bars(ax)
    labels = ax.get_legend_handles_labels()[1]
    assert not any('top-5' in label for label in labels)  # 10 classes.
  assert plots.plot_deltas(stats, 'baseline', str(tmp_path / 'd.png'), 10)
  assert (tmp_path / 'd.png').stat().st_size > 0

  # Three seeds and 1000 classes: spreads and top-5 are shown.
  stats = _stats({'no_lrn': (0.014, 0.012), 'no_dropout': (0.010, 0.008)},
                 seeds=3)
  fig = plots.deltas_figure(stats, 'baseline', num_classes=1000)
  (ax,) = fig.axes
  assert 'n = 3 seeds' in fig.get_suptitle() and _has_error_bars(ax)
  assert any('top-5' in label for label in ax.get_legend_handles_labels()[1])
