"""Decision points: LYNX cue words, step boundaries, every k tokens."""

import pytest

from reasoning import ConfigError
from reasoning.probes.cues import DEFAULT_CUES, LYNX_CUES, CueSet


def test_lynx_cues_match_substrings_case_insensitively_at_the_covering_token() -> None:
    tokens = ["Hmm", ",", " let", " me", " wait", ".", " Awaiting", " alter", "natively", "!"]
    # "hmm" ends in token 1; "wait" in token 5 and inside "Awaiting" (token 7); the two-token
    # "alternatively" completes at token 9.
    assert LYNX_CUES.events(tokens) == [1, 5, 7, 9]


def test_step_boundaries_and_every_k_tokens() -> None:
    tokens = ["Step", " 1", ".\n\n", "Step", " 2", ".", "\n", "\nDone"]
    assert CueSet(words=(), step_boundary=True).events(tokens) == [3, 8]
    assert CueSet(words=(), step_boundary=False, every=3).events(tokens) == [3, 6]
    assert DEFAULT_CUES.events(tokens) == [3, 8]


def test_events_are_deduplicated_skipped_and_capped() -> None:
    tokens = ["wait", "\n\n", "wait", "wait", "x"]
    cues = CueSet(every=1, skip_first=1, max_events=2)
    assert CueSet(every=1).events(tokens) == [1, 2, 3, 4, 5]
    assert cues.events(tokens) == [2, 3]


def test_bad_cue_sets_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no kind of decision point"):
        CueSet(words=(), step_boundary=False)
    with pytest.raises(ConfigError, match="empty cue word"):
        CueSet(words=("",))
    with pytest.raises(ConfigError, match="every and skip_first"):
        CueSet(every=-1)
