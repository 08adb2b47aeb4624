"""No answer can hang grading: a guard before sympy, a hard time limit in a grader process."""

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasoning import Controller, Problem, ScriptedBackend
from reasoning.evals.run import solve
from reasoning.strategies import SelfConsistency
from reasoning.verifiers import Grade, grade, grade_answer, grade_async, grading

DATA = Path(__file__).resolve().parents[1] / "evals" / "data"
MATH = Problem("m", "?", answer="\\frac{1}{2}", kind="math")
MEGABYTE = 1 << 20


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`'s result, failing when it has not returned within `seconds` (a hang guard)."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    assert result, "raised (see the thread's traceback above)"
    return result[0]


BOMBS = {
    # power towers
    "tower 10^10^10": "10^{10^{10}}",
    "tower 9^9^9^9": "9^{9^{9^{9}}}",
    "tower of 2s": "2^{" * 30 + "2" + "}" * 30,
    "tower without braces": "2^2^2^2^2^2^2^2^2",
    "tower python-style": "10**10**10",
    "tower in parentheses": "10^(10^(10))",
    "tower in a product": "3 \\cdot 7^{7^{7^{7}}} + 1",
    "negative tower": "10^{-10^{10}}",
    "decimal to a huge power": "0.5^{10^{9}}",
    "symbol to a huge power": "(x+1)^{10^{10}}",
    "long power chain": "x" + "^x" * 400,
    "huge exponent literal": "7^{123456789}",
    # factorial chains
    "factorial chain": "100000!!!",
    "factorial of a factorial": "(100!)!",
    "factorial of a power": "(10^{10})!",
    "factorial in an exponent": "2^{1000!}",
    "big factorial": "10^{6}!",
    # deep nesting
    "parentheses x10k": "(" * 10_000 + "1" + ")" * 10_000,
    "braces x10k": "{" * 10_000 + "1" + "}" * 10_000,
    "fractions x50": "\\frac{1}{" * 50 + "2" + "}" * 50,
    "roots x100": "\\sqrt{" * 100 + "2" + "}" * 100,
    "unbalanced x10k": "(" * 10_000,
    "closing x10k then a tower": ")" * 500 + "10^{10^{10}}",
    # megabyte answers
    "a megabyte of digits": "9" * MEGABYTE,
    "a megabyte of letters": "a" * MEGABYTE + "1",
    "a megabyte of \\text{": "\\text{" * (MEGABYTE // 6),
    "a megabyte sum": "1+" * (MEGABYTE // 2) + "1",
    "a megabyte of spaces": " " * MEGABYTE + "x1",
}


FUZZ = """
import json, sys, time
from reasoning import Problem
from reasoning.verifiers import grade_answer
for name, kind, answer in json.load(sys.stdin):
    gold = "\\\\frac{1}{2}" if kind == "math" else "5"
    started = time.monotonic()
    got = grade_answer(Problem("p", "?", answer=gold, kind=kind), answer)
    print(json.dumps([name, kind, time.monotonic() - started, got.correct, got.reason]), flush=True)
"""


def test_fuzz_each_bomb_returns_within_a_second() -> None:
    """Every bomb, graded as each kind, in a process of its own (a hang in C would hold this one's GIL)."""
    cases = [[name, kind, answer] for name, answer in BOMBS.items() for kind in ("math", "number", "text")]
    command = [sys.executable, "-c", FUZZ]
    try:
        done = subprocess.run(command, input=json.dumps(cases), capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        hung = cases[len(out.splitlines())]
        pytest.fail(f"grading {hung[0]!r} as {hung[1]} hung")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == len(cases)
    assert not [(name, kind, round(took, 2)) for name, kind, took, _, _ in rows if took >= 1.0]
    assert not [(name, kind) for name, kind, _, correct, _ in rows if correct is not False]
    # as math, each is refused before sympy sees it
    assert not [name for name, kind, _, _, why in rows if kind == "math" and "too" not in str(why)]


def test_a_megabyte_reasoning_gym_answer_returns_within_a_second() -> None:
    entry = {"question": "2+2?", "answer": "4", "metadata": {"source_dataset": "basic_arithmetic"}}
    problem = Problem("g", "2+2?", answer="4", kind="reasoning_gym", metadata={"entry": entry})
    result = within(1.0, lambda: grade_answer(problem, "4" * MEGABYTE))
    limit = grading.GYM_MAX_CHARS
    assert result == Grade(False, f"too long to grade ({MEGABYTE} characters, at most {limit})")


@pytest.mark.parametrize("path", ["math500_test.jsonl", "aime24_test.jsonl"])
def test_the_guard_lets_every_real_gold_answer_through(path: str) -> None:
    answers = [json.loads(line)["answer"] for line in (DATA / path).read_text().splitlines()]
    refused = {a: grading._too_big(str(a)) for a in answers if grading._too_big(str(a))}
    assert not refused
    # and answers big but still cheap to grade pass too
    for fine in ("2^{2005}", "3^{3^{3}}", "1000!", "\\binom{100}{50}", "x^{100}", "e^{x^2}", "10^{9999}"):
        assert grading._too_big(fine) is None, fine


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from("0123456789.^*!{}()[]\\xa +-²٣"), max_size=60) | st.text(max_size=60))
def test_the_guard_reads_any_text(text: str) -> None:
    why = grading._too_big(text)
    assert why is None or "too" in why


def test_math_verify_warns_no_more_about_its_timeouts(caplog: pytest.LogCaptureFixture) -> None:
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = False  # it warns once per process
    math_verify.grader.TIMEOUT_WARNING_SHOWN = False
    with caplog.at_level(logging.WARNING):
        assert grade(MATH, "0.5") is True
        assert grade(MATH, "\\frac{2}{3}") is False
    assert not [r for r in caplog.records if "imeout" in r.getMessage()]


def test_numbers_never_start_a_grader_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool() -> None:
        raise AssertionError("a grader process was asked")

    monkeypatch.setattr(grading, "_pool", no_pool)
    assert grade(Problem("n", "?", answer="1,000"), "1000.0") is True
    assert grade(Problem("n", "?", answer="18"), "17") is False
    aime = Problem("a", "?", answer="033", kind="math")
    assert grade(aime, "33") is True
    assert grade(aime, "34") is False
    assert grade(Problem("t", "?", answer="Paris", kind="text"), "paris ") is False


@pytest.fixture
def stub_grader(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], grading._Pool]]:
    """A fresh pool whose grader processes run `code` (one line) to replace their ``_math``."""
    pools: list[grading._Pool] = []

    def start(code: str) -> grading._Pool:
        monkeypatch.setattr(grading, "_LAUNCH", grading._LAUNCH.replace("m._serve()", f"{code}; m._serve()"))
        monkeypatch.setattr(grading, "_POOL", None)
        pools.append(grading._pool())
        return pools[-1]

    yield start
    for pool in pools:
        pool.close()


def pids(pool: grading._Pool) -> set[int]:
    return {w.process.pid for w in pool.idle}


def test_a_grade_in_python_is_stopped_by_the_grader_itself(stub_grader: Any) -> None:
    pool = stub_grader("m._math = lambda gold, pred: exec('while True: pass')")
    first = within(30.0, lambda: grade_answer(MATH, "x", seconds=0.5))
    assert first == Grade(False, "timed out after 0.5 s")
    [pid] = pids(pool)
    assert within(30.0, lambda: grade_answer(MATH, "y", seconds=0.5)) == first
    assert pids(pool) == {pid}  # the same process: nothing to restart


def test_a_grade_the_alarm_cannot_reach_is_killed_and_the_next_starts_afresh(stub_grader: Any) -> None:
    block = "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})"  # as in a long C call
    pool = stub_grader(f"import signal, time; m._math = lambda gold, pred: ({block}, time.sleep(600))")
    started = time.monotonic()
    result = within(30.0, lambda: grade_answer(MATH, "x", seconds=0.5))
    assert result == Grade(False, "timed out after 0.5 s (the grader process was killed)")
    assert time.monotonic() - started >= 0.5 and pool.live == 0 and not pool.idle


def test_a_grade_cannot_take_the_machines_memory(stub_grader: Any) -> None:
    pool = stub_grader("m._math = lambda gold, pred: len(bytearray(int(pred) << 20)) > 0")
    result = within(30.0, lambda: grade_answer(MATH, "3072"))  # 3 GiB, over the cap of 2 beyond its own
    assert result == Grade(False, "math-verify failed: MemoryError: ")
    # 256 MiB: fine, in the same process (small enough to fill well inside the grade's time
    # limit on a loaded machine: 1 GiB once took over 5 s beside a running engine)
    assert within(30.0, lambda: grade_answer(MATH, "256")) == Grade(True)
    assert len(pids(pool)) == 1


def test_a_real_slow_sympy_grade_times_out() -> None:
    within(60.0, lambda: grade(MATH, "\\frac{1}{3}"))  # the pool's process is started, not timed
    result = within(10.0, lambda: grade_answer(MATH, "(x+y)^{3000}", seconds=1.0))
    assert result.correct is False and str(result.reason).startswith("timed out after 1 s")
    assert within(10.0, lambda: grade(MATH, "0.5")) is True  # and grading goes on


def test_a_timed_out_grade_is_wrong_with_its_reason_in_the_record() -> None:
    problems = [Problem("m", "?", answer="\\frac{1}{2}", kind="math")]
    backend = ScriptedBackend(["\\boxed{10^{10^{10}}}", "\\boxed{\\frac{2}{4}}", "\\boxed{10^{10^{10}}}"])
    [run] = within(60.0, lambda: asyncio.run(solve(problems, Controller(backend), SelfConsistency(n=3))))
    assert run.answer == "10^{10^{10}}" and run.correct is False and run.oracle_correct is True
    reason = "a power too large to grade (an exponent of about 10^10)"
    assert run.grading == [f"'10^{{10^{{10}}}}': {reason}"]


async def test_grading_keeps_the_event_loop_free(stub_grader: Any) -> None:
    stub_grader("import time; m._math = lambda gold, pred: time.sleep(2) or True")
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        assert await grade_async(MATH, "x") == Grade(True)
        problems = [Problem("m", "?", answer="\\frac{1}{2}", kind="math")]
        [run] = await solve(problems, Controller(ScriptedBackend(["\\boxed{y}"])), SelfConsistency(n=1))
        assert run.correct is True and time.monotonic() - started >= 4.0
    finally:
        ticker.cancel()
    assert max(gaps) < 1.0  # the loop ran on while each grade took 2 s


def test_a_grade_left_by_an_exception_kills_its_process_so_no_reply_answers_the_next(
    stub_grader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reply left unread (a Ctrl-C mid-grade, a reply that cannot be read) would otherwise be
    # read as the next job's: another answer's verdict.
    pool = stub_grader("m._math = lambda gold, pred: pred == '1'")
    real = grading._receive
    calls = [0]

    def flaky(fd: int, deadline: float | None) -> Any:
        calls[0] += 1
        if calls[0] == 2:  # the verdict of the first grade
            raise KeyboardInterrupt
        return real(fd, deadline)

    monkeypatch.setattr(grading, "_receive", flaky)
    with pytest.raises(KeyboardInterrupt):
        grade_answer(MATH, "1")
    assert pool.live == 0 and not pool.idle  # killed, not put back with the reply unread
    assert within(30.0, lambda: grade_answer(MATH, "2")) == Grade(False)
