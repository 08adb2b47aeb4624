"""Answer extraction and normalisation (pure string functions, no model calls).

`extract_answer` tries, in order: the last ``\\boxed{...}`` (balanced braces), a GSM8K-style
``#### x`` line, ``The answer is x`` / ``Answer: x``, and finally the last number in the text.
`written_answer` is the same without the last-number fallback and without the text's last line
unless it ended: what a sample cut short (``length``) states in full, if anything.
`normalize_answer` makes a key under which equivalent surface forms vote together
(``$1,000.00`` and ``1000`` give ``1000``).

Example:
    >>> extract_answer("so 3+4 = \\\\boxed{7}.")
    '7'
    >>> normalize_answer("$1,000.00")
    '1000'
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "extract_boxed", "normalize_answer", "written_answer"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer) is[:\s]*\$?([^\n$]+?)(?:\$|\.\s|\.$|\n|$)", re.I)
_ANSWER_COLON = re.compile(r"^[\s*_#>]*(?:final\s+)?answer[\s*_]*:[\s*_]*([^\n]+)", re.I | re.M)
"""``Answer: x`` at the start of a line, also ``Final Answer: x`` and markdown's ``**Answer:** x``."""


def extract_boxed(text: str) -> str | None:
    """Return the content of the last non-empty ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    An empty box (a prompt's "put it in \\boxed{}" echoed at the end) is skipped.

    Example:
        >>> extract_boxed("so \\\\boxed{7}. Then \\\\boxed{}."), extract_boxed("\\\\boxed{a{b}c}")
        ('7', 'a{b}c')
    """
    end = len(text)
    while True:
        start = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
        if start < 0:
            return None
        content = _box_content(text, start)
        if content != "":  # an unclosed last box stays no answer: the text was cut writing it
            return content
        end = start


def _box_content(text: str, start: int) -> str | None:
    """The balanced content of the box starting at `start` (None: no brace, or never closed)."""
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i].strip()
    return None


def extract_answer(text: str) -> str | None:
    """Return the final answer written in `text`, or None when there is none."""
    boxed = extract_boxed(text)
    if boxed:
        return boxed
    for pattern in (_HASHES, _ANSWER_IS, _ANSWER_COLON):
        found = pattern.findall(text)
        if found:
            return _tidy(found[-1])
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def written_answer(text: str) -> str | None:
    """The answer `text` states in full, for a text that may have been cut mid-word.

    A closed ``\\boxed{...}`` counts; so do ``#### x`` and ``Answer: x`` on a line the text went
    on past (a cut last line might have said ``3`` of ``30``), and ``the answer is x`` once its
    sentence ended (``x. Then``); the last number of the text does not.

    Example:
        >>> written_answer("so \\\\boxed{7} and then"), written_answer("x = 148 w149")
        ('7', None)
        >>> written_answer("The answer is 30.\\nCheck"), written_answer("The answer is 3")
        ('30', None)
        >>> written_answer("The answer is 30. Then"), written_answer("The answer is 30.")
        ('30', None)
    """
    boxed = extract_boxed(text)
    if boxed:
        return boxed
    ended = text[: text.rfind("\n") + 1]
    for pattern in (_HASHES, _ANSWER_IS, _ANSWER_COLON):
        # An answer line counts once the text went on past it; "the answer is x" once its
        # sentence ended ("x. Then", "x$"): "x." at the very end might have been "x.5".
        found = [m for m in pattern.finditer(text) if m.end() <= len(ended) or _sentence_ended(m, text)]
        if found:
            return _tidy(found[-1].group(1))
    return None


def _sentence_ended(match: re.Match[str], text: str) -> bool:
    return match.re is _ANSWER_IS and (match.end() < len(text) or match.group(0)[-1:] in ("$", " ", "\t"))


def _tidy(found: str) -> str:
    """An answer line's answer without markdown emphasis around it or a closing full stop."""
    return str(found).strip().strip("*_").strip().rstrip(".")


_LONGEST_NUMBER = 80
"""Characters past which an answer is not read as a number (its unit regex would be quadratic)."""


def _number(text: str) -> str | None:
    if len(text) > 4 * _LONGEST_NUMBER:
        return None
    cleaned = re.sub(r"\\(?:text|mathrm|textbf)\{([^}]*)\}", r"\1", text)
    cleaned = cleaned.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    cleaned = cleaned.replace("\\!", "").replace("{,}", "").replace(",", "").strip()
    if len(cleaned) > _LONGEST_NUMBER:
        return None
    cleaned = re.sub(r"^[a-zA-Z ]*=\s*", "", cleaned)
    cleaned = re.sub(r"\s*(?:dollars?|cents?|units?|[a-zA-Z]+)\.?$", "", cleaned).strip()
    if not re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", cleaned):
        return None
    value = float(cleaned)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def normalize_answer(answer: str) -> str:
    """Canonical key for voting: a plain number when the answer is numeric, else tidy LaTeX."""
    number = _number(answer)
    if number is not None:
        return number
    text = answer.strip().strip("$").strip()
    text = re.sub(r"\\(?:left|right|displaystyle|,|;|!|\s)", "", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", text)
    return re.sub(r"\s+", " ", text).strip().rstrip(".")
