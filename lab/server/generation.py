"""What the emulated model says: the words of each choice, and where it stops by itself.

The engine simulator decides *when* tokens come; this module decides *which* words they are.
Everything is a pure function of (server seed, prompt text, choice index, request seed), through
a seeded numpy Generator, so the same prompt gets the same answer from the same server seed.

- A prompt that asks a built-in question gets its answer (``questions.py``); under a quality
  fault, a seeded draw turns that share of answers wrong.
- Any other prompt gets filler words, and a natural length drawn from a lognormal distribution
  (median 128 tokens). A real model stops at an end-of-sequence token; here the natural length
  plays that part: the engine is asked for ``min(natural, max_tokens)`` tokens, and the choice
  ends with ``finish_reason="stop"`` when the natural length came first, ``"length"`` otherwise.
- ``ignore_eos`` (vLLM's extension, which ``vllm bench serve`` sends) runs to ``max_tokens``.
- The cost fault multiplies the natural length (longer answers, as a model that rambles).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from lab.server import questions
from lab.server.tokenizer import FILLER_WORDS, Tokenizer

NATURAL_MEDIAN_TOKENS = 128
NATURAL_SIGMA = 0.6


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    words: tuple[str, ...]  # the words the choice will emit, in order
    max_tokens: int  # tokens asked of the engine
    finish_reason: str  # "stop" or "length", once all max_tokens have come
    question: str | None = None  # the built-in question answered, if any
    correct: bool | None = None  # for a question: whether the answer is right


def _rng(seed: int, prompt: str, index: int, request_seed: int | None, salt: int) -> np.random.Generator:
    key = [seed & 0xFFFFFFFF, zlib.crc32(prompt.encode("utf-8")), index, salt]
    if request_seed is not None:
        key.append(request_seed & 0xFFFFFFFF)
    return np.random.default_rng(key)


def plan_choice(
    *,
    tokenizer: Tokenizer,
    prompt: str,
    index: int,
    max_tokens: int,
    seed: int,
    request_seed: int | None = None,
    ignore_eos: bool = False,
    wrong_share: float = 0.0,
    cost_multiplier: float = 1.0,
) -> ChoicePlan:
    """The words and the engine length of one choice (``max_tokens`` already checked >= 1)."""
    rng = _rng(seed, prompt, index, request_seed, salt=1)
    question = questions.find_question(prompt)
    correct: bool | None = None
    if question is not None:
        # The quality draw uses its own stream, so changing the fault never changes other words.
        draw = _rng(seed, prompt, index, request_seed, salt=2).random()
        correct = not draw < wrong_share
        text = questions.answer_text(question) if correct else questions.wrong_answer_text(question, int(draw * 1e6))
        words = list(tokenizer.split(text))
        natural = len(words)
    else:
        natural = min(max(round(rng.lognormal(math.log(NATURAL_MEDIAN_TOKENS), NATURAL_SIGMA)), 4), 4096)
        words = []
    natural = max(1, int(round(natural * cost_multiplier)))
    length = max_tokens if ignore_eos else min(natural, max_tokens)
    if len(words) < length:  # filler after an answer too (cost fault, ignore_eos)
        words += [FILLER_WORDS[i] for i in rng.choice(len(FILLER_WORDS), size=length - len(words)).tolist()]
    finish = "stop" if not ignore_eos and natural < max_tokens else "length"
    return ChoicePlan(
        words=tuple(words[:length]),
        max_tokens=length,
        finish_reason=finish,
        question=question.text if question else None,
        correct=correct,
    )
