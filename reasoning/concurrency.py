"""Structured concurrency: every task a problem starts has ended before the problem does.

``asyncio.gather`` returns at the first error and leaves the other awaitables running: after a
budget stop their requests would go on decoding (and go uncharged) after the record is written.
`run_all` and `task_group` are built on `asyncio.TaskGroup` instead: the first error cancels
the siblings, in the engine, and waits until they have ended. They also re-raise that error as
itself rather than inside an `ExceptionGroup`, so ``except BudgetExhausted`` works around them.

Example:
    >>> import anyio
    >>> async def twice(x):
    ...     return 2 * x
    >>> async def main():
    ...     return await run_all(twice(1), twice(2))
    >>> anyio.run(main)
    [2, 4]
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from reasoning.errors import BudgetExhausted

__all__ = ["ancestors", "first_error", "run_all", "run_in_order", "task_group"]

T = TypeVar("T")

_ANCESTORS: contextvars.ContextVar[tuple[asyncio.Task[Any], ...]] = contextvars.ContextVar(
    "reasoning_ancestors", default=()
)


def ancestors() -> tuple[asyncio.Task[Any], ...]:
    """The tasks that started the current one through `task_group` (or `run_all`), outermost first.

    They wait for it to end: the budget's queue (`reasoning.budget.Ledger.admit`) never makes
    a task wait on a reservation one of them holds.
    """
    return _ANCESTORS.get()


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error of `group` to re-raise: the first that is not a budget stop, else the first.

    A real error outranks a budget stop that happened at the same time (the problem failed; it
    did not merely run out). The others are attached as notes.
    """
    leaves = list(_leaves(group))
    errors = [e for e in leaves if not isinstance(e, BudgetExhausted)]
    first = (errors or leaves)[0]
    for other in leaves:
        if other is not first:
            first.add_note(f"also raised concurrently: {type(other).__name__}: {other}")
    return first


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An `asyncio.TaskGroup` whose failure re-raises the first error itself (see `first_error`).

    On leaving the block every task has ended; an error in one cancels the others (and the
    block) and waits for them.
    """
    parent = asyncio.current_task()
    token = _ANCESTORS.set((*_ANCESTORS.get(), parent) if parent is not None else _ANCESTORS.get())
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None
    finally:
        _ANCESTORS.reset(token)


async def run_all(*awaitables: Awaitable[T]) -> list[T]:
    """Await all `awaitables` concurrently; return their results in order.

    The first error cancels the others and is raised once they have ended.
    """

    async def wait(awaitable: Awaitable[T]) -> T:
        return await awaitable

    async with task_group() as group:
        tasks = [group.create_task(wait(a)) for a in awaitables]
    return [task.result() for task in tasks]


async def run_in_order(*awaitables: Awaitable[T]) -> list[T]:
    """Await `awaitables` one after another, in order; return their results.

    The sequential twin of `run_all`, for a reproducible run (`Controller.deterministic`): each
    request reaches the engine alone, so its batches do not depend on arrival timing. On an
    error the awaitables not yet started are closed (never left un-awaited) and the error is
    raised as itself.
    """
    results: list[T] = []
    try:
        for awaitable in awaitables:
            results.append(await awaitable)
    except BaseException:
        for rest in awaitables[len(results) + 1 :]:
            close = getattr(rest, "close", None)
            if close is not None:
                close()
        raise
    return results
