"""OpenAI's request and response shapes, as vLLM's server reads and writes them.

Requests are pydantic models that accept (and ignore) fields we do not simulate, as vLLM
accepts them; ``temperature`` and ``top_p`` are checked and then ignored; ``stop``,
``stop_token_ids``, ``min_tokens``, ``logprobs`` and ``echo`` are read and checked as vLLM 0.33
checks them: on the raw body, before the fields (the request models' "before" validators), and
once the prompt is read (``verify_args``, vLLM's SamplingParams). Errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` with vLLM's status codes and wording.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WrapValidator, field_validator, model_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


MAX_STOP_STRINGS = 4  # vLLM's VLLM_MAX_STOP_STRINGS default: a longer list fails pydantic's max_length
MAX_N_SEQUENCES = 16384  # vLLM's VLLM_MAX_N_SEQUENCES default: the largest `n`

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
    seed: int | None = None
    temperature: float | None = None  # checked as vLLM checks them, then not simulated
    top_p: float | None = None
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
    def num_logprobs(self) -> int | None:
        """The sample logprobs asked for (vLLM's SamplingParams.logprobs), None for none."""
        return None

    @property
    def num_prompt_logprobs(self) -> int | None:
        """The prompt logprobs asked for (vLLM's SamplingParams.prompt_logprobs), None for none."""
        return self.prompt_logprobs

    def verify_args(self, max_tokens: int) -> None:
        """vLLM's ``SamplingParams.__post_init__`` for one prompt, whose ``max_tokens`` is the
        length ``get_max_tokens`` gave it: ``_verify_args`` in its order, for the parameters the
        emulator reads (the penalties, ``top_k`` and the rest are not checked), then
        ``_verify_greedy_sampling``. vLLM builds these after the prompt is read and its length
        checked (``to_sampling_params`` in its serving code), so they come after those errors."""
        n, t, top_p = self.n, self.temperature, self.top_p
        if n < 1:  # _verify_num_sequences
            raise validation_error(f"n must be at least 1, got {n}.")
        if n > MAX_N_SEQUENCES:
            raise validation_error(f"n must be at most {MAX_N_SEQUENCES}, got {n}. To increase this limit, set "
                                   f"the VLLM_MAX_N_SEQUENCES environment variable.")
        if t is not None:
            if not math.isfinite(t):
                raise validation_error(f"temperature must be a finite number, got {t}.", "temperature", t)
            if t < 0.0:
                raise validation_error(f"temperature must be non-negative, got {t}.", "temperature", t)
            if t > 2.0:
                raise validation_error(f"temperature must be in [0, 2], got {t}.", "temperature", t)
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise validation_error(f"top_p must be in (0, 1], got {top_p}.", "top_p", top_p)
        if max_tokens < 1:
            raise validation_error(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
        if self.min_tokens < 0:
            raise validation_error(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.min_tokens > max_tokens:
            raise validation_error(f"min_tokens must be less than or equal to max_tokens={max_tokens}, "
                                   f"got {self.min_tokens}.")
        if any(not s for s in self.stop_strings):
            raise validation_error("stop cannot contain an empty string.")
        # Greedy sampling makes the same answer n times, so vLLM refuses n > 1 with it. Greedy
        # means a temperature of exactly 0: __post_init__ first raises one in (0, 0.01) to 0.01.
        # A missing temperature is the model's default (generation_config) or 1.0, never 0.
        if t == 0.0 and n > 1:
            raise validation_error(f"n must be 1 when using greedy sampling, got {n}.")


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


def _token_ids_first(value: Any, validate) -> Any:
    """A prompt of token ids (what benchmark clients send) taken as it is: pydantic's union
    would first try it as ``list[str]`` (50 to 90 us for 512 ids, on every request). Anything else,
    and anything but plain ints (bools, floats, strings), goes through the union as before,
    with the same result or the same errors."""
    if type(value) is list and all(type(x) is int for x in value):
        return value
    return validate(value)


COMPLETION_MAX_TOKENS = 16  # vLLM's default for /v1/completions, as OpenAI's


class CompletionRequest(_Base):
    # Optional here so that a missing prompt gets vLLM's own error (``missing_prompt``, raised by
    # ``_vllm_checks``), not pydantic's "Field required": vLLM checks it before the fields.
    prompt: Annotated[str | list[str] | list[int] | list[list[int]] | None, WrapValidator(_token_ids_first)] = None
    max_tokens: int | None = COMPLETION_MAX_TOKENS
    echo: bool | None = False
    logprobs: int | None = None

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    @property
    def num_prompt_logprobs(self) -> int | None:
        # vLLM's CompletionRequest.to_sampling_params: with echo, logprobs asks for prompt logprobs too.
        return self.logprobs if self.prompt_logprobs is None and self.echo else self.prompt_logprobs

    @model_validator(mode="before")
    @classmethod
    def _vllm_checks(cls, data: Any) -> Any:
        """vLLM's CompletionRequest validators that run on the raw body, before the fields are
        read (pydantic runs "before" validators last-defined first): the prompt, then
        ``stream_options``, then ``check_logprobs``. What they raise is a 400 of vLLM's own
        (``VLLMValidationError``), not a pydantic error, so it passes through FastAPI's
        validation to the app's handler (``build_app``)."""
        if isinstance(data, dict):
            prompt = data.get("prompt")
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
