"""OpenAI's request and response shapes, as vLLM's server reads and writes them.

Requests are pydantic models that accept (and ignore) fields we do not simulate, such as
``temperature`` or ``top_p``, as vLLM accepts them. Errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` with vLLM's status codes and wording.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WrapValidator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extension; `vllm bench serve` sends it
    seed: int | None = None


def _token_ids_first(value: Any, validate) -> Any:
    """A prompt of token ids (what benchmark clients send) taken as it is: pydantic's union
    would first try it as ``list[str]`` (50 to 90 us for 512 ids, on every request). Anything else,
    and anything but plain ints (bools, floats, strings), goes through the union as before,
    with the same result or the same errors."""
    if type(value) is list and all(type(x) is int for x in value):
        return value
    return validate(value)


class CompletionRequest(_Base):
    prompt: Annotated[str | list[str] | list[int] | list[list[int]], WrapValidator(_token_ids_first)]
    max_tokens: int | None = 16  # vLLM's default for /v1/completions, as OpenAI's


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Base):
    messages: list[ChatMessage]
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None


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


def model_not_found(model: str) -> APIError:
    # vLLM's OpenAIServing._check_model: 404, NotFoundError, param "model".
    return APIError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")


def context_too_long(max_model_len: int, prompt_tokens: int, max_tokens: int) -> APIError:
    # vLLM's wording for input + output past max_model_len; the trailing "(parameter=..., value=...)"
    # is how VLLMValidationError prints its parameter.
    total = prompt_tokens + max_tokens
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{max_tokens} output tokens and your prompt contains at least {prompt_tokens} input tokens, "
        f"for a total of at least {total} tokens. Please reduce the length of the input prompt or the "
        f"number of requested output tokens. (parameter=input_tokens, value={prompt_tokens})",
        param="input_tokens",
    )


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
