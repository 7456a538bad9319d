"""A small built-in question set with known answers, so a judge can score the emulator.

When a prompt contains one of these questions, the emulator answers it correctly: the answer
text becomes the completion's tokens. The quality fault turns a fraction of the answers wrong
(a plausible answer of the same kind: another capital, a nearby number). A judge job asks the
questions, compares with :func:`is_correct` and reports the share answered right, which is what
the course's quality analysis reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    answer: str
    kind: str  # "capital", "arithmetic", "fact": wrong answers are drawn from the same kind

    @property
    def key(self) -> str:
        return normalize(self.text)


_CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Brazil", "Brasilia"), ("Norway", "Oslo"), ("Portugal", "Lisbon"),
    ("Poland", "Warsaw"), ("Greece", "Athens"), ("Peru", "Lima"), ("Chile", "Santiago"),
]
_ARITHMETIC = [
    ("What is 7 times 8?", "56"), ("What is 12 plus 30?", "42"), ("What is 100 minus 37?", "63"),
    ("What is 9 times 9?", "81"), ("What is 144 divided by 12?", "12"), ("What is 15 plus 27?", "42"),
    ("What is 6 times 7?", "42"), ("What is 81 divided by 3?", "27"), ("What is 250 minus 125?", "125"),
    ("What is 11 times 11?", "121"),
]
_FACTS = [
    ("How many days are in a week?", "7"), ("How many continents are there?", "7"),
    ("What is the chemical symbol for gold?", "Au"), ("What is the chemical symbol for iron?", "Fe"),
    ("How many legs does a spider have?", "8"), ("What is the largest planet in the solar system?", "Jupiter"),
]

QUESTIONS: tuple[Question, ...] = (
    tuple(Question(f"What is the capital of {country}?", city, "capital") for country, city in _CAPITALS)
    + tuple(Question(q, a, "arithmetic") for q, a in _ARITHMETIC)
    + tuple(Question(q, a, "fact") for q, a in _FACTS)
)



def normalize(text: str) -> str:
    """Lower case, words only, single spaces: how prompts and questions are compared."""
    return " ".join(re.findall(r"\w+", text.lower()))


_FIRST_WORDS = tuple(dict.fromkeys(q.key.split()[0] for q in QUESTIONS))
_KEYED = tuple((f" {q.key} ", q) for q in QUESTIONS)  # normalized once, not on every request


def find_question(prompt: str) -> Question | None:
    """The built-in question the prompt asks, if any (the last one, when it holds several)."""
    low = prompt.lower()
    if not any(w in low for w in _FIRST_WORDS):  # a cheap test first: most prompts ask none
        return None
    norm = f" {normalize(prompt)} "
    best: tuple[int, Question] | None = None
    for key, q in _KEYED:  # a tuple: a fixed order, so the choice is deterministic
        at = norm.rfind(key)
        if at >= 0 and (best is None or at > best[0]):
            best = (at, q)
    return best[1] if best else None


def answer_text(question: Question) -> str:
    return f"{question.answer}."


def wrong_answer_text(question: Question, pick: int) -> str:
    """A plausible wrong answer of the same kind; ``pick`` (any int) chooses which."""
    if question.kind == "arithmetic" or question.answer.isdigit():
        offsets = (1, -1, 2, 10, -2, -10)
        value = int(question.answer) + offsets[pick % len(offsets)]
        return f"{value}."
    others = [q.answer for q in QUESTIONS if q.kind == question.kind and q.answer != question.answer]
    return f"{others[pick % len(others)]}."


_PICKS = 1_000_000  # generation.py picks a wrong answer with int(draw * _PICKS), draw uniform under the share


def answer_distribution(question: Question, wrong_share: float) -> list[tuple[str, float]]:
    """Each answer text ``generation.plan_choice`` can give, with its probability: the right one
    with ``1 - wrong_share``; under the quality fault a wrong one, picked by ``int(draw * 1e6)``
    for a draw uniform in ``[0, wrong_share)``, so each pick value has ``1e-6`` (the last, partly
    covered, less). The texts are in the order first met, the right answer first."""
    weights = {answer_text(question): 1.0 - wrong_share}
    if wrong_share > 0:
        n_options = 6 if question.kind == "arithmetic" or question.answer.isdigit() else \
            len([q for q in QUESTIONS if q.kind == question.kind and q.answer != question.answer])
        full = int(wrong_share * _PICKS)  # pick values whose whole interval lies under the share
        for option in range(n_options):
            count = full // n_options + (1 if option < full % n_options else 0)
            p = count / _PICKS + (wrong_share - full / _PICKS if option == full % n_options else 0.0)
            text = wrong_answer_text(question, option)
            weights[text] = weights.get(text, 0.0) + p
    return [(text, p) for text, p in weights.items() if p > 0]


def is_correct(question: Question, completion: str) -> bool:
    """A judge's check: the completion's words include the expected answer."""
    return f" {normalize(question.answer)} " in f" {normalize(completion)} "
