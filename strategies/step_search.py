"""Parameters shared by the step-level tree searches (beam, DVTS, particle filtering, A*).

Process scores come from one of four scorers (``scorer``):

* ``judge``: the model judges the partial solution; P(Yes) read from its answer token's
  log-probabilities (`GenerativeScorer`); ``scorer_backend`` may name another model;
* ``prm``: a process reward model served by vLLM's pooling runner (`RewardModelScorer`);
  ``scorer_backend`` names that backend (default ``"prm"``);
* ``value``: the value model on the policy's own hidden states (`ValueProbeScorer`; no token
  decoded): the one shipped for the model, or ``probe=<artefact>`` (``--kind value``);
* ``probe``: an exit probe read as a value (`ValueProbeScorer`; ``probe`` is its artefact);
* ``verifier``: the run's verifier, when it has a ``score(ctx, paths)`` method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from reasoning import ConfigError, Context
from reasoning.probes.value import ValueProbeScorer
from reasoning.steps import Steps
from reasoning.strategies.step_tree import StepSampling, StepTree
from reasoning.verifiers.process import Aggregation, GenerativeScorer, ProcessScorer, RewardModelScorer

ScorerName = Literal["judge", "prm", "value", "probe", "verifier"]
"""Where process scores come from."""


@dataclass(frozen=True, kw_only=True)
class StepSearch(Steps):
    """How a step search samples steps (`Steps`) and scores them (base of the tree-search strategies)."""

    scorer: ScorerName = "judge"
    """Process scores from the model as judge, a served PRM, a value probe, or the run's verifier."""
    scorer_backend: str | None = None
    """Named backend of the judge (None: the policy) or of the PRM (None: ``"prm"``)."""
    probe: str | None = None
    """Artefact of ``scorer="probe"`` (an exit probe, required) or ``scorer="value"`` (a value
    model; default: the one shipped for the policy)."""
    aggregation: Aggregation = "last"
    """How step scores make a path's score: last, min, product, or model (whole path as one step)."""

    @property
    def needs_hidden_states(self) -> bool:
        """A value model reads the policy's hidden states (the CLI then starts the engine with them)."""
        return self.scorer in ("probe", "value")

    def steps(self) -> StepSampling:
        """How steps are sampled and scored (raises ConfigError on bad values)."""
        if self.scorer not in get_args(ScorerName):
            raise ConfigError(f"scorer must be one of {', '.join(get_args(ScorerName))}; got {self.scorer!r}")
        if self.scorer == "probe" and self.probe is None:
            raise ConfigError("scorer='probe' needs probe=<artefact> (an exit probe)")
        if self.probe is not None and self.scorer not in ("probe", "value"):
            raise ConfigError("probe= needs scorer='value' (a value model) or scorer='probe' (an exit probe)")
        return StepSampling(
            delimiter=self.delimiter,
            step_tokens=self.step_tokens,
            max_steps=self.max_steps,
            temperature=self.temperature,
            top_p=self.top_p,
            aggregation=self.aggregation,
        )

    def process_scorer(self, ctx: Context) -> ProcessScorer:
        """The process scorer asked for.

        Raises:
            ConfigError: ``verifier`` was asked for but the run's verifier cannot score steps.
        """
        if self.scorer == "judge":
            return GenerativeScorer(self.scorer_backend, self.delimiter)
        if self.scorer == "prm":
            return RewardModelScorer(self.scorer_backend or "prm")
        if self.scorer == "probe" and self.probe is not None:
            return ValueProbeScorer(self.probe, self.delimiter, kind="exit")
        if self.scorer == "value":
            return ValueProbeScorer(self.probe or "", self.delimiter, kind="value")
        if not isinstance(ctx.verifier, ProcessScorer):
            raise ConfigError(
                f"scorer='verifier' needs a run verifier that scores steps (a ProcessScorer with "
                f"score(ctx, paths)); got {type(ctx.verifier).__name__}; or use scorer='judge'"
            )
        return ctx.verifier

    def tree(self, ctx: Context) -> StepTree:
        """A step tree for one problem, with the asked-for scorer."""
        return StepTree(ctx, self.process_scorer(ctx), self.steps())
