"""OpenAI's request and response shapes, as vLLM's server reads and writes them.

Requests are pydantic models that accept (and ignore) fields we do not simulate, as vLLM
accepts them. The sampling parameters that do not change the emulator's words (``temperature``,
``top_p``, ``top_k``, ``min_p``, the three penalties, ``bad_words``, ``stream_interval``,
``vllm_xargs`` and the transfer params) are typed and checked as vLLM 0.33 checks them, then
ignored; ``stop``, ``stop_token_ids``, ``min_tokens``, ``logprobs`` and ``echo`` are read and
checked. The checks run where vLLM's run: on the raw body, before the fields (the request models'
"before" validators), in pydantic's field types (``seed``, ``stream_interval``), once the prompt
is read (``verify_args``, vLLM's SamplingParams), and last in the engine's input processor
(``verify_bad_words``). Errors use OpenAI's envelope ``{"error": {"message", "type", "param",
"code"}}`` with vLLM's status codes and wording.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Annotated, Any, Callable, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WrapValidator, field_validator, model_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


MAX_STOP_STRINGS = 4  # vLLM's VLLM_MAX_STOP_STRINGS default: a longer list fails pydantic's max_length
MAX_N_SEQUENCES = 16384  # vLLM's VLLM_MAX_N_SEQUENCES default: the largest `n`
MAX_COMPLETION_PROMPTS = 1024  # vLLM's VLLM_MAX_COMPLETION_PROMPTS default: the most prompts in a list
MAX_NUM_BAD_WORDS = 128  # vLLM's VLLM_MAX_NUM_BAD_WORDS default: the most bad-word token sequences
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # vLLM's bounds on `seed` (a pydantic Field(ge, le))

# vLLM's StopParam (entrypoints/generate/base/protocol.py): one string, a list of strings, or null.
StopParam = str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None
# vLLM's TopLogprobsParam: null means 0.
TopLogprobsParam = Annotated[int, BeforeValidator(lambda v: 0 if v is None else v)]


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extension; `vllm bench serve` sends it
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    # Checked as vLLM checks them (``verify_args``, ``verify_bad_words``), then not simulated:
    # the words are drawn the same way whatever their values.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    bad_words: list[str] = Field(default_factory=list)
    stream_interval: Annotated[int, Field(ge=1)] | None = None  # streams still send one token a chunk
    vllm_xargs: dict[str, str | int | float | list[str | int | float]] | None = None
    kv_transfer_params: dict[str, Any] | None = None
    ec_transfer_params: dict[str, Any] | None = None
    stop: StopParam = []
    stop_token_ids: list[int] | None = []
    include_stop_str_in_output: bool = False
    min_tokens: int = 0  # stops and the natural end wait for this many tokens (generation.py)
    prompt_logprobs: int | None = None  # checked, then refused: the emulator has no prompt logprobs

    @property
    def stop_strings(self) -> list[str]:
        """``stop`` as vLLM's SamplingParams holds it: always a list."""
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def unique_bad_words(self) -> list[str]:
        """``bad_words`` as vLLM's SamplingParams holds it: each word once, in first-seen order."""
        return list(dict.fromkeys(self.bad_words))

    @property
    def extra_args(self) -> dict[str, Any]:
        """vLLM's SamplingParams.extra_args as ``to_sampling_params`` builds it: ``vllm_xargs``,
        with the transfer params (when not empty) under their own names."""
        extra: dict[str, Any] = dict(self.vllm_xargs or {})
        for name in ("kv_transfer_params", "ec_transfer_params"):
            if value := getattr(self, name):
                extra[name] = value
        return extra

    @property
    def num_logprobs(self) -> int | None:
        """The sample logprobs asked for (vLLM's SamplingParams.logprobs), None for none."""
        return None

    @property
    def num_prompt_logprobs(self) -> int | None:
        """The prompt logprobs asked for (vLLM's SamplingParams.prompt_logprobs), None for none."""
        return self.prompt_logprobs

    def verify_args(self, max_tokens: int) -> None:
        """vLLM's ``SamplingParams.__post_init__`` for one prompt, whose ``max_tokens`` is the
        length ``get_max_tokens`` gave it: ``_verify_args`` in its order, then
        ``_verify_greedy_sampling``. vLLM builds these after the prompt is read and its length
        checked (``to_sampling_params`` in its serving code), so they come after those errors.
        Left out, as no request can reach them: ``stream_interval`` below 1 and the types of
        ``top_k`` and ``stop_token_ids`` (pydantic's field types refuse them first), negative
        logprobs (the raw-body checks do), and ``detokenize`` (not a request field)."""
        n = self.n
        if n < 1:  # _verify_num_sequences
            raise validation_error(f"n must be at least 1, got {n}.")
        if n > MAX_N_SEQUENCES:
            raise validation_error(f"n must be at most {MAX_N_SEQUENCES}, got {n}. To increase this limit, set "
                                   f"the VLLM_MAX_N_SEQUENCES environment variable.")
        if not _fits_msgpack(self.extra_args):  # _verify_extra_args
            raise validation_error("extra_args integers must be between -2**63 and 2**64 - 1.", "extra_args")
        for field, passes, message, named in _VALUE_CHECKS:
            value = getattr(self, field)
            if value is not None and not passes(value):
                raise validation_error(message.format(value), *((field, value) if named else ()))
        if max_tokens < 1:
            raise validation_error(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
        if self.min_tokens < 0:
            raise validation_error(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.min_tokens > max_tokens:
            raise validation_error(f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
                                   f"got {self.min_tokens}.")
        if any(not s for s in self.stop_strings):
            raise validation_error("stop cannot contain an empty string.")
        if any(not w for w in self.unique_bad_words):
            raise validation_error(f"bad_words cannot contain an empty string. Got bad_words={self.unique_bad_words}")
        # Greedy sampling makes the same answer n times, so vLLM refuses n > 1 with it. Greedy
        # means a temperature of exactly 0: __post_init__ first raises one in (0, 0.01) to 0.01.
        # A missing temperature is the model's default (generation_config) or 1.0, never 0.
        if self.temperature == 0.0 and n > 1:
            raise validation_error(f"n must be 1 when using greedy sampling, got {n}.")


# SamplingParams._verify_args's checks of one value each, in its order (after `n` and
# extra_args, before max_tokens): (field, test the value passes, message, whether vLLM names the
# field as `param` and adds its value). A field left out (None) gets vLLM's default in
# to_sampling_params (0 for the penalties, top_k and min_p; 1 for repetition_penalty,
# temperature and top_p), which passes, so it is not tested. A NaN fails every test, as in vLLM.
_VALUE_CHECKS: tuple[tuple[str, Callable[[Any], bool], str, bool], ...] = (
    ("presence_penalty", lambda v: -2.0 <= v <= 2.0, "presence_penalty must be in [-2, 2], got {}.", False),
    ("frequency_penalty", lambda v: -2.0 <= v <= 2.0, "frequency_penalty must be in [-2, 2], got {}.", False),
    ("repetition_penalty", math.isfinite, "repetition_penalty must be a finite number, got {}.", False),
    ("repetition_penalty", lambda v: v > 0.0, "repetition_penalty must be greater than zero, got {}.", False),
    ("temperature", math.isfinite, "temperature must be a finite number, got {}.", True),
    ("temperature", lambda v: v >= 0.0, "temperature must be non-negative, got {}.", True),
    ("temperature", lambda v: v <= 2.0, "temperature must be in [0, 2], got {}.", True),
    ("top_p", lambda v: 0.0 < v <= 1.0, "top_p must be in (0, 1], got {}.", True),
    ("top_k", lambda v: v >= -1, "top_k must be 0 (disable), or at least 1, got {}.", False),  # -1 also disables
    ("min_p", lambda v: 0.0 <= v <= 1.0, "min_p must be in [0, 1], got {}.", False),
)


def _fits_msgpack(value: Any) -> bool:
    """vLLM's ``SamplingParams._verify_extra_args``: every integer in ``value`` (keys, values,
    list items, at any depth) is one the engine's MessagePack transport carries, a signed or
    unsigned 64-bit one."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, int) and not -(2**63) <= item < 2**64:
            return False
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return True


def verify_bad_words(bad_words: list[str], encode: Callable[[str], list[int]]) -> None:
    """vLLM's ``SamplingParams.update_from_tokenizer``, which its engine's input processor runs
    after ``verify`` (so after the logprobs and stop token id checks): each word is tokenized
    as it is and with one leading space, and must give at least one token as it is; the spaced
    form counts as another sequence only when it starts with another token and is as long.
    More than ``MAX_NUM_BAD_WORDS`` sequences is an error. ``encode`` is the prompt tokenizer
    (without special tokens), where vLLM uses the model's: with the built-in one a word and the
    spaced word are the same tokens, so each word counts once. vLLM's last check, token ids
    past the vocabulary, cannot fail with ids a tokenizer gave."""
    sequences: list[list[int]] = []
    for word in bad_words:
        for prefix in ("", " "):
            ids = encode(prefix + word.lstrip())
            if not ids:
                if not prefix:
                    raise validation_error("bad_words entries must tokenize to at least one token.", "bad_words",
                                           bad_words)
                continue
            if not prefix or (ids[0] != sequences[-1][0] and len(ids) == len(sequences[-1])):
                sequences.append(ids)
                if len(sequences) > MAX_NUM_BAD_WORDS:
                    raise validation_error(f"Too many bad words after tokenization: {len(sequences)}. "
                                           f"The max number is {MAX_NUM_BAD_WORDS}.", "bad_words", bad_words)


def _raw_logprobs_checks(data: dict, top_field: str) -> None:
    """The part of vLLM's ``check_logprobs`` validator (both request models; ``mode="before"``,
    so on the raw JSON values, before pydantic reads the fields) about the fields the emulator
    reads: ``prompt_logprobs`` and ``top_field``, the completion's ``logprobs`` or the chat's
    ``top_logprobs``. A value that is not a number is vLLM's "must be an integer" error; a
    fraction passes here and then fails pydantic's ``int`` field (``int_from_float``), as in vLLM."""
    for field in ("prompt_logprobs", top_field):
        value = data.get(field)
        if value is not None and not isinstance(value, (int, float)):  # a bool is an int: it passes
            raise validation_error(f"`{field}` must be an integer.", field, value)
    if (prompt_logprobs := data.get("prompt_logprobs")) is not None:
        if data.get("stream") and (prompt_logprobs > 0 or prompt_logprobs == -1):
            raise validation_error("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
        if prompt_logprobs < 0 and prompt_logprobs != -1:
            raise validation_error("`prompt_logprobs` must be a positive value or -1.", "prompt_logprobs",
                                   prompt_logprobs)
    if (top := data.get(top_field)) is not None and top < 0 and top != -1:
        raise validation_error(f"`{top_field}` must be a positive value or -1.", top_field, top)


def _raw_stream_options_check(data: dict) -> None:
    # vLLM's validate_stream_options, on the raw values: an empty `stream_options` passes.
    if data.get("stream_options") and not data.get("stream"):
        raise validation_error("Stream options can only be defined when `stream=True`.", "stream_options")


TokenId = Annotated[int, Field(ge=0)]  # vLLM's prompt token ids: a negative one is a 400 with the body


def _token_ids_first(value: Any, validate) -> Any:
    """A prompt of token ids (what benchmark clients send) taken as it is: pydantic's union
    would first try it as ``list[str]`` (50 to 90 us for 512 ids, on every request). Anything else,
    and anything but plain ints (bools, floats, strings), goes through the union as before,
    with the same result or the same errors."""
    if type(value) is list and all(type(x) is int and x >= 0 for x in value):
        return value
    return validate(value)


COMPLETION_MAX_TOKENS = 16  # vLLM's default for /v1/completions, as OpenAI's


class CompletionRequest(_Base):
    # Optional here so that a missing prompt gets vLLM's own error (``missing_prompt``, raised by
    # ``_vllm_checks``), not pydantic's "Field required": vLLM checks it before the fields.
    prompt: Annotated[str | list[str] | list[TokenId] | list[list[TokenId]] | None, WrapValidator(_token_ids_first)] = None
    max_tokens: int | None = COMPLETION_MAX_TOKENS
    echo: bool | None = False
    logprobs: int | None = None

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    @property
    def echo_without_generation(self) -> bool:
        """vLLM's name for ``echo`` with ``max_tokens`` 0: the prompt alone is shown, but its
        engine is still asked for one token (CompletionRequest.to_sampling_params)."""
        return bool(self.echo) and self.max_tokens == 0

    @property
    def num_prompt_logprobs(self) -> int | None:
        # vLLM's CompletionRequest.to_sampling_params: with echo, logprobs asks for prompt logprobs too.
        return self.logprobs if self.prompt_logprobs is None and self.echo else self.prompt_logprobs

    @model_validator(mode="before")
    @classmethod
    def _vllm_checks(cls, data: Any) -> Any:
        """vLLM's CompletionRequest validators that run on the raw body, before the fields are
        read (pydantic runs "before" validators last-defined first): the length of a prompt
        list, the prompt, then ``stream_options``, then ``check_logprobs``. What they raise is a 400 of vLLM's own
        (``VLLMValidationError``), not a pydantic error, so it passes through FastAPI's
        validation to the app's handler (``build_app``)."""
        if isinstance(data, dict):
            prompt = data.get("prompt")
            # validate_prompt_list_length: a list of prompts (not one prompt of token ids, as
            # vLLM tells them apart by the first item) may hold at most MAX_COMPLETION_PROMPTS.
            if isinstance(prompt, list) and len(prompt) > MAX_COMPLETION_PROMPTS and not isinstance(prompt[0], int):
                raise validation_error(f"prompt list length {len(prompt)} exceeds the maximum allowed count of "
                                       f"{MAX_COMPLETION_PROMPTS}. To increase this limit, set the "
                                       f"VLLM_MAX_COMPLETION_PROMPTS environment variable.", "prompt")
            if prompt is None or prompt == "":  # validate_prompt_and_prompt_embeds
                raise missing_prompt()
            _raw_stream_options_check(data)
            _raw_logprobs_checks(data, "logprobs")
        return data

    @field_validator("max_tokens")
    @classmethod
    def _null_max_tokens_is_the_default(cls, value: int | None) -> int:
        # vLLM's CompletionRequest.normalize_null_max_tokens: `"max_tokens": null` means 16, not
        # the rest of the context (which is what the chat route does with it).
        return COMPLETION_MAX_TOKENS if value is None else value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Base):
    messages: list[ChatMessage]
    # vLLM's chat request takes "n": null, and SamplingParams.from_optional makes it 1.
    n: Annotated[int, BeforeValidator(lambda v: 1 if v is None else v)] = 1
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    logprobs: bool | None = False
    top_logprobs: TopLogprobsParam = 0
    echo: bool = False  # vLLM's: the last message's text before the answer; it asks for prompt logprobs

    @property
    def num_logprobs(self) -> int | None:
        # vLLM's ChatCompletionRequest.to_sampling_params: top_logprobs, if logprobs is true.
        return self.top_logprobs if self.logprobs else None

    @property
    def num_prompt_logprobs(self) -> int | None:
        # The same: with echo, top_logprobs (0 by default) asks for prompt logprobs.
        return self.top_logprobs if self.prompt_logprobs is None and self.echo else self.prompt_logprobs

    @model_validator(mode="before")
    @classmethod
    def _vllm_checks(cls, data: Any) -> Any:
        """vLLM's ChatCompletionRequest validators on the raw body (as the completion's): here
        ``check_logprobs`` runs before ``validate_stream_options``, which is defined first."""
        if isinstance(data, dict):
            _raw_logprobs_checks(data, "top_logprobs")
            top = data.get("top_logprobs")
            if top is not None and (top == -1 or top > 0) and not data.get("logprobs"):
                raise validation_error("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
            _raw_stream_options_check(data)
        return data


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize body: TokenizeCompletionRequest (``prompt``) or TokenizeChatRequest
    (``messages``), with their defaults (special tokens added for a prompt, not for a chat)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False

    def model_post_init(self, _context) -> None:
        if self.add_special_tokens is None:
            self.add_special_tokens = self.prompt is not None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=2**63 - 1)]]


class APIError(Exception):
    """An error answered in OpenAI's envelope."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self) -> dict:
        return error_body(self.message, self.err_type, self.status, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def error_body(message: str, err_type: str, code: int, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, "BadRequestError", param)


def validation_error(message: str, parameter: str | None = None, value: Any = None) -> APIError:
    """vLLM's ``VLLMValidationError`` as its handler answers it: 400, ``BadRequestError``, the
    parameter as ``param``, and the message with the tail its ``__str__`` adds,
    ``(parameter=..., value=...)``, for the parts that are set."""
    extras = [f"{key}={v}" for key, v in (("parameter", parameter), ("value", value)) if v is not None]
    if extras:
        message = f"{message} ({', '.join(extras)})"
    return APIError(400, message, "BadRequestError", parameter)


def missing_prompt() -> APIError:
    # vLLM's CompletionRequest.validate_prompt_and_prompt_embeds: no prompt, or "".
    return validation_error("Either prompt or prompt_embeds must be provided and non-empty.", parameter="prompt")


def prompt_logprobs_not_simulated() -> APIError:
    """ServeLab's own refusal: the emulator computes no prompt logprobs. vLLM's request models
    ask for them with ``prompt_logprobs``, and with ``echo`` (a completion's ``logprobs``, a
    chat's ``top_logprobs``, which is 0 by default: a chat's ``echo`` always asks)."""
    return bad_request("The ServeLab emulator does not simulate prompt logprobs, which vLLM computes for "
                       "`prompt_logprobs`, for `echo` with `logprobs` on /v1/completions and for `echo` on "
                       "/v1/chat/completions; leave them out, or ask a real vLLM server.", param="prompt_logprobs")


def model_not_found(model: str, served: tuple[str, ...]) -> APIError:
    # vLLM's OpenAIServing._check_model: 404, NotFoundError, param "model".
    return APIError(404, f"The model `{model}` does not exist. Valid aliases: {', '.join(served)}.",
                    "NotFoundError", "model")


def max_tokens_past_context(param: str, requested: int, max_model_len: int) -> APIError:
    # vLLM's TokenizeParams: the output alone may not exceed max_model_len.
    return validation_error(f"{param}={requested} cannot be greater than max_model_len={max_model_len}. "
                            f"Please request fewer output tokens.", parameter=param, value=requested)


def prompt_too_long(max_model_len: int, prompt_tokens: int) -> APIError:
    """vLLM's TokenizeParams._token_len_check. Its tokenizer stops at ``max_model_len + 1``
    tokens, so it says "at least" exactly when it counted that many (for token ids too)."""
    qualifier = "at least " if prompt_tokens == max_model_len + 1 else ""
    return validation_error(
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
        f"{qualifier}{prompt_tokens} input tokens, which exceeds this limit even without any output tokens. "
        f"Please reduce the length of the input prompt.", parameter="input_tokens", value=prompt_tokens)


# pydantic's names for the branches of a union or a wrapped validator, which vLLM leaves out of
# an error's location (its handlers/validation.py, _INTERNAL_LOC_MARKERS): the client's field is
# "body.prompt", not "body.prompt.list[int]". Any segment with a bracket is one as well.
_INTERNAL_LOC = frozenset({"function-wrap", "function-after", "function-before", "function-plain", "json-or-python",
                           "lax-or-strict", "chain", "default", "nullable", "tagged-union", "union", "call",
                           "arguments", "is-instance", "is-subclass", "callable", "str", "int", "float", "bool",
                           "bytes", "bytearray", "list", "tuple", "dict", "set", "frozenset", "complex", "none",
                           "nonetype"})
_MAX_REPORTED_ERRORS = 10
_MAX_INPUT_CHARS = 200


def _clean_loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if not (set(str(p)) & set("[](){}") or str(p).lower() in _INTERNAL_LOC)]
    return ".".join(parts or [str(p) for p in loc])


def _summarized_input(value: Any) -> Any:
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = value if isinstance(value, str) else str(value)
    return text[:_MAX_INPUT_CHARS] + "...[truncated]" if len(text) > _MAX_INPUT_CHARS else text


def request_validation_error(errors: list[dict]) -> APIError:
    """vLLM's answer to a body pydantic rejects (its ``validation_exception_handler``): 400, type
    "Bad Request", ``param`` the first error's field, and a message that counts the errors and
    prints each (at most 10, the input summarised, the location cleaned)."""
    if not errors:
        return APIError(400, "Validation error", "Bad Request")
    lines = []
    for error in errors[:_MAX_REPORTED_ERRORS]:
        error = dict(error)
        if "input" in error:
            error["input"] = _summarized_input(error["input"])
        error["loc"] = _clean_loc(tuple(error.get("loc", ())))
        lines.append(f"  {error}\n")
    label = "error" if len(errors) == 1 else "errors"
    message = f"{len(errors)} validation {label}:\n" + "".join(lines)
    if len(errors) > _MAX_REPORTED_ERRORS:
        message += f"  ...and {len(errors) - _MAX_REPORTED_ERRORS} more {label}\n"
    return APIError(400, message.rstrip(), "Bad Request", _clean_loc(tuple(errors[0].get("loc", ()))) or None)


def internal_error(message: str) -> APIError:
    return APIError(500, message, "InternalServerError")


def unavailable(message: str) -> APIError:
    return APIError(503, message, "ServiceUnavailableError")


def new_id(kind: Literal["cmpl", "chatcmpl"]) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def now_created() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode("utf-8")
