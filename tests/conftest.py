import pytest

from reasoning import Problem


@pytest.fixture
def problem() -> Problem:
    return Problem(id="p1", question="What is 2+2?", answer="4")
