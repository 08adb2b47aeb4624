"""Parameters shared by the step-level tree searches (beam, DVTS, particle filtering, A*)."""

from __future__ import annotations

from dataclasses import dataclass

from reasoning.verifiers.process import Aggregation, ScorerName, StepSampling


@dataclass(frozen=True)
class StepSearch:
    """How a step search samples steps and scores them (base of the tree-search strategies)."""

    scorer: ScorerName = "judge"
    """Process scores from the model as judge, or from the run's verifier (a PRM that scores steps)."""
    scorer_backend: str | None = None
    """Named backend of the judge (None: the run's default)."""
    aggregation: Aggregation = "last"
    """How step scores make a path's score: last, min, product, or model (whole path as one step)."""
    delimiter: str = "\n\n"
    """Step separator (and the stop string of step requests)."""
    step_tokens: int = 256
    """Most tokens per step."""
    max_steps: int = 40
    """Most steps per solution."""
    temperature: float = 0.8
    """Sampling temperature of steps."""
    top_p: float = 1.0
    """Nucleus mass."""

    def steps(self) -> StepSampling:
        """How steps are sampled and scored (raises ConfigError on bad values)."""
        return StepSampling(
            self.delimiter, self.step_tokens, self.max_steps, self.temperature, self.top_p, self.aggregation
        )
