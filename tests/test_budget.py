import pytest

from reasoning import Budget, BudgetExhausted, ConfigError, Message, Meter, Request, Sampling


def req(max_tokens: int = 100, n: int = 1) -> Request:
    return Request((Message("user", "q"),), Sampling(max_tokens=max_tokens, n=n))


def test_reserve_clamps_max_tokens_to_what_is_left() -> None:
    meter = Meter(Budget(output_tokens=100))
    granted = meter.reserve(req(80, n=2))
    assert granted.max_tokens == 50
    assert meter.output_tokens_left == 0


def test_concurrent_reservations_cannot_overspend() -> None:
    meter = Meter(Budget(output_tokens=100))
    first = meter.reserve(req(80))
    second = meter.reserve(req(80))
    assert first.max_tokens + second.max_tokens == 100
    with pytest.raises(BudgetExhausted) as info:
        meter.reserve(req(1))
    assert info.value.resource == "output_tokens"


def test_settle_returns_unused_tokens() -> None:
    meter = Meter(Budget(output_tokens=100))
    granted = meter.reserve(req(80))
    meter.settle(granted, output_tokens=10)
    assert meter.usage.output_tokens == 10
    assert meter.output_tokens_left == 90


def test_calls_and_prompt_tokens_and_seconds_lines() -> None:
    meter = Meter(Budget(calls=1))
    meter.reserve(req())
    with pytest.raises(BudgetExhausted, match="calls"):
        meter.reserve(req())
    meter = Meter(Budget(prompt_tokens=10))
    meter.reserve(req(), prompt_tokens=8)
    with pytest.raises(BudgetExhausted, match="prompt_tokens"):
        meter.reserve(req(), prompt_tokens=8)
    now = [0.0]
    meter = Meter(Budget(seconds=5), clock=lambda: now[0])
    meter.reserve(req())
    now[0] = 6.0
    with pytest.raises(BudgetExhausted, match="seconds"):
        meter.reserve(req())


def test_budget_rejects_non_positive_lines() -> None:
    with pytest.raises(ConfigError, match="output_tokens"):
        Budget(output_tokens=0)


def sequential(*calls: tuple[float, float, int] | tuple[float, float, int, int]) -> tuple[int, Meter]:
    """Grant and settle `calls` ``(start, end, longest sample[, n])`` in time order on a meter
    whose clock the test sets; its sequential tokens, and the meter."""
    now = [0.0]
    meter = Meter(Budget(), clock=lambda: now[0])
    # At one instant: calls that ran end, then calls start, then zero-length calls end.
    events = sorted(
        [(call[0], 1, i) for i, call in enumerate(calls)]
        + [(call[1], 2 if call[1] == call[0] else 0, i) for i, call in enumerate(calls)]
    )
    granted = {}
    for time, phase, i in events:
        now[0] = time
        longest, n = calls[i][2], (calls[i][3:] or (1,))[0]
        if phase == 1:
            granted[i] = meter.reserve(req(100, n=n))
        else:
            meter.settle(granted[i], longest * n, longest=longest)
    return meter.finish().sequential_tokens, meter


def test_overlapping_calls_count_their_longest_sample_once() -> None:
    tokens, meter = sequential((0, 2, 30, 4), (1, 3, 20))
    assert tokens == 30 and meter.usage.output_tokens == 4 * 30 + 20


def test_calls_one_after_another_add_up() -> None:
    assert sequential((0, 1, 30, 2), (1, 2, 20), (5, 6, 7))[0] == 30 + 20 + 7


def test_a_chain_and_a_parallel_branch_count_the_heavier_chain() -> None:
    # a -> b -> d is 10 + 10 + 5; c (running alongside a and b) -> d is 25 + 5; e overlaps all of them.
    a, b, c, d, e = (0, 1, 10), (1, 3, 10), (0, 2.5, 25), (3, 4, 5), (0.5, 4, 29)
    assert sequential(a, b, c, d, e)[0] == 30
    assert sequential(a, b, d)[0] == 25 and sequential(a, b, c)[0] == 25 and sequential(e, a)[0] == 29


def test_zero_length_calls_at_one_instant_chain_without_a_cycle() -> None:
    assert sequential((1, 1, 2), (1, 1, 3), (0, 1, 4))[0] == 4 + 2 + 3
    assert sequential()[0] == 0


def test_a_call_settled_without_its_longest_sample_counts_all_its_tokens() -> None:
    meter = Meter(Budget())
    meter.settle(meter.reserve(req(100, n=3)), output_tokens=12)
    assert meter.finish().sequential_tokens == 12
