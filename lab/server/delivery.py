"""Delivering a request's tokens: in which shape, and written when the runner releases them.

The runner (``runner.py``) releases each token to the request's :class:`Handle` at its due
wall time. One writer per HTTP request takes everything released since it last ran and sends
it in one write: :class:`TokenStream` as server-sent events, :func:`complete` as one JSON body.
Both record each token's lag behind its due time (``lag.py``) and abort the engine requests of
a client that goes away, which frees their KV blocks at once, as vLLM's server does.
``server`` is the ``EmulatorServer``.

A streamed token's chunk is two constant byte strings around the token's JSON-escaped text
(:meth:`ResponseBuilder.token_chunk`), built once per choice from the same dict
:meth:`ResponseBuilder.chunk` gives, so the bytes are those ``json.dumps`` would write.
"""

from __future__ import annotations

import asyncio
import functools
import json

from fastapi.responses import JSONResponse, Response

from lab.server import protocol as P
from lab.server.generation import ChoicePlan
from lab.server.logprobs import chat_shape, completion_shape, text_offsets, token_logprobs
from lab.server.runner import Handle

SERVER_SEND = "servelab.server_send"  # scope key: the ASGI server's own send (app.py's _EmulatorApp)
_TEXT_MARK = "\x00servelab-text\x00"  # stands for a token's text while a chunk template is cut


@functools.lru_cache(maxsize=8192)
def _json_str(text: str) -> bytes:
    return json.dumps(text).encode("utf-8")


async def _until_disconnect(receive, handle: Handle) -> None:
    """Wait for the client to go away, then wake the writer (which sees ``handle.gone``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            handle.gone = True
            handle.wake()
            return


class ResponseBuilder:
    """Builds the response objects and chunks, in vLLM's shapes.

    The text of each token is its plan's ``pieces`` (``generation.py``): what vLLM's server
    sends for it, stop strings cut and held back, an echoed prompt in front. With
    ``num_logprobs`` (a completion's ``logprobs``, a chat's ``top_logprobs`` when ``logprobs``
    is true), each token carries its entry from ``logprobs.py``."""

    def __init__(self, plans, prompts, n, chat, request_id, model, prompt_tokens,
                 num_logprobs: int | None = None) -> None:
        self.plans, self.prompts, self.n, self.chat = plans, prompts, n, chat
        self.id, self.model, self.prompt_tokens = request_id, model, prompt_tokens
        self.created = P.now_created()
        self.emitted = [0] * len(plans)
        self._templates: dict[int, tuple[bytes, bytes]] = {}
        self.num_logprobs = num_logprobs
        self._logprobs = None if num_logprobs is None else [token_logprobs(plan, num_logprobs) for plan in plans]
        self._offsets: list[list[int]] = []  # each token's text_offset, for a completion's logprobs
        if self._logprobs is not None and not chat:
            self._offsets = [text_offsets(entries) for entries in self._logprobs]

    def piece(self, index: int, k: int) -> str:
        self.emitted[index] = k + 1
        return self.plans[index].pieces[k]

    def token_logprobs(self, index: int, k: int) -> dict | None:
        """The logprobs of the k-th token of choice ``index`` alone, as a stream chunk carries them."""
        if self._logprobs is None:
            return None
        entries = self._logprobs[index][k:k + 1]
        if self.chat:
            return chat_shape(entries, self.num_logprobs)
        return completion_shape(entries, self._offsets[index][k])

    def choice_logprobs(self, index: int) -> dict | None:
        if self._logprobs is None:
            return None
        entries = self._logprobs[index]
        return chat_shape(entries, self.num_logprobs) if self.chat else completion_shape(entries)

    def token_chunk(self, index: int, k: int) -> bytes:
        """The SSE event for the k-th token of choice ``index``: the same bytes as
        ``P.sse(self.chunk(index, piece, finish))``, from a template when nothing but the text
        changes (every token but a choice's last, which carries the finish reason, unless the
        tokens carry logprobs)."""
        text = self.piece(index, k)
        plan = self.plans[index]
        if k == len(plan.words) - 1:
            return P.sse(self.chunk(index, text, plan.finish_reason, stop_reason=plan.stop_reason,
                                    logprobs=self.token_logprobs(index, k)))
        if self._logprobs is not None:
            return P.sse(self.chunk(index, text, None, logprobs=self.token_logprobs(index, k)))
        template = self._templates.get(index)
        if template is None:
            cut = P.sse(self.chunk(index, _TEXT_MARK, None)).split(_json_str(_TEXT_MARK))
            template = self._templates[index] = (cut[0], cut[1])
        return template[0] + _json_str(text) + template[1]

    def text(self, index: int) -> str:
        return "".join(self.piece(index, k) for k in range(len(self.plans[index].words)))

    def completion_tokens(self) -> int:
        return sum(self.emitted)

    def chunk(self, index: int, text: str | None, finish: str | None, role: bool = False,
              stop_reason: str | int | None = None, logprobs: dict | None = None) -> dict:
        if self.chat:
            # vLLM sends a token's chunk with its text even when that is "" (a stop string held back).
            if role:
                delta: dict = {"role": "assistant", "content": ""}
            else:
                delta = {"content": text} if text is not None else {}
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            if finish is not None:
                choice["stop_reason"] = stop_reason
            return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [choice]}
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish,
                  "stop_reason": stop_reason}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [choice]}

    def record_answer(self, server) -> None:
        judged = [plan.correct for plan in self.plans if plan.correct is not None]
        price = server.faults.product("price", server.runner.now_s())
        server.metrics.observe_answer(self.prompt_tokens, self.completion_tokens(), judged, price)

    def usage_chunk(self) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [],
                "usage": P.usage(self.prompt_tokens, self.completion_tokens())}

    def full(self, finish: list[str | None]) -> dict:
        choices = []
        for i, plan in enumerate(self.plans):
            text = self.text(i)
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None,
                                                        "annotations": None, "audio": None, "function_call": None,
                                                        "tool_calls": [], "reasoning_content": None},
                                "logprobs": self.choice_logprobs(i), "finish_reason": finish[i],
                                "stop_reason": plan.stop_reason})
            else:
                choices.append({"index": i, "text": text, "logprobs": self.choice_logprobs(i),
                                "finish_reason": finish[i], "stop_reason": plan.stop_reason, "prompt_logprobs": None})
        body = {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices,
                "usage": P.usage(self.prompt_tokens, self.completion_tokens()),
                "system_fingerprint": None, "service_tier": None, "kv_transfer_params": None}
        if self.chat:
            body["prompt_logprobs"] = None
        return body


async def complete(server, request, handle: Handle, plans: list[ChoicePlan], builder: ResponseBuilder, started):
    """Wait for every choice to finish, then answer in one JSON body (or an error)."""
    finish: list[str | None] = [None] * len(plans)
    errors: list[str] = []
    gone = asyncio.ensure_future(_until_disconnect(request.receive, handle))
    status = 200
    runner, lag = server.runner, server.metrics.lag
    try:
        remaining = len(plans)
        while remaining and not handle.gone:
            events = await handle.take()
            now_s = runner.now_s()
            for kind, index, payload, due_s in events:
                if kind == "token":
                    lag.observe(now_s - due_s, now_s)
                elif kind == "finish":
                    remaining -= 1
                    if getattr(payload, "name", "") == "FINISHED_ABORTED":
                        errors.append("The request was aborted by the engine.")
                    finish[index] = plans[index].finish_reason
                else:
                    remaining -= 1
                    errors.append(payload)
        if handle.gone:  # the client went away: vLLM's with_cancellation aborts the request
            status = 499  # nginx's "client closed request"; nobody reads it but the metrics
            return Response(status_code=499)
        if errors:
            status = 500
            return P.internal_error(errors[0]).response()
        body = builder.full(finish)
        builder.record_answer(server)
        return JSONResponse(body)
    finally:
        gone.cancel()
        server.runner.abort(handle)
        server.in_flight -= 1
        server.metrics.observe_http(status, server.clock() - started)


def cleanup_once(server, handle: Handle, started: float):
    """Abort what is left of the request and record it, once, with the first status given."""
    done = False

    def cleanup(status: int | None) -> None:
        nonlocal done
        if done:
            return
        done = True
        server.runner.abort(handle)
        server.in_flight -= 1
        server.metrics.observe_http(status or 499, server.clock() - started)

    return cleanup


class TokenStream(Response):
    """A streamed answer: one write per batch of released tokens, ``[DONE]`` at the end.

    The writer sleeps in ``handle.take()`` until the runner releases tokens, then formats and
    sends all of them at once. A client that goes away wakes it (``handle.gone``); the engine
    requests are then aborted. ``cleanup`` runs however the response ends."""

    media_type = "text/event-stream"

    def __init__(self, server, handle: Handle, plans: list[ChoicePlan], builder: ResponseBuilder,
                 include_usage: bool, cleanup) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(None)
        self.server, self.handle, self.plans, self.builder = server, handle, plans, builder
        self.include_usage = include_usage
        self.cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        # The writing runs in a task of its own. The request's task sits under a dozen
        # coroutine frames (uvicorn, the middleware, the router), and every resumption walks all
        # of them; the writer is resumed once per batch, so it gets a stack of one frame.
        gone = asyncio.ensure_future(_until_disconnect(receive, self.handle))
        writer = asyncio.ensure_future(self._write(send, scope.get(SERVER_SEND, send)))
        status = 499
        try:
            status = await writer
        except (asyncio.CancelledError, OSError):
            status = 499
            raise
        finally:
            writer.cancel()
            gone.cancel()
            self.cleanup(status)

    async def _write(self, send, send_body) -> int:
        """Send the stream; the HTTP status it ended with (499: the client went away). The
        response start goes through ``send`` (every middleware's), the body chunks through
        ``send_body`` (the server's own, past the middleware: see app.py's ``_EmulatorApp``)."""
        handle, builder, plans = self.handle, self.builder, self.plans
        runner, lag = self.server.runner, self.server.metrics.lag
        status = 200
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        parts: list[bytes] = []
        if builder.chat:
            parts = [P.sse(builder.chunk(i, None, None, role=True)) for i in range(len(plans))]
        produced = [0] * len(plans)
        remaining = len(plans)
        while remaining and status == 200:
            if parts:
                await send_body({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
                parts = []
            events = await handle.take()
            if handle.gone:
                return 499  # the client went away (nginx's "client closed request")
            now_s = runner.now_s()
            for kind, index, payload, due_s in events:
                if kind == "token":
                    k = produced[index]
                    produced[index] = k + 1
                    if k < len(plans[index].words):
                        parts.append(builder.token_chunk(index, k))
                    lag.observe(now_s - due_s, now_s)
                elif kind == "finish" and getattr(payload, "name", "") != "FINISHED_ABORTED":
                    remaining -= 1
                else:
                    message = payload if kind == "error" else "The request was aborted by the engine."
                    parts.append(P.sse(P.internal_error(message).body()))
                    status = 500
                    break
        if status == 200:
            builder.record_answer(self.server)
            if self.include_usage:
                parts.append(P.sse(builder.usage_chunk()))
        parts.append(P.sse("[DONE]"))
        await send_body({"type": "http.response.body", "body": b"".join(parts), "more_body": False})
        return status
