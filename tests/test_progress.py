"""alexnet_jax.progress: rate, ETA and wall time, on a fake clock."""

import json

import pytest

from alexnet_jax import progress


class FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def make(total_steps=100, eval_every_steps=25, **kwargs):
  clock = FakeClock()
  return progress.Progress(total_steps, eval_every_steps, clock=clock,
                           **kwargs), clock


def test_rate_is_smoothed_over_windows():
  p, clock = make()  # The newest window weighs 0.3.
  p.start_window(10)
  clock.now = 10.0
  assert p.end_window(20) == pytest.approx(1.0)  # 10 steps in 10 s.
  assert p.steps_per_sec == pytest.approx(1.0)
  clock.now = 15.0
  assert p.end_window(30) == pytest.approx(2.0)  # 10 steps in 5 s.
  assert p.steps_per_sec == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)


def test_evaluation_time_is_not_training_time():
  p, clock = make()
  p.start_window(0)
  clock.now = 2.0
  with p.timing_eval():
    clock.now = 7.0
  clock.now = 12.0
  # 10 steps in 12 s, 5 of them evaluating: 10 / 7 steps/s.
  assert p.end_window(10) == pytest.approx(10 / 7)
  assert p.eval_seconds == pytest.approx(5.0)


def test_eta_counts_remaining_steps_and_evaluations():
  p, clock = make(total_steps=100, eval_every_steps=25)
  assert p.eta(0) is None  # No rate yet.
  p.start_window(0)
  clock.now = 15.0
  p.end_window(30)  # 2 steps/s.
  with p.timing_eval():
    clock.now += 5.0
  # 70 steps at 2/s, and evaluations at steps 50, 75 and 100 of 5 s each.
  assert p.eta(30) == pytest.approx(35.0 + 15.0)
  # The loop logs before it evaluates: step 50's evaluation is still to come.
  assert p.eta(50) == pytest.approx(25.0 + 15.0)
  assert p.eta(100) == pytest.approx(5.0)  # The last step's evaluation.


def test_a_log_step_with_no_timed_step_gets_the_real_time_rate():
  # Resumed at step 40; step 41 compiles and is logged before any window.
  p, clock = make(total_steps=100, eval_every_steps=0, start_step=40)
  clock.now = 4.0
  p.start_window(41)
  assert p.end_window(41) == pytest.approx(1 / 4)  # 1 step in 4 s.
  assert p.steps_per_sec is None  # Compilation is not the training rate.
  assert p.eta(41) == pytest.approx(59 * 4 + 0.0)  # Until a window is timed.
  clock.now = 9.0
  assert p.end_window(51) == pytest.approx(2.0)  # 10 steps in 5 s.
  assert p.eta(51) == pytest.approx(49 / 2.0)


@pytest.mark.parametrize('total, every, step, evals', [
    (90, 25, 80, 1),  # 90 (the last step).
    (90, 25, 75, 2),  # 75, 90.
    (90, 25, 1, 4),  # 25, 50, 75, 90.
    (100, 25, 76, 1),  # 100.
    (100, 0, 40, 1),  # Only at the end.
])
def test_remaining_evaluations(total, every, step, evals):
  p, _ = make(total_steps=total, eval_every_steps=every)
  assert p.remaining_evals(step) == evals


def test_elapsed_continues_from_before_the_resume():
  clock = FakeClock()
  clock.now = 5.0
  p = progress.Progress(100, 0, elapsed_before=100.0, clock=clock)
  clock.now = 8.0
  assert p.elapsed() == pytest.approx(103.0)


def test_resumed_elapsed_reads_the_last_row_at_or_before_the_step(tmp_path):
  assert progress.resumed_elapsed(str(tmp_path), 4) == 0.0  # No metrics.
  rows = [{'step': 2, 'elapsed_s': 5.0}, {'step': 3, 'eval_top1': 0.5},
          {'step': 4, 'elapsed_s': 9.0}, {'step': 6, 'elapsed_s': 14.0}]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  assert progress.resumed_elapsed(str(tmp_path), 5) == 9.0
  assert progress.resumed_elapsed(str(tmp_path), 3) == 5.0
  assert progress.resumed_elapsed(str(tmp_path), 0) == 0.0  # A new run.


def test_format_eta():
  assert progress.format_eta(3723.9) == '1h02m03s'  # 1 h, 2 min, 3 s.
  assert progress.format_eta(123) == '2m03s'
