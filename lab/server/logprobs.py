"""Log-probabilities of the emulator's own words, in vLLM 0.33's response shapes.

Each value is the emulator's: the log-probability of the word it chose under the distribution
it drew that word from (``generation.py``). A filler word is drawn uniformly from
``FILLER_WORDS``, so its log-probability is ``log(1 / len(FILLER_WORDS))`` and every other filler
word ties with it. A built-in question's answer is fixed, so its words have log-probability 0.0;
under the quality fault the first word is drawn from the right answer and the wrong ones, with
the probabilities ``questions.answer_distribution`` gives.

vLLM builds one candidate list per position (``v1/engine/logprobs.py``,
``append_logprobs_for_next_position``): the sampled token first, then the top ``N`` by rank,
a token already listed not repeated. ``/v1/completions`` shows the first ``logprobs + 1`` of
them (``completion_top_logprobs_limit``), ``/v1/chat/completions`` the first ``top_logprobs``
(``chat_top_logprobs_limit``), both in that order. Ties (the filler words) rank in
``FILLER_WORDS`` order here. vLLM fills a top-N with tokens of probability 0 (shown as -9999.0)
when fewer than N have any; the emulator lists only words it could have drawn, so a fixed
answer's word has one candidate, itself.

A token's text is the text it adds after the word before it (``tokenizer.piece``), as vLLM
decodes a token on its own (a leading space included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.server import protocol as P
from lab.server.generation import ChoicePlan
from lab.server.tokenizer import FILLER_WORDS, piece

MAX_LOGPROBS = 20  # vLLM's ModelConfig.max_logprobs (--max-logprobs), the default
_FILLER_LOGPROB = -math.log(len(FILLER_WORDS))


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str  # the token's text
    logprob: float  # of the chosen word
    candidates: tuple[tuple[str, float], ...]  # vLLM's list: the chosen token first, then the top N


def check_limits(num_logprobs: int | None, num_prompt_logprobs: int | None, vocab_size: int) -> None:
    """vLLM's SamplingParams._validate_logprobs with the default limit, sample logprobs first;
    -1 asks for the whole vocabulary."""
    for kind, parameter, num in (("sample", "logprobs", num_logprobs),
                                 ("prompt", "prompt_logprobs", num_prompt_logprobs)):
        asked = vocab_size if num == -1 else num
        if asked and asked > MAX_LOGPROBS:
            raise P.validation_error(f"Requested {kind} logprobs of {asked}, which is greater than max allowed: "
                                     f"{MAX_LOGPROBS}", parameter=parameter, value=asked)


def _distribution(plan: ChoicePlan, k: int, top: int) -> list[tuple[str, float]]:
    """The ``top`` most likely words at position ``k`` (word, log-probability), most likely first."""
    if k >= plan.answer_words:
        return [(w, _FILLER_LOGPROB) for w in FILLER_WORDS[:top]]
    prefix = plan.words[:k]
    weights: dict[str, float] = {}
    for words, p in plan.answers:  # the answers that agree with the words chosen so far
        if len(words) > k and words[:k] == prefix:
            weights[words[k]] = weights.get(words[k], 0.0) + p
    total = sum(weights.values())
    ranked = sorted(weights.items(), key=lambda wp: -wp[1])  # stable: ties in answer order
    return [(w, math.log(p / total)) for w, p in ranked[:top]]


def token_logprobs(plan: ChoicePlan, num: int) -> list[TokenLogprob]:
    """Each generated token's entry, with the top ``num`` candidates (``num`` >= 0)."""
    out = []
    for k, word in enumerate(plan.words):
        before = plan.words[k - 1] if k else plan.previous
        if k >= plan.answer_words:
            chosen = _FILLER_LOGPROB
        else:
            chosen = dict(_distribution(plan, k, len(plan.answers)))[word]
        listed = {word: chosen}
        for w, lp in _distribution(plan, k, num):
            listed.setdefault(w, lp)
        out.append(TokenLogprob(piece(word, before), chosen,
                                tuple((piece(w, before), lp) for w, lp in listed.items())))
    return out


def text_offsets(entries: list[TokenLogprob], start_offset: int = 0) -> list[int]:
    """Each token's offset in the text: the tokens' lengths added up from ``start_offset``."""
    offsets, at = [], start_offset
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return offsets


def completion_shape(entries: list[TokenLogprob], start_offset: int = 0) -> dict:
    """vLLM's CompletionLogProbs: each token's offset in the text (:func:`text_offsets`),
    log-probability, text and candidates by text."""
    return {"text_offset": text_offsets(entries, start_offset), "token_logprobs": [e.logprob for e in entries],
            "tokens": [e.token for e in entries], "top_logprobs": [dict(e.candidates) for e in entries]}


def chat_shape(entries: list[TokenLogprob], top_logprobs: int) -> dict:
    """vLLM's ChatCompletionLogProbs: ``content``, one entry a token, each with its first
    ``top_logprobs`` candidates."""
    def one(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**one(e.token, e.logprob),
                         "top_logprobs": [one(t, lp) for t, lp in e.candidates[:top_logprobs]]}
                        for e in entries]}
