"""The package as a user installs it: `pip install .` (not editable) puts
only `alexnet_jax` into site-packages, configs/, experiments/ and tools/
inside it, and the console scripts run from any directory."""

import os
import shutil
import subprocess
import sys
import sysconfig

import jax
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def _run(*cmd, cwd):
  out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-3000:])
  return out.stdout


def test_a_non_editable_install_runs_its_console_scripts_anywhere(tmp_path):
  venv = tmp_path / 'venv'
  _run(sys.executable, '-m', 'venv', str(venv), cwd=tmp_path)
  site = venv / os.path.relpath(sysconfig.get_path('purelib'),
                                sysconfig.get_path('data'))
  # The dependencies are this interpreter's (installing them takes minutes).
  (site / 'deps.pth').write_text(os.path.dirname(os.path.dirname(
      jax.__file__)) + '\n')
  python = str(venv / 'bin' / 'python')
  # A copy of what the package is built from: the build leaves build/ there.
  source = tmp_path / 'source'
  for name in ('alexnet_jax', 'configs', 'experiments', 'tools'):
    shutil.copytree(os.path.join(ROOT, name), source / name,
                    ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(os.path.join(ROOT, name), source / name)
  _run(python, '-m', 'pip', 'install', '-q', '--no-deps', str(source),
       cwd=tmp_path)
  installed = {n for n in os.listdir(site) if not n.endswith(
      ('.pth', '-info', '__pycache__')) and not n.startswith('_')}
  assert {'alexnet_jax', 'configs', 'experiments', 'tools'} & installed == {
      'alexnet_jax'}, sorted(installed)
  assert os.path.exists(site / 'alexnet_jax' / 'tools' / 'predict.py')
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  for script in ('alexnet-ablate', 'alexnet-figure3', 'alexnet-train',
                 'alexnet-evaluate', 'alexnet-convert',
                 'alexnet-prepare-dataset'):
    text = _run(str(venv / 'bin' / script), '--help', cwd=elsewhere)
    assert 'flags:' in text, (script, text[-2000:])
  assert '--top_k' in _run(str(venv / 'bin' / 'alexnet-predict'), '--help',
                           cwd=elsewhere)
  assert '--variants' in _run(str(venv / 'bin' / 'alexnet-ablate'), '--help',
                              cwd=elsewhere)
  # A config file of the installed package loads from anywhere.
  config = os.path.join(site, 'alexnet_jax', 'configs', 'flowers17.py')
  text = _run(python, '-c', 'import runpy, sys; '
              'print(runpy.run_path(sys.argv[1])["get_config"]().dataset)',
              config, cwd=elsewhere)
  from configs import flowers17  # pylint: disable=g-import-not-at-top
  assert text.strip() == flowers17.get_config().dataset, text
