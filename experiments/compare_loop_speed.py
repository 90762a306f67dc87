r"""The training loop of this tree against another commit's, alternating.

  python -m experiments.compare_loop_speed --base_commit=e89a3ed --rounds=3 \
      --output=/tmp/compare_loop_speed.json
  python -m experiments.compare_loop_speed --base_tree=/tmp/base \
      --rounds=1 --flag=--config.num_train_steps=4 \
      --flag=--config.log_every_steps=2 --flag=--config.model.width=0.05 \
      --flag=--config.image_size=67 --flag=--config.resize_size=67  # Seconds.

Each round runs `python -m alexnet_jax.main --config=CONFIG` (default
configs/fake_benchmark.py: the paper's net on random images, no TensorFlow)
once from each tree, in child processes one after the other; the order
alternates between rounds, so a drift in the machine's load hits both alike.
A run's figure is the median `images_per_sec` of its metrics.jsonl rows (the
loop starts its clock after the first step, which compiles). The table gives
every round's figures, the median over rounds and this tree's median against
the base's, with the load average around each run (a shared machine).
`--base_commit` checks the commit out into a temporary git worktree, removed
afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

from alexnet_jax import metrics_writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loadavg() -> str:
  return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def _git(tree: str, *args: str) -> str:
  return subprocess.run(['git', '-C', tree, *args], check=True,
                        capture_output=True, text=True).stdout.strip()


def images_per_sec(workdir: str) -> float:
  """The median images_per_sec of a run's metrics.jsonl rows."""
  rates = [r['images_per_sec'] for r in metrics_writer.read_metrics(workdir)
           if r.get('images_per_sec')]
  if not rates:
    raise RuntimeError(f'{workdir}/metrics.jsonl has no images_per_sec rows.')
  return statistics.median(rates)


def run_loop(tree: str, config: str, flags: list[str], workdir: str) -> dict:
  """One training run from `tree` (its code, its config file)."""
  env = dict(os.environ, PYTHONPATH=tree, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # Each tree sets its own options.
  cmd = [sys.executable, '-m', 'alexnet_jax.main', f'--config={config}',
         f'--workdir={workdir}', *flags]
  load_before = _loadavg()
  out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{" ".join(cmd)} (in {tree}) failed:\n'
                       f'{out.stderr[-3000:]}')
  return {'images_per_sec': images_per_sec(workdir),
          'loadavg_before': load_before, 'loadavg_after': _loadavg()}


def compare(trees: dict[str, str], args, scratch: str) -> dict:
  """`args.rounds` rounds over `trees` (label -> path), order alternating."""
  runs = {label: [] for label in trees}
  for r in range(args.rounds):
    order = list(trees) if r % 2 == 0 else list(reversed(trees))
    for label in order:
      workdir = os.path.join(scratch, f'{label}_round{r}')
      result = run_loop(trees[label], args.config, args.flag, workdir)
      runs[label].append(result)
      print(f'round {r + 1}/{args.rounds} {label}: '
            f'{result["images_per_sec"]:.1f} images/s '
            f'(load {result["loadavg_before"]} -> {result["loadavg_after"]})',
            flush=True)
  medians = {label: statistics.median(x['images_per_sec'] for x in rows)
             for label, rows in runs.items()}
  return {'runs': runs, 'median_images_per_sec': medians,
          'this_over_base': medians['this'] / medians['base']}


def table(result: dict) -> str:
  lines = ['| tree | commit | images/s by round | median |',
           '|---|---|---|---|']
  for label, rows in result['runs'].items():
    rates = ', '.join(f'{x["images_per_sec"]:.1f}' for x in rows)
    lines.append(f'| {label} | {result["commits"][label]} | {rates} | '
                 f'{result["median_images_per_sec"][label]:.1f} |')
  lines.append(f'\nthis / base: {result["this_over_base"]:.3f}')
  return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  base = p.add_mutually_exclusive_group(required=True)
  base.add_argument('--base_commit', help='A commit to check out and run.')
  base.add_argument('--base_tree', help='A checkout to run as it is.')
  p.add_argument('--tree', default=ROOT, help='This tree (default: here).')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--config', default='configs/fake_benchmark.py',
                 help="A config file, relative to each tree.")
  p.add_argument('--flag', action='append', default=[],
                 help='An extra flag for both runs (repeatable).')
  p.add_argument('--output', default='compare_loop_speed.json')
  args = p.parse_args(argv)
  if args.rounds < 1:
    p.error(f'--rounds={args.rounds}; expected >= 1.')
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory(prefix='compare_loop_speed_') as scratch:
    base_tree = args.base_tree
    if base_tree is None:
      base_tree = os.path.join(scratch, 'base')
      _git(args.tree, 'worktree', 'add', '--detach', base_tree,
           args.base_commit)
    trees = {'base': os.path.abspath(base_tree),
             'this': os.path.abspath(args.tree)}
    # '+changes': the tree's tracked files differ from its commit.
    commits = {k: _git(v, 'rev-parse', '--short', 'HEAD') + (
        '+changes' if _git(v, 'status', '--porcelain', '--untracked-files=no')
        else '') for k, v in trees.items()}
    try:
      result = compare(trees, args, scratch)
    finally:
      if args.base_tree is None:
        _git(args.tree, 'worktree', 'remove', '--force', base_tree)
  result.update(
      commits=commits, config=args.config, flags=args.flag, rounds=args.rounds,
      finished_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'))
  print(table(result))
  with open(args.output, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'Wrote {args.output}.')
  return result


if __name__ == '__main__':
  main()
