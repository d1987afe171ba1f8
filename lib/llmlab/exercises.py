"""Exercises whose answers are checked in code.

Each exercise has a key ("02.1"), a question, a solution computed by the library (never typed by hand) and a relative
tolerance. In a notebook the learner writes `answer = ...` then `check("02.1", answer)`: an unanswered exercise
(`...`) prints how to answer and does not fail; a wrong answer says how far off it is; `solution("02.1")` shows the
computation. tests/test_exercises.py checks every solution against its own checker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Exercise:
    key: str  # "<chapter>.<n>", e.g. "02.1"
    question: str  # what the learner is asked, with its unit
    solve: Callable[[], Any]  # computes the expected answer with the library
    how: str  # the computation, in one line of code, shown by solution()
    rel_tol: float = 0.01  # accepted relative error for numbers


EXERCISES: dict[str, Exercise] = {}


def register(key: str, question: str, how: str, rel_tol: float = 0.01):
    """Decorator: register the function below as the solution of exercise `key`."""

    def wrap(solve: Callable[[], Any]) -> Callable[[], Any]:
        if key in EXERCISES:
            raise ValueError(f"exercise {key} is registered twice")
        EXERCISES[key] = Exercise(key, question, solve, how, rel_tol)
        return solve

    return wrap


def _exercise(key: str) -> Exercise:
    _load_chapters()
    if key not in EXERCISES:
        raise LookupError(f"no exercise {key!r}; known: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[key]


def is_correct(key: str, answer: Any) -> bool:
    """True when `answer` matches the library's solution (numbers within the exercise's tolerance)."""
    exercise = _exercise(key)
    expected = exercise.solve()
    if isinstance(expected, bool) or not isinstance(expected, (int, float)):
        return answer == expected
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        return False
    return abs(answer - expected) <= exercise.rel_tol * max(abs(expected), 1e-12)


def check(key: str, answer: Any) -> bool:
    """Print whether `answer` is right; `...` means not answered yet (no failure)."""
    exercise = _exercise(key)
    if answer is Ellipsis:
        print(f"Exercise {key}: {exercise.question}\n  → replace `...` with your answer and run the cell again.")
        return False
    if is_correct(key, answer):
        print(f"Exercise {key}: correct ✓ ({answer!r})")
        return True
    expected = exercise.solve()
    if isinstance(expected, (int, float)) and isinstance(answer, (int, float)) and expected:
        print(f"Exercise {key}: not yet ✗ — your answer is {answer / expected:.3g}× the expected value. Try again.")
    else:
        print(f"Exercise {key}: not yet ✗ — try again (solution('{key}') shows the computation).")
    return False


def solution(key: str) -> Any:
    """Print and return the solution of exercise `key`, with the line that computes it."""
    exercise = _exercise(key)
    value = exercise.solve()
    print(f"Exercise {key}: {exercise.question}\n  {exercise.how}\n  = {value!r}")
    return value


def _load_chapters() -> None:
    """Import the chapters' exercise sets (they register themselves)."""
    import importlib
    import pkgutil

    import llmlab.exercise_sets as sets

    for module in pkgutil.iter_modules(sets.__path__):
        importlib.import_module(f"llmlab.exercise_sets.{module.name}")
