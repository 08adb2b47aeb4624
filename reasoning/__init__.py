"""reasoning: test-time reasoning on real local vLLM engines.

The core API: backends (`ScriptedBackend`, `VLLMBackend` via ``reasoning.backends.vllm_local``,
started from an `EngineConfig`), `Controller`, `Budget`, `Problem`, the `Strategy`/`Verifier`
seams and the `Run` record.
Built-in strategies live in `reasoning.strategies`, verifiers in `reasoning.verifiers`,
datasets and the CLI in `reasoning.evals`.
"""

from reasoning.answers import extract_answer, normalize_answer
from reasoning.backend import (
    Backend,
    Chunk,
    Completion,
    Message,
    Request,
    Sampling,
    TokenCounter,
    TokenLogprob,
    collect,
)
from reasoning.backends.scripted import ScriptedBackend
from reasoning.budget import Budget, Meter, Usage
from reasoning.config import EngineConfig
from reasoning.controller import Controller
from reasoning.engine.models import DEFAULT_MODEL, resolve_model
from reasoning.errors import (
    BackendError,
    BackendUnavailable,
    BudgetExhausted,
    CapabilityError,
    ConfigError,
    DatasetError,
    EngineStartError,
    ModelError,
    ReasoningError,
    ReplicaLost,
    VerifierError,
)
from reasoning.problem import Problem, default_prompt
from reasoning.record import Candidate, Run
from reasoning.registry import STRATEGIES, Registry
from reasoning.selection import majority_vote
from reasoning.strategy import Context, Result, Strategy
from reasoning.trace import Trace
from reasoning.verifier import Verdict, Verifier

__all__ = [
    "DEFAULT_MODEL",
    "STRATEGIES",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Budget",
    "BudgetExhausted",
    "Candidate",
    "CapabilityError",
    "Chunk",
    "Completion",
    "ConfigError",
    "Context",
    "Controller",
    "DatasetError",
    "EngineConfig",
    "EngineStartError",
    "Message",
    "Meter",
    "ModelError",
    "Problem",
    "ReasoningError",
    "Registry",
    "ReplicaLost",
    "Request",
    "Result",
    "Run",
    "Sampling",
    "ScriptedBackend",
    "Strategy",
    "TokenCounter",
    "TokenLogprob",
    "Trace",
    "Usage",
    "Verdict",
    "Verifier",
    "VerifierError",
    "collect",
    "default_prompt",
    "extract_answer",
    "majority_vote",
    "normalize_answer",
    "resolve_model",
]
__version__ = "0.1.0"
