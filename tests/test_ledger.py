"""The ledger: one call held on the run's meter and a named backend's, all or none, settled once."""

import pytest

from reasoning import Budget, BudgetExhausted, Completion, Message, Meter, Request, Sampling
from reasoning.budget import Ledger


def req(max_tokens: int = 100, n: int = 1) -> Request:
    return Request((Message("user", "q"),), Sampling(max_tokens=max_tokens, n=n))


def ledger(run: Budget, draft: Budget, clock=None) -> Ledger:
    kwargs = {} if clock is None else {"clock": clock}
    return Ledger(Meter(run, **kwargs), {"draft": Meter(draft, line="draft.", **kwargs)})


def test_a_call_is_held_on_every_meter_it_concerns_and_clamped_by_the_tightest() -> None:
    books = ledger(Budget(output_tokens=100), Budget(output_tokens=30))
    charge = books.reserve(req(80, n=2), "draft")
    assert charge.request.sampling.max_tokens == 15  # the draft's 30 tokens over 2 samples
    # The run's meter granted 2 x 50 first; it holds only the 2 x 15 that can be decoded.
    assert books.meter.output_tokens_left == 70 and books.meters["draft"].output_tokens_left == 0
    charge.settle(20, cached_tokens=3)
    charge.settle(20)  # settling again charges nothing
    for meter in (books.meter, books.meters["draft"]):
        assert (meter.usage.output_tokens, meter.usage.cached_tokens, meter.usage.calls) == (20, 3, 1)
    assert books.meter.output_tokens_left == 80
    assert [meter for meter, _ in books.reserve(req(10)).held] == [books.meter]  # the default backend


def test_a_refusal_by_one_meter_undoes_the_others() -> None:
    books = ledger(Budget(output_tokens=100), Budget(calls=1))
    books.reserve(req(10), "draft")
    before = (books.meter.usage.calls, books.meter.usage.samples, books.meter.output_tokens_left)
    with pytest.raises(BudgetExhausted, match="draft.calls"):
        books.reserve(req(10, n=3), "draft")
    assert (books.meter.usage.calls, books.meter.usage.samples, books.meter.output_tokens_left) == before


def test_prompt_tokens_are_counted_only_where_a_line_needs_them() -> None:
    asked: list[Request] = []

    def count(request: Request) -> int:
        asked.append(request)
        return 7

    books = ledger(Budget(prompt_tokens=100), Budget())
    charge = books.reserve(req(), "draft", count)
    assert len(asked) == 1 and not charge.counted_prompt
    charge.prompt_tokens(7)  # learnt from the call: only the draft's meter had not counted it
    assert books.meter.usage.prompt_tokens == books.meters["draft"].usage.prompt_tokens == 7


def test_the_tightest_wall_clock_line_and_cancelled_samples() -> None:
    books = ledger(Budget(seconds=10), Budget(seconds=4), clock=lambda: 1.0)
    left, tightest = books.reserve(req(), "draft").seconds_left()
    assert left == 4.0 and tightest is books.meters["draft"]
    samples = [Completion(0, "a b", 2, "cancelled"), Completion(1, "c", 1, "stop")]
    books.cancelled(samples, "draft")
    for meter in (books.meter, books.meters["draft"]):
        assert (meter.usage.cancelled_samples, meter.usage.cancelled_tokens) == (1, 2)


def test_a_charge_settles_its_longest_sample_on_every_meter() -> None:
    now = [0.0]
    books = ledger(Budget(), Budget(), clock=lambda: now[0])
    first, second = books.reserve(req(10, n=3), "draft"), books.reserve(req(10))
    now[0] = 1.0
    first.settle(12, longest=6)
    second.settle(4)  # the default backend's call: the draft's meter never saw it
    then = books.reserve(req(10), "draft")
    now[0] = 2.0
    then.settle(5, longest=5)
    assert books.meter.finish().sequential_tokens == 6 + 5
    assert books.meters["draft"].finish().sequential_tokens == 6 + 5
    assert (books.meter.usage.output_tokens, books.meters["draft"].usage.output_tokens) == (21, 17)
