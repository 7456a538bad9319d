"""Numbers written the way vLLM 0.33 reads ``--max-model-len``, ``--max-num-batched-tokens`` and
``--kv-cache-memory-bytes``: ``32768``, ``32k`` or ``32K``.

vLLM 0.33 gives those flags the argparse type ``human_readable_int`` (``--max-model-len``:
``human_readable_int_or_auto``), both in ``utils/argparse_utils.py``; ``engine/arg_utils.py``
(``_compute_kwargs``) says which flags. The grammar, after stripping white space:

- digits, an optional ``.`` and more digits, then one suffix. A lower-case suffix is a power of
  ten (``k`` 10^3, ``m`` 10^6, ``g`` 10^9, ``t`` 10^12) and takes a fraction: ``25.6k`` is
  25,600. An upper-case one is a power of two (``K`` 2^10, ``M`` 2^20, ``G`` 2^30, ``T`` 2^40)
  and takes whole numbers only: ``1.5K`` is refused.
- anything else is read by Python's ``int``: ``8192``, ``+8192``, ``8_192``, ``-1``.

vLLM multiplies a fraction as a float and drops what is left after the point, so ``1.0005k``
is 1000 and ``1.005k`` is 1004 (1.005 is 1.00499... as a float); ServeLab gives the same
numbers. ``--max-model-len auto`` (or ``-1``) is vLLM's auto-fit, which ServeLab does not
simulate (:func:`parse_max_model_len`). Pure functions; a bad value raises ``ValueError``
with the reason, and the caller adds the flag.
"""

from __future__ import annotations

import math

DECIMAL_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
BINARY_SUFFIXES = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
EXAMPLES = "such as 8192, 8k (8,000) or 8K (8,192)"


def parse_int(text: str) -> int:
    """``text`` as vLLM 0.33's ``human_readable_int`` reads it; ``ValueError`` where it refuses."""
    s = str(text).strip()
    number, suffix = s[:-1], s[-1:]
    if (suffix in DECIMAL_SUFFIXES or suffix in BINARY_SUFFIXES) and _is_unsigned_number(number):
        if suffix in BINARY_SUFFIXES:
            if not number.isdecimal():
                raise ValueError(f"expected a whole number before the binary suffix {suffix} "
                                 f"(x {BINARY_SUFFIXES[suffix]:,}), got {text!r}; for {number} x "
                                 f"{DECIMAL_SUFFIXES[suffix.lower()]:,} write {number}{suffix.lower()}")
            return int(number) * BINARY_SUFFIXES[suffix]
        value = float(number) * DECIMAL_SUFFIXES[suffix]  # a float, as vLLM's (see the module docstring)
        if not math.isfinite(value):
            raise ValueError(f"expected a whole number {EXAMPLES}, got {text!r}, which is too large")
        return int(value)
    try:
        return int(s)
    except ValueError:
        raise ValueError(f"expected a whole number {EXAMPLES}, got {text!r}") from None


def parse_max_model_len(text: str) -> int:
    """``--max-model-len`` as vLLM 0.33 reads it (``human_readable_int_or_auto``), except that
    ``auto`` and ``-1``, vLLM's auto-fit, raise ``ValueError``.

    vLLM's auto-fit lowers max_model_len to the longest request the KV cache holds
    (``v1/core/kv_cache_planning.py``: ``_auto_fit_max_model_len``); ServeLab does not simulate it,
    and says so rather than reading it as the model's maximum."""
    if str(text).strip().lower() == "auto" or parse_int(text) == -1:
        raise ValueError(f"{str(text).strip()!r} asks vLLM to fit max_model_len to the KV cache, which ServeLab does "
                         f"not simulate; give a length {EXAMPLES}, or leave the flag out for the model's maximum")
    return parse_int(text)


def _is_unsigned_number(s: str) -> bool:
    """``12`` or ``12.5``: decimal digits, then at most one point followed by digits."""
    whole, point, fraction = s.partition(".")
    return whole.isdecimal() and (not point or fraction.isdecimal())
