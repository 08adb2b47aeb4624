"""The one error hierarchy of the framework.

Every error the library raises on purpose derives from `ReasoningError`; the CLI prints
its message and exits with status 1, without a traceback::

    ReasoningError
    ├── ConfigError            bad parameter, unknown strategy/dataset/model name
    ├── DatasetError           unreadable or malformed dataset (names file and line)
    ├── ModelError             embedded model missing, corrupt, or not convertible
    ├── BackendError           a backend call failed; ``retryable`` says whether to retry
    │   ├── EngineStartError   the engine could not start (memory, dtype, model files)
    │   ├── ReplicaLost        one engine replica of a pool died: re-run its problem on another
    │   └── BackendUnavailable the backend cannot be reached (after retries): stop the run
    ├── CapabilityError        a backend was asked for something it cannot do
    ├── BudgetExhausted        a budget line would be overspent (the controller catches it)
    └── VerifierError          a verifier or grader failed on a candidate

Errors are never turned into answer text: a failed generation raises, it is not scored.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "ArtefactRequired",
    "BackendError",
    "BackendUnavailable",
    "BudgetExhausted",
    "CapabilityError",
    "ConfigError",
    "DatasetError",
    "EngineStartError",
    "ModelError",
    "ReasoningError",
    "ReplicaLost",
    "StoreError",
    "VerifierError",
    "checked_verdicts",
]


class ReasoningError(Exception):
    """Root of every error raised on purpose by the framework."""


class ConfigError(ReasoningError):
    """A parameter, name or option is invalid; the message lists the valid choices."""


class ArtefactRequired(ConfigError):
    """A strategy was asked for without the artefact it reads (a calibration, a trained probe).

    The message says how to give it on the command line (``-p calibration=...``); `through_api`
    says how an API client gives it (the proxy's ``artefact_required`` error).

    Example:
        >>> error = ArtefactRequired("atts", "calibration", "atts-cal.json", "the calibration artefact")
        >>> str(error)
        'atts: give the calibration artefact, e.g. -p calibration=atts-cal.json'
        >>> error.through_api()[:60]
        'atts needs the calibration artefact: name its file on this s'
    """

    def __init__(self, strategy: str, parameter: str, example: str, what: str) -> None:
        super().__init__(f"{strategy}: give {what}, e.g. -p {parameter}={example}")
        self.strategy, self.parameter, self.example, self.what = strategy, parameter, example, what

    def through_api(self) -> str:
        """What an API client (a request to ``reasoning proxy``) does to give the artefact."""
        return (
            f"{self.strategy} needs {self.what}: name its file on this server in the request, as the "
            f'parameter {self.parameter} (body "params": {{"{self.parameter}": "{self.example}"}}, or '
            f'the spec "{self.strategy}({self.parameter}={self.example})"), or ask the operator to '
            "start the proxy with a default --strategy that names it"
        )


class DatasetError(ReasoningError):
    """A dataset could not be read; the message names the file (and line when known)."""


class StoreError(ReasoningError):
    """A results store is unreadable, corrupted or not ours; it is left untouched."""


class ModelError(ReasoningError):
    """A model could not be found, verified or converted; the message says what to do."""


class BackendError(ReasoningError):
    """A backend call failed.

    Attributes:
        retryable: True when the same call may succeed if tried again (connection reset,
            HTTP 429/5xx, engine busy); False for errors that will repeat (bad request).
        backend: Name of the backend that failed.
    """

    def __init__(self, message: str, *, retryable: bool = False, backend: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.backend = backend


class EngineStartError(BackendError):
    """The inference engine failed to start; the message is the one-line cause and a fix."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached even after retries (server down, engine gone).

    Unlike other retryable errors, which fail one problem, this stops a dataset run: the
    results finished so far are kept and a re-run resumes after them.
    """

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(message, retryable=True, backend=backend)


class ReplicaLost(BackendError):
    """One replica of a pool of engines died (or became unreachable) while serving a problem.

    Retryable, and more: the pool has dropped the replica, so the problem's work can be
    rerouted. A dataset run re-runs the problem from the start on a live replica (a few times
    at most) instead of writing an error row; with no replica left, the pool raises
    `BackendUnavailable` instead.

    Attributes:
        replica: Name of the replica that was lost.
        reroutable: Always True: the work may be re-run on another replica of the same pool.
    """

    reroutable = True

    def __init__(self, message: str, *, replica: str = "", backend: str = "") -> None:
        super().__init__(message, retryable=True, backend=backend)
        self.replica = replica


class CapabilityError(ReasoningError):
    """A backend was asked for an ability it lacks; the message names those that have it.

    Attributes:
        capability: What was asked for (e.g. ``hidden states``).
        backend: The backend that cannot do it.
        offered_by: The backends that can.
    """

    def __init__(self, capability: str, backend: str, offered_by: str) -> None:
        super().__init__(f"backend {backend!r} cannot give {capability}; backends that can: {offered_by}")
        self.capability = capability
        self.backend = backend
        self.offered_by = offered_by

    def __reduce__(self) -> tuple[type[CapabilityError], tuple[str, str, str]]:
        """Pickle with its own arguments (a replica's error crosses Ray as itself)."""
        return (type(self), (self.capability, self.backend, self.offered_by))


class BudgetExhausted(ReasoningError):
    """A budget line would be overspent by the next call.

    Attributes:
        resource: Budget line that ran out (``output_tokens``, ``prompt_tokens``,
            ``calls`` or ``seconds``).
        used: Amount already spent on that line.
        limit: The line's limit.
    """

    def __init__(self, resource: str, used: float, limit: float) -> None:
        super().__init__(f"budget exhausted: {resource} used {used:g} of {limit:g}")
        self.resource = resource
        self.used = used
        self.limit = limit


class VerifierError(ReasoningError):
    """A verifier or grader failed on a candidate."""


async def checked_verdicts(
    what: str, call: Awaitable[list[T]], count: int, nouns: tuple[str, str]
) -> list[T]:
    """Await a verifier's or scorer's `call`, which owes one result per input (`count`).

    Its own failures become a `VerifierError` naming `what` (the package's errors pass through),
    and so does a wrong number of results (`nouns`: what it returns and what it was given, e.g.
    ``("verdicts", "texts")``).
    """
    try:
        results = await call
    except ReasoningError:
        raise
    except Exception as exc:
        raise VerifierError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    if len(results) != count:
        raise VerifierError(f"{what} returned {len(results)} {nouns[0]} for {count} {nouns[1]}")
    return results
