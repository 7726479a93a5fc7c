"""A session's lifecycle as one state: the transitions it takes, driven step by step, and
the ones it refuses."""

from __future__ import annotations

import itertools

import pytest

from app.pipeline.session import _NEXT, SessionRun, SessionState, SessionStateError
from otel.testing import CapturedTelemetry
from tests.app.pipeline.test_session import SteppedPipeline, stepped_run
from tests.helpers import wait_until

OPENED, RUNNING, ENDED, DELIVERED, ABANDONED, CLOSED = SessionState


def state(run: SessionRun) -> SessionState:
    """The state now (a call, so that a type checker does not keep an earlier one)."""
    return run.state


def stepped(
    *, resume_window_s: float = 30, closed: list[SessionRun] | None = None
) -> tuple[SessionRun, SteppedPipeline, CapturedTelemetry]:
    return stepped_run(
        resume_window_s=resume_window_s,
        on_closed=(closed if closed is not None else []).append,
    )


def test_every_state_has_its_successors_and_a_closed_session_has_none() -> None:
    assert set(_NEXT) == set(SessionState)
    assert _NEXT[CLOSED] == frozenset()
    # Every state can be closed, and every state but the first is reached from another.
    assert all(CLOSED in _NEXT[state] for state in SessionState if state is not CLOSED)
    reached = set().union(*_NEXT.values())
    assert reached == set(SessionState) - {OPENED}


@pytest.mark.parametrize(("before", "after"), list(itertools.product(SessionState, repeat=2)))
async def test_a_transition_is_taken_only_if_it_is_listed(
    before: SessionState, after: SessionState
) -> None:
    run, _, _ = stepped()
    run._state = before
    if after in _NEXT[before]:
        run._enter(after)
        assert state(run) is after
    else:
        with pytest.raises(SessionStateError) as refused:
            run._enter(after)
        assert str(refused.value) == f"a session cannot go from {before.name} to {after.name}"
        assert state(run) is before  # a refused transition changes nothing


async def test_a_session_read_to_its_end_goes_opened_running_ended_delivered_closed() -> None:
    closed: list[SessionRun] = []
    run, pipeline, captured = stepped(closed=closed)
    assert state(run) is OPENED
    run.start()
    assert state(run) is RUNNING
    run.start()  # a second start starts nothing
    assert state(run) is RUNNING
    reader = run.frames(after=None)
    await anext(reader)
    await pipeline.finish()
    await wait_until(lambda: run.ended)
    assert state(run) is ENDED
    rest = b"".join([frame async for frame in reader])
    assert b"event: complete" in rest
    assert state(run) is DELIVERED
    await run.linger()
    assert state(run) is CLOSED and run.finished and closed == [run]
    await run.close()  # closing again does nothing (and is not a transition)
    assert closed == [run]
    assert captured.value("fit_check.requests", status="success") == 1


async def test_a_state_change_wakes_the_owner() -> None:
    run, _, _ = stepped()
    run._changed.clear()
    run.start()
    assert run._changed.is_set()
    await run.close()


async def test_a_session_closed_before_it_started_never_starts() -> None:
    run, _, _ = stepped()
    await run.close()
    assert state(run) is CLOSED
    run.start()
    assert state(run) is CLOSED and run._task is None and run.trace is None


async def test_abandoning_a_session_nobody_reads_ends_its_linger_now() -> None:
    run, pipeline, captured = stepped(resume_window_s=30)
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    run.abandon()  # the reader is still there: nothing happens
    assert state(run) is RUNNING
    await reader.aclose()  # the client left, and may come back within 30 s
    assert run.lingering_since is not None
    run.abandon()
    assert state(run) is ABANDONED
    run.abandon()  # again: nothing more happens
    assert state(run) is ABANDONED
    await pipeline.step(run, expected_next=2)  # it still runs until its owner closes it
    await run.linger()  # at once, not after 30 s (the test's own timeout would say so)
    assert state(run) is CLOSED
    assert captured.value("fit_check.requests", status="cancelled") == 1


async def test_abandoning_a_session_not_started_or_already_closed_does_nothing() -> None:
    run, _, _ = stepped()
    run.abandon()
    assert state(run) is OPENED
    await run.close()
    run.abandon()
    assert state(run) is CLOSED


async def test_a_pipeline_that_ends_after_its_session_was_abandoned_leaves_it_abandoned() -> None:
    run, pipeline, captured = stepped()
    run.start()
    reader = run.frames(after=None)
    await anext(reader)
    await reader.aclose()
    run.abandon()
    await pipeline.finish()
    await wait_until(lambda: run.ended)  # the terminal event, after the owner gave up
    assert state(run) is ABANDONED
    # A reconnect that was already on its way reads it to the end: the owner still ends
    # the task (it is not the reader's to settle any more).
    assert b"event: complete" in b"".join([frame async for frame in run.frames(after=0)])
    assert state(run) is ABANDONED
    await run.linger()
    assert state(run) is CLOSED
    assert captured.value("fit_check.requests", status="cancelled") == 1


async def test_a_delivered_session_is_not_abandoned_and_ends_with_its_outcome() -> None:
    run, pipeline, captured = stepped()
    run.start()
    await pipeline.running.wait()
    await pipeline.finish()
    await wait_until(lambda: run.ended)
    run.remote_reader("0")  # a reader on another replica...
    run.remote_reader(None)  # ...that left
    run.remote_reader("delivered")  # ...and one that was sent the terminal event
    assert state(run) is DELIVERED
    run.remote_reader("delivered")  # said again at the next renewal: nothing changes
    run.abandon()  # nobody reads it here, but its task ends by itself
    assert state(run) is DELIVERED
    await run.linger()
    assert captured.value("fit_check.requests", status="success") == 1
    assert captured.value("fit_check.requests", status="cancelled") == 0


async def test_a_remote_delivery_settles_only_a_session_waiting_for_it() -> None:
    run, pipeline, _ = stepped()
    run.remote_reader("delivered")
    assert state(run) is OPENED
    run.start()
    await pipeline.running.wait()
    run.remote_reader("delivered")
    assert state(run) is RUNNING
    await run.close()
    run.remote_reader("delivered")
    assert state(run) is CLOSED


async def test_a_pipeline_that_ends_after_its_session_was_closed_leaves_it_closed() -> None:
    run, pipeline, _ = stepped()
    run.start()
    await pipeline.running.wait()
    run._state = CLOSED  # as close() leaves it, before its cancellation lands
    await pipeline.finish()
    await wait_until(lambda: run.ended)
    assert state(run) is CLOSED
    run._state = ABANDONED  # so that close() runs and stops the task
    await run.close()
    assert state(run) is CLOSED
