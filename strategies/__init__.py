"""Built-in strategies, registered by name in `reasoning.STRATEGIES`.

Example:
    >>> from reasoning import STRATEGIES
    >>> import reasoning.strategies
    >>> STRATEGIES.names()  # doctest: +NORMALIZE_WHITESPACE
    ['a-star', 'adaptive-sc', 'arbitrage', 'atts', 'beam', 'best-of-n', 'budget-forcing',
     'deepconf', 'difficulty', 'dvts', 'dynasor', 'early-exit', 'first-finish', 'genrm', 'longest-finish',
     'lt-prune', 'lt-select', 'particle-filtering', 'pdr', 'plan-and-budget', 'self-consistency',
     'self-eval', 'self-refine', 'short-m@k', 'single', 'solve-detect-verify', 'spec-reason',
     'spec-thinking', 'sr', 'trimr']
"""

if __name__ != "reasoning.strategies":  # this folder, on sys.path in a checkout's root: no shadowing
    raise ImportError(f"import reasoning.strategies, not {__name__} (a folder of the reasoning checkout)")

from reasoning.strategies.a_star import AStar
from reasoning.strategies.adaptive_sc import AdaptiveSelfConsistency
from reasoning.strategies.arbitrage import Arbitrage
from reasoning.strategies.atts import ATTS
from reasoning.strategies.beam_search import BeamSearch
from reasoning.strategies.best_of_n import BestOfN
from reasoning.strategies.budget_forcing import BudgetForcing
from reasoning.strategies.deepconf import DeepConf
from reasoning.strategies.difficulty import DifficultyRouter
from reasoning.strategies.dvts import DVTS
from reasoning.strategies.dynasor import Dynasor
from reasoning.strategies.early_exit import EarlyExit
from reasoning.strategies.first_finish import FirstFinish
from reasoning.strategies.genrm import GenRM
from reasoning.strategies.longest_finish import LongestFinish
from reasoning.strategies.lt_prune import LTPrune
from reasoning.strategies.lt_select import LTSelect
from reasoning.strategies.particle_filtering import ParticleFiltering
from reasoning.strategies.pdr import PDR, SequentialRefinement
from reasoning.strategies.plan_and_budget import PlanAndBudget
from reasoning.strategies.sampled import Sampled
from reasoning.strategies.self_consistency import SelfConsistency
from reasoning.strategies.self_eval import SelfEval
from reasoning.strategies.self_refine import SelfRefine
from reasoning.strategies.short_m_at_k import ShortMAtK
from reasoning.strategies.single import Single
from reasoning.strategies.solve_detect_verify import SolveDetectVerify
from reasoning.strategies.spec_reason import SpecReason
from reasoning.strategies.spec_thinking import SpecThinking
from reasoning.strategies.trimr import TrimR

__all__ = [
    "ATTS",
    "DVTS",
    "PDR",
    "AStar",
    "AdaptiveSelfConsistency",
    "Arbitrage",
    "BeamSearch",
    "BestOfN",
    "BudgetForcing",
    "DeepConf",
    "DifficultyRouter",
    "Dynasor",
    "EarlyExit",
    "FirstFinish",
    "GenRM",
    "LTPrune",
    "LTSelect",
    "LongestFinish",
    "ParticleFiltering",
    "PlanAndBudget",
    "Sampled",
    "SelfConsistency",
    "SelfEval",
    "SelfRefine",
    "SequentialRefinement",
    "ShortMAtK",
    "Single",
    "SolveDetectVerify",
    "SpecReason",
    "SpecThinking",
    "TrimR",
]
