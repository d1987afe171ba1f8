"""Every exercise's library-computed solution passes its own check, and a wrong answer does not."""

import pytest

from llmlab.exercises import EXERCISES, _load_chapters, check, is_correct, solution


def all_keys():
    _load_chapters()
    return sorted(EXERCISES)


@pytest.mark.parametrize("key", all_keys())
def test_solution_is_accepted_and_a_wrong_answer_is_not(key, capsys):
    expected = solution(key)
    assert is_correct(key, expected), (key, expected)
    assert check(key, ...) is False  # unanswered: prints how to answer, does not fail
    wrong = (expected * 1.5 + 1) if isinstance(expected, (int, float)) and not isinstance(expected, bool) else object()
    assert not is_correct(key, wrong), (key, wrong, expected)


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(LookupError, match="known"):
        check("99.9", 1)
