"""What the emulated model says: the words of each choice, and where it stops by itself.

The engine simulator decides *when* tokens come; this module decides *which* words they are.
Everything is a pure function of (server seed, prompt text, choice index, request seed), through
a seeded numpy Generator, so the same prompt gets the same answer from the same server seed.

- A prompt that asks a built-in question gets its answer (``questions.py``); under a quality
  fault, a seeded draw turns that share of answers wrong.
- Any other prompt gets filler words, each drawn uniformly from ``FILLER_WORDS``, and a natural
  length drawn from a lognormal distribution (median 128 tokens). A real model stops at an
  end-of-sequence token; here the natural length plays that part: the engine is asked for
  ``min(natural, max_tokens)`` tokens, and the choice ends with ``finish_reason="stop"`` when the
  natural length came first, ``"length"`` otherwise.
- ``ignore_eos`` (vLLM's extension, which ``vllm bench serve`` sends) runs to ``max_tokens``.
- The cost fault multiplies the natural length (longer answers, as a model that rambles).
- ``stop`` strings and ``stop_token_ids`` end the answer earlier, where vLLM would
  (``stops.py``); the plan then asks the engine only for the tokens up to the stop.
- ``min_tokens`` holds off all three ends, each as vLLM holds it off (``_min_tokens_natural``,
  ``_redraw_masked_stop_tokens``, and ``stops.py`` for stop strings): the answer goes on with
  filler words.

A plan keeps what ``logprobs.py`` needs to give each word's log-probability under the
distribution it was drawn from: the question's possible answers and their probabilities.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lab.server import questions
from lab.server.stops import stop_and_stream
from lab.server.tokenizer import FILLER_WORDS, Tokenizer, piece

NATURAL_MEDIAN_TOKENS = 128
NATURAL_SIGMA = 0.6


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    words: tuple[str, ...]  # the words the engine generates, in order (a stop's word included)
    max_tokens: int  # tokens asked of the engine: len(words)
    finish_reason: str  # "stop" or "length", once all max_tokens have come
    pieces: tuple[str, ...]  # the text each token adds to the answer as vLLM streams it; they join to the text
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it
    previous: str | None = None  # the word before the first: a completion's prompt's last word; None for chat
    # The answers the first words were drawn from, as word tuples with their probabilities (a
    # built-in question); the words after them, and all of a filler answer's, are uniform draws.
    answers: tuple[tuple[tuple[str, ...], float], ...] = ()
    answer_words: int = 0  # how many leading words come from ``answers``
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
    previous: str | None = None,
    stop: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
    include_stop_str_in_output: bool = False,
    min_tokens: int = 0,
) -> ChoicePlan:
    """The words and the engine length of one choice (``max_tokens`` already checked >= 1, and
    ``min_tokens`` <= ``max_tokens``). ``previous`` is the word the answer follows (a
    completion's prompt's last word), which decides whether its first word starts with a space."""
    rng = _rng(seed, prompt, index, request_seed, salt=1)
    question = questions.find_question(prompt)
    correct: bool | None = None
    answers: tuple[tuple[tuple[str, ...], float], ...] = ()
    if question is not None:
        # The quality draw uses its own stream, so changing the fault never changes other words.
        draw = _rng(seed, prompt, index, request_seed, salt=2).random()
        correct = not draw < wrong_share
        text = questions.answer_text(question) if correct else questions.wrong_answer_text(question, int(draw * 1e6))
        words = list(tokenizer.split(text))
        natural = len(words)
        answers = tuple((tuple(tokenizer.split(t)), p) for t, p in questions.answer_distribution(question, wrong_share))
    else:
        natural = min(max(round(rng.lognormal(math.log(NATURAL_MEDIAN_TOKENS), NATURAL_SIGMA)), 4), 4096)
        words = []
    answer_words = len(words)
    natural = _min_tokens_natural(max(1, int(round(natural * cost_multiplier))), min_tokens)
    length = max_tokens if ignore_eos else min(natural, max_tokens)
    if len(words) < length:  # filler after an answer too (cost fault, ignore_eos, min_tokens)
        words += [FILLER_WORDS[i] for i in rng.choice(len(FILLER_WORDS), size=length - len(words)).tolist()]
    words = words[:length]
    if min_tokens and stop_token_ids:
        answer_words = _redraw_masked_stop_tokens(words, answer_words, min_tokens, frozenset(stop_token_ids),
                                                  tokenizer, _rng(seed, prompt, index, request_seed, salt=3))
    finish = "stop" if not ignore_eos and natural < max_tokens else "length"
    pieces = [piece(w, words[k - 1] if k else previous) for k, w in enumerate(words)]
    ids = [tokenizer.token_id(w) for w in words] if stop_token_ids else None
    length, streamed, stop_reason = stop_and_stream(pieces, ids, stop, stop_token_ids, include_stop_str_in_output,
                                                    min_tokens)
    if stop_reason is not None:
        finish = "stop"  # a stop string found on the last token overrides "length", as in vLLM
    return ChoicePlan(
        words=tuple(words[:length]),
        max_tokens=length,
        finish_reason=finish,
        pieces=streamed,
        stop_reason=stop_reason,
        previous=previous,
        answers=answers,
        answer_words=min(answer_words, length),
        question=question.text if question else None,
        correct=correct,
    )


def _min_tokens_natural(natural: int, min_tokens: int) -> int:
    """The natural length under ``min_tokens``.

    vLLM's ``MinTokensLogitsProcessor`` (``v1/sample/logits_processor/builtin.py``) sets the
    logits of EOS and every stop token to -inf while fewer than ``min_tokens`` tokens have come
    out, so the first EOS can be token ``min_tokens + 1``. The natural length here counts the
    words before EOS, and the emulator does not generate EOS itself (a natural end at
    ``max_tokens`` is "length", as EOS would be token ``max_tokens + 1``); so the answer has at
    least ``min_tokens`` words, and a natural end at ``min_tokens`` is "stop" only when that is
    below ``max_tokens``. With ``ignore_eos`` EOS never ends it anyway. (``check_stop``, in
    ``v1/core/sched/utils.py``, checks EOS and stop tokens before its own ``min_tokens`` test,
    which holds off only repetition detection: the mask is what holds them off.)"""
    return max(natural, min_tokens)


def _redraw_masked_stop_tokens(words: list[str], answer_words: int, min_tokens: int, stop_ids: frozenset[int],
                               tokenizer: Tokenizer, rng: np.random.Generator) -> int:
    """Draw again, in place, each of the first ``min_tokens`` words that is a stop token, and
    return how many leading words are still the built-in answer's.

    The same mask as ``_min_tokens_natural``: vLLM never samples a stop token among the first
    ``min_tokens`` tokens, so the model says another word there: here a filler word that is not
    a stop token, drawn uniformly (its own stream, so no other draw moves). vLLM's logprobs are
    those of the logits before the mask (``Sampler``, ``logprobs_mode`` "raw_logprobs"), so a
    filler word's log-probability is the same as before. A built-in answer pushed off one of its
    words goes on as filler from there, so that ``logprobs.py`` gives every word the
    probability of the draw that made it."""
    answer_words = min(answer_words, len(words))  # max_tokens may have cut the answer
    allowed = [w for w in FILLER_WORDS if tokenizer.token_id(w) not in stop_ids]
    if not allowed:  # every filler word is a stop token: nothing to say instead, leave the words
        return answer_words
    for k in range(min(min_tokens, len(words))):
        if tokenizer.token_id(words[k]) not in stop_ids:
            continue
        if k < answer_words:
            rest = rng.choice(len(FILLER_WORDS), size=answer_words - k - 1).tolist()
            words[k + 1:answer_words] = [FILLER_WORDS[i] for i in rest]
            answer_words = k
        words[k] = allowed[int(rng.integers(len(allowed)))]
    return answer_words


def echoed(plan: ChoicePlan, prompt_text: str, prompt_only: bool) -> ChoicePlan:
    """A completion with ``echo``: the prompt's text before the answer's, in the first token's
    text (vLLM's completion server sends it with the first output). ``prompt_only`` (``max_tokens``
    0): the engine still makes one token, which vLLM counts in usage but does not show."""
    first = prompt_text if prompt_only else prompt_text + plan.pieces[0]
    pieces = (first,) if prompt_only else (first, *plan.pieces[1:])
    return dataclasses.replace(plan, pieces=pieces)
