"""Delivering a request's tokens: when each leaves (the wall clock), and in which shape.

``events`` turns the engine's listener events for one HTTP request into tokens released at
their due wall time; ``stream`` writes them as server-sent events and ``complete`` waits for
the whole answer. Both abort the engine requests of a client that goes away, which frees
their KV blocks at once, as vLLM's server does. ``server`` is the ``EmulatorServer``.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lab.server import protocol as P
from lab.server.generation import ChoicePlan
from lab.server.runner import Handle
from lab.server.tokenizer import piece


async def events(server, handle: Handle, plans: list[ChoicePlan], multiplier: float) -> AsyncIterator[tuple]:
    """The engine's events for a request, each released when it is due on the wall clock.

    ("token", index, k) for the k-th token of choice ``index``, ("finish", index, reason),
    ("error", index, message). The latency fault stretches each token's delay since arrival.
    """
    remaining = len(plans)
    produced = [0] * len(plans)
    while remaining:
        kind, index, payload = await handle.queue.get()
        if kind == "tokens":
            for t_s in payload:
                due = server.runner.wall_of(handle.arrival_s + multiplier * (t_s - handle.arrival_s))
                delay = due - server.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if produced[index] < len(plans[index].words):
                    yield ("token", index, produced[index])
                produced[index] += 1
        elif kind == "finish":
            remaining -= 1
            if getattr(payload, "name", "") == "FINISHED_ABORTED":
                yield ("error", index, "The request was aborted by the engine.")
            else:
                yield ("finish", index, plans[index].finish_reason)
        else:
            remaining -= 1
            yield ("error", index, payload)


class AbortOnCloseStream(StreamingResponse):
    """Runs ``cleanup`` however the response ends (finished, client gone, never started), so
    that the engine requests of a client that went away are aborted at once, not at GC time."""

    def __init__(self, content, cleanup, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]
            self._cleanup(None)


async def disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ResponseBuilder:
    """Builds the response objects and chunks, in vLLM's shapes."""

    def __init__(self, plans, prompts, n, chat, request_id, model, prompt_tokens) -> None:
        self.plans, self.prompts, self.n, self.chat = plans, prompts, n, chat
        self.id, self.model, self.prompt_tokens = request_id, model, prompt_tokens
        self.created = P.now_created()
        self.emitted = [0] * len(plans)

    def piece(self, index: int, k: int) -> str:
        words = self.plans[index].words
        if k > 0:
            previous = words[k - 1]
        else:  # a chat answer starts fresh; a completion continues its prompt
            previous = None if self.chat else self.prompts[index // self.n].last_word
        self.emitted[index] = k + 1
        return piece(words[k], previous)

    def text(self, index: int) -> str:
        return "".join(self.piece(index, k) for k in range(len(self.plans[index].words)))

    def completion_tokens(self) -> int:
        return sum(self.emitted)

    def chunk(self, index: int, text: str | None, finish: str | None, role: bool = False) -> dict:
        if self.chat:
            delta: dict = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            if finish is not None:
                choice["stop_reason"] = None
            return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [choice]}
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish,
                  "stop_reason": None}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [choice]}

    def record_answer(self, server) -> None:
        judged = [plan.correct for plan in self.plans if plan.correct is not None]
        server.metrics.observe_answer(self.prompt_tokens, self.completion_tokens(), judged)

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
                                "logprobs": None, "finish_reason": finish[i], "stop_reason": None})
            else:
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish[i],
                                "stop_reason": None, "prompt_logprobs": None})
        body = {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": choices,
                "usage": P.usage(self.prompt_tokens, self.completion_tokens()),
                "system_fingerprint": None, "service_tier": None, "kv_transfer_params": None}
        if self.chat:
            body["prompt_logprobs"] = None
        return body


async def complete(server, request, handle, plans, multiplier, builder, started):
    finish: list[str | None] = [None] * len(plans)
    errors: list[str] = []

    async def collect() -> None:
        async for kind, index, payload in events(server, handle, plans, multiplier):
            if kind == "finish":
                finish[index] = payload
            elif kind == "error":
                errors.append(payload)

    work = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(disconnected(request))
    status = 200
    try:
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:  # the client went away: vLLM's with_cancellation aborts the request
            work.cancel()
            status = 499  # nginx's "client closed request"; nobody reads it but the metrics
            return Response(status_code=499)
        work.result()
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


async def stream(server, handle, plans, multiplier, builder: ResponseBuilder, include_usage, cleanup):
    status = 200
    try:
        if builder.chat:
            for i in range(len(plans)):
                yield P.sse(builder.chunk(i, None, None, role=True))
        async for kind, index, payload in events(server, handle, plans, multiplier):
            if kind == "token":
                last = payload == len(plans[index].words) - 1
                finish = plans[index].finish_reason if last else None
                yield P.sse(builder.chunk(index, builder.piece(index, payload), finish))
            elif kind == "error":
                status = 500
                yield P.sse(P.internal_error(payload).body())
                break
        if status == 200:
            builder.record_answer(server)
            if include_usage:
                yield P.sse(builder.usage_chunk())
        yield P.sse("[DONE]")
    except (asyncio.CancelledError, GeneratorExit):
        status = 499  # the client went away (nginx's "client closed request")
        raise
    finally:
        cleanup(status)
