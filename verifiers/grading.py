"""Grading final answers against gold answers (evaluation only; strategies never grade).

* ``number`` (GSM8K): exact numeric equality after normalisation (``$1,000`` = ``1000.0``).
* ``math`` (MATH-500, AIME): a plain string or number match first, else `math-verify` (gold
  first) in a grader process.
* ``reasoning_gym``: the task's own scorer, full marks only, in a grader process.
* ``text``: normalised string equality.

No answer can hang a run. sympy (under math-verify) and a task's scorer run in a small pool of
grader processes, each grade under a wall-clock limit (`GRADE_SECONDS`): the process stops the
grade itself at the limit, and is killed a second later when it could not (a big-integer
computation runs in C, out of a signal's reach); the next grade starts a fresh one. Before sympy
sees a prediction, a cheap check refuses one too big to grade: longer than `MAX_CHARS`, nested
deeper than `MAX_DEPTH`, or holding a power or factorial of more than `MAX_DIGITS` digits
(``10^{10^{10}}``, ``100000!!!``). Either way the answer counts wrong and `Grade.reason` says
why. Number and text grades never leave the calling thread; async code awaits `grade_async`,
which grades on a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import math
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, cast

if __name__ != "_reasoning_grader":  # a grader process loads this file alone, without the package
    from reasoning.answers import normalize_answer
    from reasoning.errors import VerifierError
    from reasoning.problem import Problem

__all__ = [
    "GRADE_SECONDS",
    "GYM_MAX_CHARS",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "Grade",
    "grade",
    "grade_answer",
    "grade_async",
]

logger = logging.getLogger(__name__)

GRADE_SECONDS = 5.0
"""Wall-clock limit of one grade in a grader process (its start is not counted)."""
MAX_CHARS = 1000
"""Longest prediction graded (MATH-500's longest gold answer has 53 characters)."""
MAX_DEPTH = 10
"""Deepest nesting of brackets in a ``math`` prediction (math-verify's parser slows down
exponentially with it: 20 braces take it over 30 s)."""
MAX_DIGITS = 10_000
"""Most digits of a number a ``math`` prediction may build with powers and factorials."""
GYM_MAX_CHARS = 100_000
"""Longest answer handed to a reasoning-gym scorer."""

_POOL_SIZE = 2
_START_SECONDS = 60.0
"""Longest wait for a grader process to import its libraries (not counted against a grade)."""
_GRACE_SECONDS = 1.0
"""How long past the limit a grader process may take to stop a grade itself before it is killed."""
_MEMORY_BYTES = 2 << 30
"""Memory a grader process may allocate for one grade, beyond what it holds before it."""


@dataclass(frozen=True)
class Grade:
    """A verdict, and why an answer was counted wrong without the grader's verdict."""

    correct: bool | None
    """Whether the answer matches the gold (None: the problem has no gold answer)."""
    reason: str | None = None
    """Set when the answer counts wrong unjudged: too big to grade, the grade timed out, or the
    grader failed on it."""


def grade(problem: Problem, answer: str | None, *, seconds: float = GRADE_SECONDS) -> bool | None:
    """Whether `answer` matches the problem's gold answer (None when there is no gold).

    An answer that cannot be graded in `seconds` (or is too big to try) is wrong (logged; see
    `grade_answer` for the reason). Blocks while a grader process works: in async code await
    `grade_async` instead.

    Example:
        >>> grade(Problem("p", "2+2?", answer="4"), "4.0")
        True

    Raises:
        VerifierError: The problem cannot be graded (a reasoning-gym problem without its entry).
    """
    return grade_answer(problem, answer, seconds=seconds).correct


async def grade_async(problem: Problem, answer: str | None, *, seconds: float = GRADE_SECONDS) -> Grade:
    """`grade_answer` on a worker thread: the event loop stays free while sympy works."""
    return await asyncio.to_thread(grade_answer, problem, answer, seconds=seconds)


def grade_answer(problem: Problem, answer: str | None, *, seconds: float = GRADE_SECONDS) -> Grade:
    """Grade `answer` against the problem's gold, within `seconds`; a wrong-unjudged one says why.

    Whatever the answer, the grade itself takes at most `seconds` plus a second of grace (a wait
    for a free grader process, or for one to start, is not counted); an answer too big to grade,
    a grade that ran out of time and a grader that failed on the answer all give
    ``Grade(False, reason)`` (logged as a warning).

    Raises:
        VerifierError: The problem cannot be graded (a reasoning-gym problem without its entry).
    """
    result = _grade(problem, answer, seconds)
    if result.reason is not None:
        logger.warning("problem %s: answer %s counted wrong: %s", problem.id, _show(answer), result.reason)
    return result


def _grade(problem: Problem, answer: str | None, seconds: float) -> Grade:
    if problem.kind == "reasoning_gym":
        return _grade_gym(problem, answer, seconds)
    if problem.answer is None:
        return Grade(None)
    if answer is None:
        return Grade(False)
    if answer == problem.answer:
        return Grade(True)
    if len(answer) > MAX_CHARS:  # before normalising: its regular expressions are not linear
        return Grade(False, f"too long to grade ({len(answer)} characters, at most {MAX_CHARS})")
    gold, pred = normalize_answer(problem.answer), normalize_answer(answer)
    if gold == pred:
        return Grade(True)
    if problem.kind == "number":
        return Grade(_same_number(gold, pred))
    if problem.kind != "math":
        return Grade(False)
    if _INTEGER.fullmatch(gold) and _INTEGER.fullmatch(pred):
        return Grade(False)  # two different integers (normalised, so written alike): no sympy
    too_big = _too_big(answer)
    if too_big is not None:
        return Grade(False, too_big)
    status, value = _pool().run(("math", problem.answer, answer), seconds)
    if status == "ok":
        return Grade(bool(value))
    if status == "error":
        return Grade(False, f"math-verify failed: {value}")
    return Grade(False, str(value))


_INTEGER = re.compile(r"-?\d+")


def _same_number(gold: str, pred: str) -> bool:
    try:
        return abs(float(gold) - float(pred)) <= 1e-6 * max(1.0, abs(float(gold)))
    except ValueError:
        return False


def _grade_gym(problem: Problem, answer: str | None, seconds: float) -> Grade:
    entry: dict[str, Any] = problem.metadata.get("entry", {})
    source = entry.get("metadata", {}).get("source_dataset")
    if not source:
        raise VerifierError(f"problem {problem.id!r} has no reasoning-gym entry to score with")
    if answer is not None and len(answer) > GYM_MAX_CHARS:
        return Grade(False, f"too long to grade ({len(answer)} characters, at most {GYM_MAX_CHARS})")
    status, value = _pool().run(("gym", source, answer, entry), seconds)
    if status == "ok":
        return Grade(float(value) >= 1.0)
    if status == "error":
        return Grade(False, f"the reasoning-gym scorer of {source} failed: {value}")
    return Grade(False, str(value))


def _show(answer: str | None, limit: int = 60) -> str:
    if answer is None or len(answer) <= limit:
        return repr(answer)
    return f"{answer[:limit]!r}... ({len(answer)} characters)"


# The guard: what sympy must never see. A prediction is read as a sequence of terms (a number,
# a bracketed group, a command or a letter), each with postfix factorials and a right-associative
# power, and every term's size is bounded from above in decimal digits: a number has its own, a
# letter or command counts as the number 2 (so ``x^{10^{10}}`` is refused too), a group adds up
# its terms (a product's bound).

_TOKEN = re.compile(r"\d+(?:\.\d*)?|\.\d+|\\[a-zA-Z]+|\\.|\*\*|\s+|.", re.S)
_OPEN = frozenset("{([")
_CLOSE = frozenset("})]")
_LOG2 = math.log10(2)


class _TooBig(Exception):
    """A prediction the guard refuses (its message is the reason)."""


def _too_big(text: str) -> str | None:
    """Why `text` is too big to hand to sympy, or None (linear in its length)."""
    if len(text) > MAX_CHARS:
        return f"too long to grade ({len(text)} characters, at most {MAX_CHARS})"
    depth = deepest = 0
    for char in text:
        if char in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSE:
            depth = max(0, depth - 1)
    if deepest > MAX_DEPTH:
        return f"nested too deep to grade ({deepest} brackets deep, at most {MAX_DEPTH})"
    tokens = [t for t in _TOKEN.findall(text) if not t.isspace()]
    try:
        _Sizes(tokens).whole()
    except _TooBig as exc:
        return str(exc)
    except RecursionError:  # a chain of hundreds of powers, a^b^c^...
        return "a chain of powers too long to grade"
    return None


class _Sizes:
    """Upper bounds on the digits (log10) of the numbers a token sequence builds.

    Raises `_TooBig` when one has more than `MAX_DIGITS` digits.
    """

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.at = 0

    def _next(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def whole(self) -> None:
        """Read all tokens (a stray closing bracket is skipped)."""
        while self._next() is not None:
            self.sequence()
            self.at += 1

    def sequence(self) -> float:
        total = 0.0
        while (token := self._next()) is not None and token not in _CLOSE:
            total += self.term()
        return total

    def term(self) -> float:
        """A base with its factorials, its power, and the power's factorials (``10^{6}!``)."""
        return self.factorials(self.power(self.factorials(self.primary())))

    def power(self, base: float) -> float:
        if self._next() not in ("^", "**"):
            return base
        self.at += 1
        exponent = self.power(self.primary())  # a superscript is one primary; a^b^c is a^(b^c)
        if exponent > math.log10(MAX_DIGITS) + 1:
            raise _TooBig(f"a power too large to grade (an exponent of about 10^{exponent:.0f})")
        digits = base * 10**exponent
        if digits > MAX_DIGITS:
            raise _TooBig(f"a power too large to grade (about {digits:.3g} digits, at most {MAX_DIGITS})")
        return digits

    def factorials(self, digits: float) -> float:
        while self._next() == "!":
            self.at += 1
            digits = _factorial_digits(digits)
        return digits

    def primary(self) -> float:
        token = self._next()
        if token is None:
            return 0.0
        self.at += 1
        if token in _OPEN:
            inside = self.sequence()
            if self._next() is not None:
                self.at += 1  # its closing bracket, whichever it is: (0, 1] is an interval
            return inside
        if token[0].isdecimal() or token[0] == ".":  # a decimal's denominator has its fraction's digits
            whole, _, fraction = token.partition(".")
            whole = whole.lstrip("0")
            size = math.log10(int(whole[:15])) + max(0, len(whole) - 15) if whole else 0.0
            return max(size, len(fraction.rstrip("0")))
        if token.isalpha() or (token[0] == "\\" and token[1:].isalpha()):
            return _LOG2  # a letter or command stands for a number of its own
        return 0.0


def _factorial_digits(digits: float) -> float:
    if digits > 7:  # n >= 10^7: n! has tens of millions of digits
        raise _TooBig(f"a factorial too large to grade (of a number of about {digits:.0f} digits)")
    n = 10**digits
    result = math.lgamma(n + 1) / math.log(10)
    if result > MAX_DIGITS:
        raise _TooBig(f"a factorial too large to grade (about {result:.3g} digits, at most {MAX_DIGITS})")
    return result


# The grader processes. Each is this file run alone (``_serve``), answering length-prefixed
# JSON jobs on its stdin with replies on its stdout (JSON, not pickle: a reply is read by the
# parent, and a grade works on model output): ("go",) when it starts a job (after its
# imports), then (status, value) with status "ok", "error" or "timeout".

_LAUNCH = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('_reasoning_grader', sys.argv[1]); "
    "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); m._serve()"
)
_HEADER = struct.Struct("!Q")


class _Lost(Exception):
    """The grader process did not answer in time, or died (its message is the reason)."""


def _send(fd: int, message: Any) -> None:
    data = json.dumps(message).encode()
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int, deadline: float | None) -> Any:
    """The next message on `fd`; past `deadline` (None: none), `TimeoutError`."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    size: int = _HEADER.unpack(_read(fd, _HEADER.size, deadline, poll))[0]
    return json.loads(_read(fd, size, deadline, poll))


def _read(fd: int, count: int, deadline: float | None, poll: select.poll) -> bytes:
    chunks: list[bytes] = []
    while count:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not poll.poll(math.ceil(left * 1000)):
                raise TimeoutError
        chunk = os.read(fd, min(count, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


class _Worker:
    """One grader process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-c", _LAUNCH, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        pipes = cast(tuple[IO[bytes], IO[bytes]], (self.process.stdin, self.process.stdout))  # piped above
        self.input, self.output = pipes[0].fileno(), pipes[1].fileno()
        self.alive = True

    def ask(self, job: tuple[Any, ...], seconds: float) -> tuple[str, Any]:
        """The reply to `job`; the process is killed when it is late (``alive`` turns false).

        Left any other way (Ctrl-C, a reply it cannot read), the process is killed too: a reply
        left unread would answer the next job.
        """
        try:
            return self._ask(job, seconds)
        except BaseException:
            self.kill()
            raise

    def _ask(self, job: tuple[Any, ...], seconds: float) -> tuple[str, Any]:
        try:
            _send(self.input, (seconds, job))
            _receive(self.output, time.monotonic() + _START_SECONDS)  # ("go",): imports done
        except TimeoutError:
            return self._lost(f"the grader process did not start within {_START_SECONDS:g} s")
        except (EOFError, OSError) as exc:
            return self._lost(f"the grader process died ({self._exit(exc)})")
        try:
            reply: tuple[str, Any] = _receive(self.output, time.monotonic() + seconds + _GRACE_SECONDS)
        except TimeoutError:
            return self._lost(f"timed out after {seconds:g} s (the grader process was killed)")
        except (EOFError, OSError) as exc:
            return self._lost(f"the grader process died ({self._exit(exc)})")
        return reply

    def _exit(self, exc: BaseException) -> str:
        try:
            code = self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return f"{type(exc).__name__}"
        return f"exit code {code}"

    def _lost(self, reason: str) -> tuple[str, Any]:
        self.kill()
        return ("timeout", reason)

    def kill(self) -> None:
        """End the process and release its pipes."""
        self.alive = False
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class _Pool:
    """Up to `size` grader processes, started on demand, shared by all threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: list[_Worker] = []
        self.live = 0
        self.ready = threading.Condition()
        self.pid = os.getpid()

    def run(self, job: tuple[Any, ...], seconds: float) -> tuple[str, Any]:
        """A grader process's reply to `job` (``("timeout", reason)`` when it was lost)."""
        with self.ready:
            while not self.idle and self.live >= self.size:
                self.ready.wait()
            if self.idle:
                worker = self.idle.pop()
            else:
                try:
                    worker = _Worker()
                except OSError as exc:
                    raise VerifierError(f"cannot start a grader process: {exc}") from exc
                self.live += 1
        try:
            return worker.ask(job, seconds)
        finally:
            with self.ready:
                if worker.alive:
                    self.idle.append(worker)
                else:
                    self.live -= 1
                self.ready.notify()

    def close(self) -> None:
        """Kill the idle grader processes (at exit; in a forked child, whose are its parent's: none)."""
        if os.getpid() != self.pid:
            return
        with self.ready:
            idle, self.idle = self.idle, []
            self.live -= len(idle)
        for worker in idle:
            worker.kill()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _after_fork_in_child() -> None:  # a lock held by another thread at the fork stays held
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():  # a forked child starts its own
            _POOL = _Pool(_POOL_SIZE)
            atexit.register(_POOL.close)
        return _POOL


# Inside a grader process.


class _Overtime(BaseException):
    """Raised by the grade's alarm (a BaseException: math-verify's handlers catch Exception)."""


def _serve() -> None:
    """A grader process's loop: one job at a time until its stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which kills us
    signal.signal(signal.SIGALRM, _overtime)
    # math-verify's own timeouts use signal.alarm, which would cancel the alarm set below: they
    # are off here, and its warning that they are is not shown (nor is anything else it logs).
    logging.disable(logging.CRITICAL)
    replies = os.dup(1)
    os.dup2(2, 1)  # stray prints go where stderr goes, not into the replies
    while True:
        try:
            seconds, job = _receive(0, None)
        except EOFError:
            return
        _prepare(job)
        _send(replies, ("go",))
        _send(replies, _work(job, seconds))


def _overtime(signum: int, frame: Any) -> None:
    raise _Overtime


def _prepare(job: tuple[Any, ...]) -> None:
    """Import what `job` needs before its clock starts."""
    if job[0] == "math":
        import math_verify  # noqa: F401
    else:
        import reasoning_gym  # noqa: F401


def _work(job: tuple[Any, ...], seconds: float) -> tuple[str, Any]:
    _limit(seconds)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            value = _math(*job[1:]) if job[0] == "math" else _gym(*job[1:])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return ("ok", value)
    except _Overtime:
        return ("timeout", f"timed out after {seconds:g} s")
    except Exception as exc:  # a grader fails in many ways on odd input (sympy, a task's scorer)
        return ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        _limit(None)  # the next job's imports are not bounded


def _limit(seconds: float | None) -> None:
    """Cap a grade's memory and CPU time (None: lift the caps), so that even an orphan stops.

    A big-integer power would take the machine's memory; and should the parent die while a grade
    runs in C (no alarm reaches it), the CPU limit's SIGXCPU ends this process anyway.
    """
    try:
        import resource

        with open("/proc/self/statm") as statm:
            held = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = used.ru_utime + used.ru_stime
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        for kind, soft in (
            (resource.RLIMIT_AS, held + _MEMORY_BYTES),
            (resource.RLIMIT_CPU, math.ceil(spent + (seconds or 0) + 2 * _GRACE_SECONDS)),
        ):
            hard = resource.getrlimit(kind)[1]
            if seconds is None or (hard != resource.RLIM_INFINITY and soft > hard):
                soft = hard
            resource.setrlimit(kind, (soft, hard))
    except (ImportError, OSError, ValueError):  # not Linux: the parent's kill still bounds the time
        return


def _math(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _gym(source: str, answer: str | None, entry: dict[str, Any]) -> float:
    import reasoning_gym

    return float(reasoning_gym.get_score_answer_fn(source)(answer, entry))
