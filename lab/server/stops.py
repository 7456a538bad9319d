"""Where an answer ends on a stop string or a stop token, and what text each token streams.

vLLM 0.33 does this in two places. Its engine core ends a request whose last token is one of
``stop_token_ids`` (``v1/core/sched/utils.py``, ``check_stop``: finish "stop", ``stop_reason``
the id). Its API server detokenizes each new token and looks for the stop strings in the new
text (``v1/engine/detokenizer.py``, ``BaseIncrementalDetokenizer.update`` and
``check_stop_strings``): a match ends the request ("stop", ``stop_reason`` the string, which
overrides a length finish on the same token), cuts the text before the string (or after it with
``include_stop_str_in_output``), and keeps the tokens up to the one that completed it. While a
stream runs it holds back the last ``len(longest stop string) - 1`` characters, so that no part
of a stop string is sent before it is known not to be one (``get_next_output_text``).

With ``min_tokens``, vLLM's detokenizer looks for stop strings only once the request has more
than ``min_tokens`` output tokens, and only in the text of the tokens after the first
``min_tokens`` (``update``: ``stop_check_offset``); a string that ends there may start earlier. So
a stop string ends a request on token ``min_tokens + 1`` at the earliest, as a stop token does
(its logits are masked until then: ``generation.py``). The emulator makes one token a step, so
that is: no search on the first ``min_tokens`` tokens.

The emulator plans an answer's words before the engine runs it (``generation.py``), so it finds
the stop here, once, and asks the engine for the shortened length: usage, ``/metrics`` and the
stream's timing then agree with the text. vLLM's engine may run a step or two past a stop string
before the API server's abort reaches it; those extra tokens are not simulated.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_stop_string(text: str, new_chars: int, stop: Sequence[str]) -> tuple[str, int] | None:
    """The stop string that ends a match in the last ``new_chars`` characters of ``text``, and
    where it starts: of several, the one that ends first (ties: the earlier in ``stop``), as
    vLLM's ``check_stop_strings`` picks it."""
    if not new_chars:
        return None
    best: tuple[str, int] | None = None
    best_end = len(text) + 1
    for s in stop:
        # Only a match that ends in the new text is new (the text before was searched already).
        at = text.find(s, max(0, len(text) - new_chars - len(s) + 1))
        if at >= 0 and at + len(s) < best_end:
            best, best_end = (s, at), at + len(s)
    return best


def stop_and_stream(pieces: Sequence[str], token_ids: Sequence[int] | None, stop: Sequence[str],
                    stop_token_ids: Sequence[int], include_stop_str_in_output: bool, min_tokens: int = 0
                    ) -> tuple[int, tuple[str, ...], str | int | None]:
    """(tokens generated, the text each of them streams, the stop reason or None).

    ``pieces`` is the text each planned token adds, ``token_ids`` their ids (needed only with
    ``stop_token_ids``). The streamed texts join to the answer's final text; the last one flushes
    what was held back. ``min_tokens`` holds off the stop strings only: a stop token among the
    first ``min_tokens`` still ends the answer, as vLLM's ``check_stop`` would, but vLLM never
    samples one there and the planner draws none (``generation.py``)."""
    if not stop and not stop_token_ids:
        return len(pieces), tuple(pieces), None
    stop_ids = frozenset(stop_token_ids)
    hold = max(map(len, stop)) - 1 if stop and not include_stop_str_in_output else 0
    text, sent, out = "", 0, []
    for k, piece in enumerate(pieces):
        is_stop_token = token_ids is not None and token_ids[k] in stop_ids
        before = len(text)
        if include_stop_str_in_output or not is_stop_token:  # vLLM leaves a stop token out of the text
            text += piece
        reason: str | int | None = None
        match = first_stop_string(text, len(text) - before, stop) if k >= min_tokens else None
        if match is not None:
            reason, at = match
            text = text[:at + len(reason)] if include_stop_str_in_output else text[:at]
        elif is_stop_token:
            reason = token_ids[k]
        last = reason is not None or k == len(pieces) - 1
        shown = len(text) if last else max(sent, len(text) - hold)
        out.append(text[sent:shown])
        sent = shown
        if reason is not None:
            return k + 1, tuple(out), reason
    return len(pieces), tuple(out), None
