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
