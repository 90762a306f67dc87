"""examples/quickstart.ipynb runs top to bottom, and matches its .py twin."""

import os
import re

import nbclient
import nbformat
import pytest

from conftest import ROOT

EXAMPLES = os.path.join(ROOT, 'examples')


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


@pytest.fixture(scope='module')
def notebook():
  return nbformat.read(os.path.join(EXAMPLES, 'quickstart.ipynb'),
                       as_version=4)


def test_notebook_and_script_hold_the_same_cells(notebook):
  assert [(c.cell_type, c.source) for c in notebook.cells] == percent_cells(
      os.path.join(EXAMPLES, 'quickstart.py'))


def test_quickstart_notebook_trains_and_classifies(notebook):
  # Raises CellExecutionError, naming the cell, if any cell fails.
  nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': EXAMPLES}}).execute()
  text = ''.join(o.get('text', '') for c in notebook.cells
                 if c.cell_type == 'code' for o in c.outputs)
  losses = [float(v) for v in re.findall(r'step \d: loss (\S+)', text)]
  assert len(losses) == 4 and all(0 < v < 10 for v in losses)
  assert 'true class: pentagon' in text  # Validation example 3: 3 % 10.
  probs = [float(v) for v in re.findall(r'\d\. \w+ +(0\.\d{4})', text)]
  assert len(probs) == 3 and probs == sorted(probs, reverse=True)
