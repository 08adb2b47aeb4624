"""Built-in strategies, registered by name in `reasoning.STRATEGIES`.

Example:
    >>> from reasoning import STRATEGIES
    >>> import reasoning.strategies
    >>> STRATEGIES.names()  # doctest: +NORMALIZE_WHITESPACE
    ['adaptive-sc', 'best-of-n', 'deepconf', 'first-finish', 'longest-finish', 'self-consistency',
     'short-m@k', 'single']
"""

from reasoning.strategies.adaptive_sc import AdaptiveSelfConsistency
from reasoning.strategies.best_of_n import BestOfN
from reasoning.strategies.deepconf import DeepConf
from reasoning.strategies.first_finish import FirstFinish
from reasoning.strategies.longest_finish import LongestFinish
from reasoning.strategies.self_consistency import SelfConsistency
from reasoning.strategies.short_m_at_k import ShortMAtK
from reasoning.strategies.single import Single

__all__ = [
    "AdaptiveSelfConsistency",
    "BestOfN",
    "DeepConf",
    "FirstFinish",
    "LongestFinish",
    "SelfConsistency",
    "ShortMAtK",
    "Single",
]
