"""`ctx.trace`: a streamed request that assembles, records and charges itself when closed."""

import pytest

from reasoning import Budget, BudgetExhausted, Context, Meter, Problem, Sampling, ScriptedBackend, Trace
from reasoning.problem import default_prompt

PROBLEM = Problem("p", "2+2?")


def context(backend: ScriptedBackend, budget: Budget | None = None) -> Context:
    return Context(PROBLEM, default_prompt(PROBLEM), backend, Meter(budget or Budget()))


async def test_leaving_early_cancels_records_and_charges_what_was_decoded() -> None:
    backend = ScriptedBackend(["one two three four five"])
    ctx = context(backend)
    async with ctx.trace(ctx.request(Sampling(logprobs=0))) as trace:
        async for _ in trace:
            if len(trace.tokens()) == 2:
                break
    assert backend.cancelled == 1
    assert [(c.text, c.finish_reason) for c in trace.completions] == [("one two ", "cancelled")]
    assert ctx.completions == trace.completions
    usage = ctx.meter.usage
    assert usage.output_tokens == trace.decoded == backend.decoded_tokens == 2
    assert (usage.cancelled_samples, usage.cancelled_tokens) == (1, 2)


async def test_samples_are_recorded_as_they_finish_and_the_rest_when_it_closes() -> None:
    backend = ScriptedBackend(["a b c d", "e", "f g"], seconds_per_token=0.001)
    ctx = context(backend)
    async with ctx.trace(ctx.request(Sampling(n=3))) as trace:
        async for _ in trace:
            if len(trace.finished) == 2:
                break
    assert [c.text for c in trace.finished] == ["e", "f g"]
    assert [c.index for c in ctx.completions] == [1, 2, 0]  # finishing order, then the cancelled
    assert [c.index for c in trace.completions] == [0, 1, 2]
    assert trace.completions[0].finish_reason == "cancelled"
    assert await trace.close() == trace.completions  # closing again changes nothing
    assert len(ctx.completions) == 3


async def test_an_error_inside_still_closes_and_records() -> None:
    backend = ScriptedBackend(["a b c d"])
    ctx = context(backend)
    with pytest.raises(RuntimeError, match="strategy bug"):
        async with ctx.trace(ctx.request(Sampling())) as trace:
            async for _ in trace:
                raise RuntimeError("strategy bug")
    assert backend.cancelled == 1 and ctx.meter.usage.output_tokens == 1
    assert [c.finish_reason for c in ctx.completions] == ["cancelled"]


async def test_a_budget_stop_mid_stream_is_charged_and_recorded() -> None:
    backend = ScriptedBackend(["a " * 50], seconds_per_token=0.01)
    ctx = context(backend, Budget(seconds=0.05))
    with pytest.raises(BudgetExhausted, match="seconds"):
        async with ctx.trace(ctx.request(Sampling(max_tokens=100))) as trace:
            async for _ in trace:
                pass
    assert backend.cancelled == 1
    assert 0 < ctx.meter.usage.output_tokens == trace.decoded == backend.decoded_tokens
    assert [c.finish_reason for c in ctx.completions] == ["cancelled"]


async def test_without_record_it_is_charged_but_left_to_the_strategy() -> None:
    backend = ScriptedBackend(["a b"])
    ctx = context(backend)
    async with ctx.trace(ctx.request(Sampling()), record=False) as trace:
        async for _ in trace:
            pass
    assert [c.text for c in trace.completions] == ["a b"]
    assert ctx.completions == [] and ctx.meter.usage.output_tokens == 2


async def test_a_trace_never_iterated_sends_nothing() -> None:
    backend = ScriptedBackend(["a b"])
    ctx = context(backend)
    async with ctx.trace(ctx.request(Sampling())) as trace:
        pass
    assert backend.requests == [] and ctx.meter.usage.calls == 0
    assert [c.finish_reason for c in trace.completions] == ["cancelled"]  # never started


def test_trace_is_public() -> None:
    import reasoning

    assert reasoning.Trace is Trace


async def test_each_sample_knows_when_its_request_was_sent_on_the_runs_clock() -> None:
    now = [100.0]
    backend = ScriptedBackend(["a b", "c"])
    ctx = Context(PROBLEM, default_prompt(PROBLEM), backend, Meter(Budget(), clock=lambda: now[0]))
    now[0] = 102.5  # the run's clock: 2.5 s after its start
    first = await ctx.generate(ctx.request(Sampling(n=2)))
    now[0] = 107.0
    [second] = await ctx.generate(ctx.request(Sampling()))
    assert [c.started for c in first] == [2.5, 2.5] and second.started == 7.0  # a request's samples share it
    from reasoning.strategy import to_candidate
    from reasoning.verifier import Verdict

    assert to_candidate(second.text, second, Verdict(None)).started == 7.0  # and the record keeps it


async def test_generate_asks_for_coarse_chunks_and_a_watched_stream_for_every_token() -> None:
    from reasoning import Request
    from reasoning.strategy import GENERATE_STREAM_INTERVAL

    backend = ScriptedBackend(["a b c"])
    ctx = context(backend)
    await ctx.generate(ctx.request(Sampling(n=2)))
    async with ctx.trace(ctx.request(Sampling())) as trace:
        async for _ in trace:
            pass
    await ctx.generate(Request(ctx.messages, Sampling(), stream_interval=4))
    assert [r.stream_interval for r in backend.requests] == [GENERATE_STREAM_INTERVAL, 1, 4]
    assert ctx.meter.usage.output_tokens == 4 * 3


def test_a_stream_interval_below_one_is_refused() -> None:
    from reasoning import ConfigError, Message, Request

    with pytest.raises(ConfigError, match="stream_interval must be >= 1, got 0"):
        Request((Message("user", "hi"),), stream_interval=0)
