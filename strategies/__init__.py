"""Built-in strategies, registered by name in `reasoning.STRATEGIES`.

Example:
    >>> from reasoning import STRATEGIES
    >>> import reasoning.strategies
    >>> STRATEGIES.names()
    ['self-consistency', 'single']
"""

from reasoning.strategies.self_consistency import SelfConsistency
from reasoning.strategies.single import Single

__all__ = ["SelfConsistency", "Single"]
