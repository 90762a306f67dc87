"""examples/quickstart.ipynb matches its .py twin, is committed with the
outputs of one run top to bottom, and runs.

The committed outputs come from the README Quickstart's run in
/tmp/alexnet_default. After changing the notebook, train that run with the
README's command and write them again from the repository root:

  python tests/test_notebook.py
"""

import base64
import glob
import os
import re
import sys

import nbclient
import nbformat
import pytest

from conftest import ROOT

EXAMPLES = os.path.join(ROOT, 'examples')
NOTEBOOK = os.path.join(EXAMPLES, 'quickstart.ipynb')
IMAGES = sorted(os.path.relpath(p, EXAMPLES) for p in
                glob.glob(os.path.join(EXAMPLES, 'images', '*.jpg')))


def percent_cells(path):
  """(kind, source) of each cell of a jupytext percent-format script."""
  with open(path) as f:
    text = f.read()
  cells = []
  for chunk in text.split('\n# %%')[1:]:
    head, _, body = chunk.partition('\n')
    body = body.strip('\n')
    if '[markdown]' in head:
      body = '\n'.join(re.sub(r'^# ?', '', line) for line in body.splitlines())
      cells.append(('markdown', body))
    else:
      cells.append(('code', body))
  return cells


def execute(notebook):
  """Runs `notebook` in place, from examples/ as a reader would."""
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          record_timing=False,
                          resources={'metadata': {'path': EXAMPLES}}).execute()


@pytest.fixture
def notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(notebook):
  return [c for c in notebook.cells if c.cell_type == 'code']


def outputs_of(notebook, snippet):
  """The outputs of the one code cell whose source holds `snippet`."""
  cells = [c for c in code_cells(notebook) if snippet in c.source]
  assert len(cells) == 1, snippet
  return cells[0].outputs


def pngs(outputs):
  return [base64.b64decode(o.data['image/png']) for o in outputs
          if 'image/png' in o.get('data', {})]


def stdout(notebook):
  return ''.join(o.text for c in code_cells(notebook) for o in c.outputs
                 if o.output_type == 'stream' and o.name == 'stdout')


def check_outputs(notebook):
  """What every run of the notebook shows; returns (run directory, step,
  last eval top-1, {image: [(class, probability)] best first})."""
  from alexnet_jax.datasets import shapes  # pylint: disable=g-import-not-at-top
  for snippet in ('read_metrics', 'run_figure3', 'Predictor('):
    images = pngs(outputs_of(notebook, snippet))
    assert len(images) == 1 and images[0].startswith(b'\x89PNG'), snippet
  text = stdout(notebook)
  run_dir, step = re.search(r'^(\S+): step (\d+), paper AlexNet', text,
                            re.M).groups()
  eval_step, top1 = re.search(r'last evaluation, step (\d+): top-1 (\S+),',
                              text).groups()
  assert eval_step == step
  assert len(re.findall(r'^tower \d: colour score 0\.\d\d, smoothness',
                        text, re.M)) == 2
  predictions = {}
  for path, lines in re.findall(r'^(images/\S+)\n((?:  \d\. .*\n?){3})', text,
                                re.M):
    ranked = re.findall(r'  (\d)\. (\w+) +(\d\.\d{4})', lines)
    assert [int(r) for r, _, _ in ranked] == [1, 2, 3]
    assert all(name in shapes.CLASS_NAMES for _, name, _ in ranked)
    probs = [float(p) for _, _, p in ranked]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    predictions[path] = [(name, float(p)) for _, name, p in ranked]
  assert sorted(predictions) == IMAGES == [
      'images/arrow.jpg', 'images/circle.jpg', 'images/star.jpg']
  return run_dir, int(step), float(top1), predictions


def test_notebook_and_script_hold_the_same_cells(notebook):
  assert [(c.cell_type, c.source) for c in notebook.cells] == percent_cells(
      os.path.join(EXAMPLES, 'quickstart.py'))


def test_committed_notebook_holds_the_outputs_of_the_readme_run(notebook):
  from configs import default  # pylint: disable=g-import-not-at-top
  cells = code_cells(notebook)
  # One run, top to bottom, of these very cells (their sources are the
  # twin's: the test above).
  assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
  outputs = [o for c in cells for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error' or
              o.get('name') == 'stderr']
  assert len([o for o in outputs if 'image/png' in o.get('data', {})]) >= 2
  run_dir, step, top1, predictions = check_outputs(notebook)
  config = default.get_config()
  assert run_dir == '/tmp/alexnet_default'
  assert step == config.num_epochs * (5000 // config.batch_size)  # 24 epochs.
  assert top1 > 0.9
  for path, ranked in predictions.items():  # The trained run gets them right.
    assert ranked[0][0] == os.path.basename(path)[:-len('.jpg')]
  # Nothing of the machine that wrote them.
  text = nbformat.writes(notebook)
  for path in {ROOT, os.path.expanduser('~'), sys.prefix}:
    assert path not in text


@pytest.mark.slow
def test_quickstart_notebook_trains_and_classifies(notebook, tmp_path,
                                                   monkeypatch):
  # No README run: the notebook trains briefly into a workdir of its own,
  # generating the dataset into a fresh TFDS data dir. The kernel inherits
  # the environment.
  monkeypatch.setenv('ALEXNET_WORKDIR', str(tmp_path / 'no_run'))
  monkeypatch.setenv('ALEXNET_BRIEF_WORKDIR', str(tmp_path / 'brief'))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  execute(notebook)  # Raises CellExecutionError, naming the cell.
  run_dir, step, top1, _ = check_outputs(notebook)
  assert run_dir == str(tmp_path / 'brief')
  from alexnet_jax import metrics_writer  # pylint: disable=g-import-not-at-top
  rows = metrics_writer.read_metrics(run_dir)
  evals = [r for r in rows if 'eval_top1' in r]
  assert os.path.isdir(tmp_path / 'tfds' / 'alexnet_shapes')
  assert step == rows[-1]['step'] == evals[-1]['step']
  assert len(evals) >= 3  # The curve has points.
  assert top1 == float(f'{evals[-1]["eval_top1"]:.3f}')
  assert top1 > 0.2  # Chance: 0.1.


if __name__ == '__main__':
  # Writes the committed outputs (module docstring).
  committed = nbformat.read(NOTEBOOK, as_version=4)
  execute(committed)
  nbformat.write(committed, NOTEBOOK)
  print(f'wrote {os.path.relpath(NOTEBOOK)}')
