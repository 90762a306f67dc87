"""Every shell command in README.md and docs/ runs as a user types it.

The commands are read from the fenced ```bash / ```sh blocks of the docs and
run as written, each in a fresh `bash` with a clean environment: this
Python's directory first on PATH, a scratch HOME (so TFDS's data dir and
`/tmp/...` paths are the test's own), no XLA_FLAGS, no JAX_PLATFORMS, and a
shared JAX compilation cache. The only changes are budget overrides (steps,
epochs, rounds, windows) appended to each `python -m` command, which the
table below holds per command, and `/tmp/` moved into the scratch directory.

A command that cannot run here (ImageNet's tars, weights from the web, a
GPU) runs to its documented one-line error, which the table names. Install
commands are what `.ci/run` runs itself; the test suite's own command is this
suite. A command in the docs without an entry here fails the test, so the
table and the docs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

DOCS = ['README.md', *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))),
        *sorted(glob.glob(os.path.join(ROOT, 'docs', '*', '*.md')))]
SHELL_BLOCK = re.compile(r'^```(bash|sh)\n(.*?)^```', re.M | re.S)
ANY_BLOCK = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)
TINY_TRAIN = ('--config.num_train_steps=3 --config.log_every_steps=1 '
              '--config.eval_every_steps=0 --config.checkpoint_every_steps=0')


@dataclasses.dataclass(frozen=True)
class Doc:
  """How the test runs one documented command.

  kind: 'run' (with `budget` appended to each `python -m` command), 'error'
  (runs as written; exits 1 with `expect` in its last line), 'install' (a
  venv or pip step: .ci/run's own) or 'suite' (this test suite).
  """
  kind: str
  budget: str = ''
  expect: str = ''
  needs: str = ''  # A command whose run this one reads (e.g. a workdir).
  why: str = ''


QUICKSTART = ('python -m alexnet_jax.main --config=configs/default.py '
              '--workdir=/tmp/alexnet_default')
EVAL_OWN = ('python -m alexnet_jax.tools.evaluate '
            '--workdir=/tmp/alexnet_default')
COMMANDS: dict[str, Doc] = {
    # README: Quickstart.
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e . && '
    + QUICKSTART: Doc('run', TINY_TRAIN, why='the install is .ci/run\'s own: '
                      'the part after it runs'),
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e '
    "'.[test]' && python -m pytest -q": Doc('suite'),
    'python -m pytest -q -m "not slow"': Doc('suite'),
    'python -m alexnet_jax.tools.predict --workdir=/tmp/alexnet_default '
    'examples/images/star.jpg examples/images/circle.jpg '
    'examples/images/arrow.jpg': Doc('run', needs=QUICKSTART),
    EVAL_OWN: Doc('run', needs=QUICKSTART),
    QUICKSTART: Doc('run', TINY_TRAIN),
    # README: training, multi-process, parallelism.
    'python -m alexnet_jax.main --config=configs/default.py '
    '--workdir=/tmp/alexnet_nolrn --config.model.lrn=False '
    '--config.optimizer.learning_rate=0.005': Doc('run', TINY_TRAIN),
    'XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m '
    'alexnet_jax.main --config=configs/default.py --workdir=/tmp/mp '
    '--coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=0 '
    '&\nXLA_FLAGS=--xla_force_host_platform_device_count=2 python -m '
    'alexnet_jax.main --config=configs/default.py --workdir=/tmp/mp '
    '--coordinator_address=127.0.0.1:12345 --num_processes=2 '
    '--process_id=1': Doc('run', TINY_TRAIN),
    'XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m '
    'alexnet_jax.main --config=configs/default.py --config.parallelism=towers '
    '--workdir=/tmp/alexnet_towers': Doc('run', TINY_TRAIN),
    # README: ImageNet (no tars here).
    'python -m alexnet_jax.main --config=configs/imagenet_paper.py '
    '--workdir=/tmp/alexnet_imagenet --config.manual_dir=/path/to/tars':
        Doc('error', expect='put ILSVRC2012_img_train.tar, '
            'ILSVRC2012_img_val.tar into /path/to/tars'),
    'python -m alexnet_jax.tools.prepare_dataset '
    '--config=configs/imagenet_paper.py '
    '--output_dir=/data/imagenet2012_256 --config.manual_dir=/path/to/tars':
        Doc('error', expect='put ILSVRC2012_img_train.tar, '
            'ILSVRC2012_img_val.tar into /path/to/tars'),
    'python -m alexnet_jax.main --config=configs/imagenet_paper.py '
    '--workdir=/tmp/alexnet_imagenet --config.dataset=tfds_directory '
    '--config.dataset_dir=/data/imagenet2012_256':
        Doc('error', expect="config.dataset_dir='/data/imagenet2012_256' is "
            'invalid: holds no TFDS dataset'),
    # README: weights from elsewhere (no downloads here).
    'python -m alexnet_jax.tools.evaluate --config=configs/imagenet_eval.py '
    '--workdir=/tmp/eval --config.checkpoint=alexnet-owt.pth':
        Doc('error', expect="config.checkpoint='alexnet-owt.pth' does not "
            'exist'),
    'python -m alexnet_jax.tools.convert --variant=owt '
    '--input=alexnet-owt.pth --output=owt.npz':
        Doc('error', expect="--input='alexnet-owt.pth' does not exist"),
    # README and docs/results: experiments.
    'python -m experiments.ablate --config=configs/default.py '
    '--workdir=/tmp/ablate --variants=baseline,no_lrn,no_overlap,no_dropout,'
    "one_tower,tanh,no_lighting --seeds=1 --config.num_epochs=12 "
    "--config.optimizer.lr_drop_epochs='(9,11)' "
    '--config.eval_every_steps=312': Doc('run', TINY_TRAIN),
    'python -m experiments.figure1 --config=configs/default.py '
    '--workdir=/tmp/figure1 --threshold=0.25': Doc('run', TINY_TRAIN),
    'python -m experiments.figure3 --run=/tmp/alexnet_default '
    '--workdir=/tmp/figure3': Doc('run', needs=QUICKSTART),
    'python -m experiments.figure4 --run=/tmp/alexnet_default '
    '--workdir=/tmp/figure4': Doc('run', needs=QUICKSTART),
    'python -m experiments.benchmark --output=/tmp/bench/cpu.json '
    '--batch_sizes=32 --dtypes=float32 --variants=default,owt,conv_xla '
    '--windows=3 --steps_per_window=2 --warmup=1':
        Doc('run', '--windows=1 --steps_per_window=1 --warmup=0 '
            '--ceiling_size=256'),
    'python -m experiments.loop_vs_torch --rounds=5 '
    '--output=/tmp/loop_vs_torch.json': Doc('run', '--rounds=1 --steps=2 '
                                           '--log_every=2'),
    'python -m experiments.input_benchmark --config=configs/default.py '
    '--output=/tmp/input.json --config.image_size=227 '
    '--config.resize_size=256 --config.cache=False':
        Doc('run', '--warmup=1 --batches=2 --repeats=1 --imagenet_like=40'),
    # docs/performance.md: the variant table's command (its rows, tiny).
    'python -m experiments.benchmark --output=/tmp/perf_cpu.json '
    '--torch=inprocess --pause=0.5 --batch_sizes=32 --steps_per_window=3 '
    '--windows=7 --ceiling_size=2048 --variants=flax_baseline+cpuconv_xla,'
    'lrn_banded+pool_reduce_window+cpuconv_xla,cpuconv_xla,'
    'lrn_banded+pool_reduce_window,lrn_matmul,default':
        Doc('run', '--tiny --pause=0 --ceiling_size=256'),
    # docs/install.md.
    'python -m venv .venv && . .venv/bin/activate': Doc('install'),
    'pip install -U pip': Doc('install'),
    'pip install -e .': Doc('install'),
    "pip install -e '.[cuda12]'": Doc('install'),
    "pip install -e '.[tpu]'": Doc('install'),
    'pip install torch --index-url https://download.pytorch.org/whl/cpu':
        Doc('install'),
    "pip install -e '.[test]'": Doc('install'),
    'python -c "import jax; print(jax.devices())"': Doc('run'),
    'pytest -q': Doc('suite'),
}


def _logical_lines(block: str) -> list[str]:
  """A block's commands: continuation lines joined, comments dropped, and a
  command ending in '&' kept together with the next (they run together)."""
  lines, current = [], ''
  for raw in block.splitlines():
    line = re.sub(r'(^|\s)#.*$', '', raw).rstrip()
    if line.endswith('\\'):  # bash drops the backslash and the newline.
      current += line[:-1]
      continue
    current = re.sub(r'[ \t]+', ' ', current + line).strip()
    if current:
      lines.append(current)
    current = ''
  merged = []
  for line in lines:
    if merged and merged[-1].endswith('&') and not merged[-1].endswith('&&'):
      merged[-1] += '\n' + line
    else:
      merged.append(line)
  return merged


def documented_commands() -> dict[str, list[str]]:
  """{command: [docs it appears in]}, in the order the docs give them."""
  found: dict[str, list[str]] = {}
  for path in DOCS:
    with open(os.path.join(ROOT, path)) as f:
      text = f.read()
    for match in SHELL_BLOCK.finditer(text):
      for command in _logical_lines(match.group(2)):
        found.setdefault(command, []).append(os.path.relpath(path, ROOT))
  return found


def test_every_documented_command_has_an_entry_and_every_entry_a_command():
  found = documented_commands()
  missing = [c for c in found if c not in COMMANDS]
  assert not missing, ('Commands in the docs with no entry in COMMANDS '
                       f'(add one saying how to run each): {missing}')
  stale = [c for c in COMMANDS if c not in found]
  assert not stale, f'Entries for commands no doc shows any more: {stale}'


def test_commands_are_not_hidden_in_untagged_blocks():
  for path in DOCS:
    with open(os.path.join(ROOT, path)) as f:
      for match in ANY_BLOCK.finditer(f.read()):
        if match.group(1) in ('bash', 'sh'):
          continue
        for line in match.group(2).splitlines():
          assert not re.match(r'\s*(python|pip|alexnet-|XLA_FLAGS)', line), (
              f'{path}: a command in a ```{match.group(1)} block (tag it '
              f'bash so it is tested): {line}')


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
  return str(tmp_path_factory.mktemp('documented'))


def _env(scratch: str) -> dict[str, str]:
  keep = ('LANG', 'LC_ALL', 'OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE',
          'JAX_COMPILATION_CACHE_DIR',
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')
  env = {k: os.environ[k] for k in keep if k in os.environ}
  env['PATH'] = (os.path.dirname(sys.executable) + os.pathsep +
                 os.environ.get('PATH', '/usr/bin:/bin'))
  env['HOME'] = os.path.join(scratch, 'home')
  os.makedirs(env['HOME'], exist_ok=True)
  return env


def _as_run(command: str, doc: Doc, scratch: str) -> str:
  """The command with its budget after each `python -m ...` and /tmp/ moved
  into the scratch directory; an install prefix is left to .ci/run."""
  if doc.why.startswith("the install is"):
    command = command.split('&&')[-1].strip()
  lines = []
  for line in command.split('\n'):
    tail = ' &' if line.endswith(' &') else ''
    line = line[:-2] if tail else line
    if doc.budget and 'python -m ' in line:
      line = f'{line} {doc.budget}'
    lines.append(line + tail)
  script = '\n'.join(lines)
  script = script.replace('/tmp/', os.path.join(scratch, 'tmp') + '/')
  if '&\n' in script:
    script += '\nwait %1'  # The background process's status counts too.
  return script


def _run(command: str, scratch: str, done: set[str]) -> None:
  doc = COMMANDS[command]
  if doc.needs and doc.needs not in done:
    needed = next(c for c in COMMANDS if c.endswith(doc.needs))
    _run(needed, scratch, done)
  os.makedirs(os.path.join(scratch, 'tmp'), exist_ok=True)
  script = _as_run(command, doc, scratch)
  out = subprocess.run(['bash', '-c', script], cwd=ROOT, env=_env(scratch),
                       capture_output=True, text=True, timeout=900)
  if doc.kind == 'error':
    assert out.returncode == 1, (script, out.stderr[-3000:])
    assert 'Traceback' not in out.stderr, (script, out.stderr[-3000:])
    last = out.stderr.strip().splitlines()[-1]
    assert doc.expect in last, (script, out.stderr[-3000:])
  else:
    assert out.returncode == 0, (script, out.stdout[-2000:],
                                 out.stderr[-4000:])
  done.add(command)


_DONE: set[str] = set()


@pytest.mark.parametrize(
    'command', [c for c, d in COMMANDS.items() if d.kind in ('run', 'error')])
def test_documented_command_runs_as_written(command, scratch):
  if command not in documented_commands():
    pytest.skip('not in the docs (the table test fails for it)')
  _run(command, scratch, _DONE)
