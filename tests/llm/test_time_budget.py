"""The wall-clock training budget: it stops at the budget, earlier when the rows still to be
decoded after training need the rest, and the stopped step is evaluated and saved."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from tca4rec.llm import train as train_module
from tca4rec.llm.train import TimeBudgetCallback


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(train_module.time, "monotonic", lambda: now.t)
    return now


def steps_until_stop(callback, clock, seconds_per_step: float, evaluated_rows_per_s: float | None = None,
                     eval_strategy: str = "steps") -> tuple[int, TrainerControl]:
    args, state, control = SimpleNamespace(eval_strategy=eval_strategy), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    if evaluated_rows_per_s is not None:
        callback.on_evaluate(args, state, control, metrics={"eval_HR@3": 0.1, "eval_rows_per_s": evaluated_rows_per_s})
    while not control.should_training_stop and state.global_step < 10_000:
        clock.t += seconds_per_step
        state.global_step += 1
        control = callback.on_step_end(args, state, control)
    return state.global_step, control


def test_stops_once_the_budget_is_spent_and_saves_an_evaluated_step(clock):
    callback = TimeBudgetCallback(max_minutes=1.0)
    step, control = steps_until_stop(callback, clock, seconds_per_step=0.7)
    assert step == 86 and callback.stopped_at == 86  # 86 x 0.7 s = 60.2 s >= 60 s > 85 x 0.7 s
    assert control.should_save and control.should_evaluate
    _, control = steps_until_stop(TimeBudgetCallback(max_minutes=1.0), clock, 0.7, eval_strategy="no")
    assert control.should_save and not control.should_evaluate  # nothing to evaluate with


def test_keeps_back_the_time_the_rows_left_to_decode_need(clock):
    # 40 rows at 2 rows/s measured, x1.25 = 25 s kept back of 60 s: stop at 35 s of training.
    step, _ = steps_until_stop(TimeBudgetCallback(max_minutes=1.0, eval_rows=40), clock, 1.0, evaluated_rows_per_s=2.0)
    assert step == 35
    # Until a valid evaluation measured the rate, only the budget itself counts.
    step, _ = steps_until_stop(TimeBudgetCallback(max_minutes=1.0, eval_rows=40), clock, 1.0)
    assert step == 60
