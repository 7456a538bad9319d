"""The emulator's HTTP routes: vLLM's OpenAI-compatible server in front of the simulated engine.

``EmulatorServer`` holds the state (tokenizer, faults, metrics, the wall-clock runner);
``build_app`` gives the FastAPI application. Routes follow vLLM's ``entrypoints/openai``:
``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``, ``/ping``,
``/load``, ``/version``, ``/metrics``, ``/tokenize``, ``/detokenize``; and ServeLab's own
``/admin/faults``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from lab.server import delivery as D
from lab.server import protocol as P
from lab.server.cache_info import cache_config_labels
from lab.server.faults import FaultSet, parse_fault
from lab.server.generation import ChoicePlan, echoed, plan_choice
from lab.server.logprobs import check_limits
from lab.server.metrics import ServerMetrics
from lab.server.runner import SimRunner
from lab.server.hf_tokenizer import load_tokenizer
from lab.server.tokenizer import Tokenizer
from sim.config import VLLM_VERSION  # the vLLM release whose behaviour the simulator follows
from sim.errors import ConfigError, ServeLabError

log = logging.getLogger("servelab.serve")

INFERENCE_PATHS = ("/v1/completions", "/v1/chat/completions")


@dataclass(frozen=True)
class ServeSettings:
    model: str
    served_model_names: tuple[str, ...]
    max_model_len: int | None = None  # None: the engine's (the model's context, or --max-model-len)
    service: str = "ai-api"
    seed: int = 0
    api_key: str | None = None
    enable_log_requests: bool = False
    judge_metrics: bool = False  # export llm_judge_quality_score for the built-in questions answered
    tokenizer: str | None = None  # a Hugging Face tokenizer folder for prompts (--tokenizer); None: built-in
    lag_threshold_s: float = 0.010  # log a warning when a token leaves later than this (lab/server/lag.py)
    frontend: bool = True  # tokens leave when vLLM's API server would have streamed them (--no-frontend: at step ends)


@dataclass
class _Prompt:
    text: str  # what the question matcher reads
    token_ids: list[int]
    max_tokens: int
    last_word: str | None  # the prompt's last word: a completion's first piece follows it


class EmulatorServer:
    def __init__(self, settings: ServeSettings, build_engine, *, faults: FaultSet | None = None,
                 clock=time.monotonic, frontend=None) -> None:
        self.settings = settings
        self.tokenizer = load_tokenizer(settings.tokenizer)  # prompts, /tokenize, /detokenize
        self.words = Tokenizer()  # the answer's words (one token each)
        self.faults = faults or FaultSet(settings.service)
        self.clock = clock
        # Two seeded streams: one for the runner (crash times), one for per-request draws
        # (error-rate), so adding load never moves the crash times.
        runner_rng, self.request_rng = np.random.default_rng(settings.seed).spawn(2)
        self.frontend = frontend  # sim.frontend.FrontendCoefficients of the simulated API server, or None
        self.runner = SimRunner(build_engine, faults=self.faults, rng=runner_rng, clock=clock, frontend=frontend)
        self.max_model_len = settings.max_model_len or self.runner.engine.limits.max_model_len
        self.metrics = ServerMetrics(model_name=settings.served_model_names[0], service=settings.service,
                                     max_model_len=self.max_model_len,
                                     stats_source=lambda: self.runner.engine.stats,
                                     errors_source=lambda: self.runner.killed_by_crash,
                                     lag_source=lambda: self.runner.max_lag_s,
                                     judge_enabled=settings.judge_metrics,
                                     lag_threshold_s=settings.lag_threshold_s,
                                     cache_config=cache_config_labels(self.runner.engine))
        self.runner.observers.append(self.metrics)
        self.in_flight = 0

    @classmethod
    def from_config(cls, settings: ServeSettings, config, *, faults: FaultSet | None = None) -> "EmulatorServer":
        """A server whose engine is ``sim.engine.Engine`` for ``config`` (an ``EngineConfig``)."""
        from sim.engine import Engine

        def build(env):
            return Engine(env, config, seed=settings.seed, usage="serve")

        frontend = None
        if settings.frontend:  # the API server's time, as `servelab bench serve` prices it
            from sim.calibration import frontend_for
            from sim.catalog import get_gpu, get_model

            frontend = frontend_for(config, get_model(config.model), get_gpu(config.gpu))
        return cls(settings, build, faults=faults, frontend=frontend)

    @property
    def engine(self) -> Any:
        return self.runner.engine

    # -- checks ----------------------------------------------------------------------------------
    def check_model(self, model: str | None) -> None:
        if model and model not in self.settings.served_model_names:  # vLLM: "" means the served model too
            raise P.model_not_found(model, self.settings.served_model_names)

    def check_auth(self, request: Request) -> JSONResponse | None:
        key = self.settings.api_key
        if key is None or request.headers.get("authorization") == f"Bearer {key}":
            return None
        return JSONResponse({"error": "Unauthorized"}, status_code=401)  # vLLM's exact body

    def _prompts_of_completion(self, req: P.CompletionRequest) -> list[_Prompt]:
        raw = req.prompt
        if isinstance(raw, str):
            items: list[str | list[int]] = [raw]
        elif raw and isinstance(raw[0], int):  # validated: a list is all ids, all texts or all id lists
            items = [list(raw)]  # type: ignore[arg-type]
        else:
            items = list(raw)  # type: ignore[arg-type]
        if not items:
            raise P.bad_request("Prompt cannot be empty", param="prompt")
        out = []
        for item in items:
            if isinstance(item, str):
                ids = self.tokenizer.encode(item, add_special_tokens=True)
                text = item
            else:
                ids, text = list(item), self.tokenizer.decode(list(item))
            requested = 1 if req.echo_without_generation else req.max_tokens
            max_tokens = self._max_tokens(len(ids), requested, "max_tokens", counted_from_text=isinstance(item, str))
            out.append(_Prompt(text, ids, max_tokens, self.tokenizer.last_word(text)))
        return out

    def _prompt_of_chat(self, req: P.ChatCompletionRequest, check_length: bool = True) -> _Prompt:
        if not req.messages:
            raise P.bad_request("messages must not be empty", param="messages")
        # A minimal chat template: a role marker before each message and one for the answer.
        ids = list(self.tokenizer.bos_ids)
        last_user = ""
        for m in req.messages:
            content = m.content
            if isinstance(content, list):
                content = " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
            content = content or ""
            ids.extend(self.tokenizer.role_ids(m.role))
            ids.extend(self.tokenizer.encode(content))
            if m.role == "user":
                last_user = content
        ids.extend(self.tokenizer.role_ids("assistant"))
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        if not check_length:  # /tokenize: only the ids
            return _Prompt(last_user, ids, 0, None)
        return _Prompt(last_user, ids, self._max_tokens(len(ids), requested, param, counted_from_text=True), None)

    def _max_tokens(self, prompt_len: int, requested: int | None, param: str, *, counted_from_text: bool) -> int:
        """The output length vLLM 0.33 gives a request, or its error, checked in vLLM's order:

        1. the output alone past ``max_model_len``: an error naming ``param``;
        2. the prompt past ``max_model_len``: an error (vLLM's tokenizer stops a text at
           ``max_model_len + 1`` tokens, so that is the count it reports);
        3. the output clipped to the rest of the context (``get_max_tokens``: a prompt plus
           ``max_tokens`` past the context is no error), or all of it when none was asked.

        A length below one (asked for, or left by a prompt that fills the context) is refused
        later, by ``verify_args``, as vLLM's SamplingParams refuses it."""
        limit = self.max_model_len
        if requested is not None and requested > limit:
            raise P.max_tokens_past_context(param, requested, limit)
        if prompt_len > limit:
            raise P.prompt_too_long(limit, min(prompt_len, limit + 1) if counted_from_text else prompt_len)
        rest = limit - prompt_len
        return rest if requested is None else min(requested, rest)

    def verify_sampling(self, req: P._Base, prompts: list[_Prompt] = ()) -> None:
        """What vLLM's engine input processor checks, run once the prompt is read: first
        SamplingParams.verify, for what the emulator simulates: the logprobs limit (sample, then
        prompt: ``_validate_logprobs``), the stop token ids against the vocabulary
        (``_validate_stop_token_ids``); then the prompts' token ids against the vocabulary
        (``_validate_model_input``, the renderer's ``validate_token_ids``); then
        ``update_from_tokenizer``'s bad words (with the prompt tokenizer); then ServeLab's
        refusal of prompt logprobs, which it does not simulate."""
        vocab_size = self.engine.model.vocab_size
        check_limits(req.num_logprobs, req.num_prompt_logprobs, vocab_size)
        outside = [t for t in req.stop_token_ids or () if t < 0 or t >= vocab_size]
        if outside:
            raise P.validation_error(f"token_id(s) {outside} in stop_token_ids contain out-of-vocab token ids. "
                                     f"Vocabulary size: {vocab_size}", parameter="stop_token_ids", value=outside)
        for p in prompts:  # negative ids were refused with the body (the prompt's type, ge=0)
            highest = max(p.token_ids, default=-1)
            if highest >= vocab_size:
                raise P.validation_error(f"Token id {highest} is out of vocabulary")
        P.verify_bad_words(req.unique_bad_words, lambda text: self.tokenizer.encode(text, add_special_tokens=False))
        if req.num_prompt_logprobs is not None:
            raise P.prompt_logprobs_not_simulated()

    # -- planning and submitting -----------------------------------------------------------------
    def plan(self, prompts: list[_Prompt], n: int, req: P._Base) -> list[ChoicePlan]:
        now = self.runner.now_s()
        wrong = self.faults.wrong_share(now)
        cost = self.faults.product("cost", now)
        echo = isinstance(req, P.CompletionRequest) and bool(req.echo)  # a chat's echo is refused (verify_sampling)
        plans = []
        for p in prompts:
            for i in range(n):
                plan = plan_choice(tokenizer=self.words, prompt=p.text, index=i,
                                   max_tokens=p.max_tokens, seed=self.settings.seed,
                                   # vLLM's SamplingParams takes a seed of -1 for no seed
                                   request_seed=None if req.seed == -1 else req.seed, ignore_eos=req.ignore_eos,
                                   wrong_share=wrong, cost_multiplier=cost, previous=p.last_word,
                                   stop=req.stop_strings, stop_token_ids=req.stop_token_ids or (),
                                   include_stop_str_in_output=req.include_stop_str_in_output,
                                   min_tokens=req.min_tokens)
                if echo:
                    plan = echoed(plan, p.text, prompt_only=req.echo_without_generation)
                plans.append(plan)
        return plans

    def admit(self) -> None:
        """Faults that refuse a request before it reaches the engine."""
        now = self.runner.now_s()
        if not self.runner.alive:
            raise P.unavailable("The engine is restarting after a crash (crash-loop fault).")
        rate = self.faults.error_rate(now)
        if rate > 0 and self.request_rng.random() < rate:
            raise P.internal_error("Injected failure (error-rate fault).")


RECEIVED = "servelab.received"  # scope key: the server's clock when the app was called for the request


class _EmulatorApp(FastAPI):
    """FastAPI that also hands the server's own ASGI ``send`` to the token streams.

    Starlette and FastAPI wrap ``send`` once per middleware layer (server errors, the
    exception handlers, the body limit), each wrapper a coroutine that only notes whether the
    response has started. A stream passes its ``http.response.start`` through that chain, so
    every layer knows, and then writes its body chunks with the server's ``send`` itself
    (``scope[delivery.SERVER_SEND]``): one coroutine call per write instead of four.

    It also times each connection's turnaround, from a response's end to the next request
    (``lab/server/turnaround.py``)."""

    async def __call__(self, scope, receive, send) -> None:
        scope[D.SERVER_SEND] = send
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        server = self.state.server
        connection = scope.get("client")  # (host, port): one kept-alive connection
        # When the server began on this request, before its body and validation.
        scope[RECEIVED] = received = server.clock()
        server.metrics.turnaround.request_started(connection, received)
        try:
            await super().__call__(scope, receive, send)
        finally:  # the response's last byte has been handed to the connection
            server.metrics.turnaround.response_ended(connection, server.clock())


def build_app(server: EmulatorServer) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # As vLLM's engine core does after start-up (freeze_gc_heap): move everything built so
        # far (the model tables, the engine, the app) out of the garbage collector's
        # generations, so that a collection under load walks only what requests create.
        gc.collect()
        gc.freeze()
        await server.runner.start()
        try:
            yield
        finally:
            await server.runner.stop()
            for line in server.metrics.summary():
                log.info("%s", line)

    app = _EmulatorApp(title="ServeLab emulator (vLLM-compatible)", version=VLLM_VERSION, lifespan=lifespan)
    app.state.server = server
    s = server.settings

    def refused_while_read(request: Request, error: P.APIError) -> Response:
        # vLLM's API key check is a middleware: a request without the key gets its 401 before
        # the body is read, so before any of the body's errors.
        if (denied := server.check_auth(request)) is not None:
            return denied
        if request.url.path in INFERENCE_PATHS:
            server.metrics.observe_http(error.status, 0.0)
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        # vLLM answers a body that is not valid JSON, or misses a required field, with 400
        # (FastAPI's default would be 422), type "Bad Request", the pydantic errors as message.
        return refused_while_read(request, P.request_validation_error(exc.errors()))

    @app.exception_handler(P.APIError)
    async def vllm_validation_error(request: Request, exc: P.APIError):
        # vLLM's request models raise VLLMValidationError from their "before" validators
        # (protocol.py, ``_vllm_checks``): not a pydantic error, it passes through FastAPI's body
        # validation to vLLM's VLLMError handler, which answers it as vLLM's own 400.
        return refused_while_read(request, exc)

    # -- probes and info ----------------------------------------------------------------------
    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if server.runner.alive else 503)

    @app.api_route("/ping", methods=["GET", "POST"])
    async def ping() -> Response:
        return Response(status_code=200 if server.runner.alive else 503)

    @app.get("/version")
    async def version() -> dict:
        return {"version": VLLM_VERSION}

    @app.get("/load")
    async def load() -> dict:
        return {"server_load": server.in_flight}

    @app.get("/metrics")
    async def metrics() -> Response:
        server.runner.advance()
        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        if (denied := server.check_auth(request)) is not None:
            return denied
        created = P.now_created()
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": s.model,
             "parent": None, "max_model_len": server.max_model_len,
             "permission": [{"id": f"modelperm-{name}", "object": "model_permission", "created": created,
                             "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                             "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                             "organization": "*", "group": None, "is_blocking": False}]}
            for name in s.served_model_names
        ]
        return {"object": "list", "data": data}

    # -- faults -------------------------------------------------------------------------------
    @app.get("/admin/faults")
    async def get_faults(request: Request):
        if (denied := server.check_auth(request)) is not None:
            return denied
        return _faults_body(server)

    @app.post("/admin/faults")
    async def post_faults(request: Request):
        if (denied := server.check_auth(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return P.bad_request('expected a JSON body such as {"spec": "error-rate=0.05"}').response()
        specs = body.get("specs") if isinstance(body, dict) else None
        if specs is None and isinstance(body, dict) and "spec" in body:
            specs = [body["spec"]]
        if not isinstance(specs, list) or not all(isinstance(x, str) for x in specs):
            return P.bad_request('expected {"spec": "KIND=VALUE[@START[-END]]"} or {"specs": [...]}',
                                 param="spec").response()
        try:
            parsed = [parse_fault(x, where="POST /admin/faults") for x in specs]
        except ServeLabError as exc:
            return P.bad_request(str(exc), param="spec").response()
        skipped = [f.spec for f in parsed if not server.faults.add(f)]
        for f in parsed:
            log.warning("fault %s: %s", "skipped (aimed at the other version)" if f.spec in skipped else "added",
                        f.spec)
        body = _faults_body(server)
        body["skipped"] = skipped
        return body

    @app.delete("/admin/faults")
    async def delete_faults(request: Request):
        if (denied := server.check_auth(request)) is not None:
            return denied
        server.faults.clear()
        server.runner.release_leak()
        server.runner.down_until_s = float("-inf")
        return _faults_body(server)

    # -- tokenizer ----------------------------------------------------------------------------
    @app.post("/tokenize")
    async def tokenize(body: P.TokenizeRequest, request: Request):
        """vLLM's /tokenize: a completion prompt, or chat messages through the chat template."""
        if (denied := server.check_auth(request)) is not None:
            return denied
        try:
            server.check_model(body.model)
            if body.prompt is not None:
                ids = server.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
            elif body.messages is not None:
                chat = P.ChatCompletionRequest(model=body.model, messages=body.messages)
                ids = server._prompt_of_chat(chat, check_length=False).token_ids
            else:
                raise P.bad_request("expected 'prompt' (a string) or 'messages'", param="prompt")
        except P.APIError as exc:
            return exc.response()
        strs = server.tokenizer.token_strs(ids) if body.return_token_strs else None
        return {"count": len(ids), "max_model_len": server.max_model_len, "tokens": ids, "token_strs": strs}

    @app.post("/detokenize")
    async def detokenize(body: P.DetokenizeRequest, request: Request):
        if (denied := server.check_auth(request)) is not None:
            return denied
        try:
            server.check_model(body.model)
        except P.APIError as exc:
            return exc.response()
        return {"prompt": server.tokenizer.decode(body.tokens)}

    # -- inference ----------------------------------------------------------------------------
    @app.post("/v1/completions")
    async def completions(body: P.CompletionRequest, request: Request):
        return await _generate(server, request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: P.ChatCompletionRequest, request: Request):
        return await _generate(server, request, body, chat=True)

    return app


def _faults_body(server: EmulatorServer) -> dict:
    r = server.runner
    return {"faults": server.faults.describe(), "service": server.settings.service, "now_s": r.now_s(),
            "alive": r.alive, "crashes": r.crashes, "leaked_blocks": len(r.leaked_blocks)}


async def _generate(server: EmulatorServer, request: Request, body: P._Base, *, chat: bool):
    started = server.clock()
    if (denied := server.check_auth(request)) is not None:
        return denied
    try:
        # In vLLM 0.33's order: the request model's own checks ran while the body was read
        # (protocol.py, ``_vllm_checks``); then the model, every prompt's length, each prompt's
        # sampling parameters (SamplingParams, built with the length that prompt leaves), and
        # what the engine's input processor checks (``verify_sampling``).
        server.check_model(body.model)
        prompts = [server._prompt_of_chat(body)] if chat else server._prompts_of_completion(body)  # type: ignore[arg-type]
        for p in prompts:
            body.verify_args(p.max_tokens)
        server.verify_sampling(body, prompts)
        server.admit()
    except P.APIError as exc:
        server.metrics.observe_http(exc.status, server.clock() - started)
        return exc.response()

    plans = server.plan(prompts, body.n, body)
    multiplier = server.faults.product("latency", server.runner.now_s())
    model = body.model or server.settings.served_model_names[0]
    request_id = P.new_id("chatcmpl" if chat else "cmpl")
    items = [(prompts[i // body.n].token_ids, plan.max_tokens) for i, plan in enumerate(plans)]
    prompt_tokens = sum(len(p.token_ids) for p in prompts)
    try:
        received = request.scope.get(RECEIVED)
        handle = server.runner.submit(items, request_id, latency_multiplier=multiplier, prompt_tokens=prompt_tokens,
                                      received_s=None if received is None else received - server.runner.t0,
                                      n=body.n, max_tokens_params=[prompts[i // body.n].max_tokens
                                                                   for i in range(len(plans))],
                                      finish_reasons=[plan.finish_reason for plan in plans])
    except ConfigError as exc:  # e.g. a request whose prompt and output can never fit the KV cache
        error = P.bad_request(str(exc), param="max_tokens")
        server.metrics.observe_http(error.status, server.clock() - started)
        return error.response()
    if server.settings.enable_log_requests:
        log.info("Received request %s: prompt_tokens=%d, n=%d, max_tokens=%s", request_id, prompt_tokens,
                 body.n, [p.max_tokens for p in prompts])
    server.in_flight += 1
    builder = D.ResponseBuilder(plans, prompts, body.n, chat, request_id, model, prompt_tokens,
                                num_logprobs=body.num_logprobs)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        cleanup = D.cleanup_once(server, handle, started)
        return D.TokenStream(server, handle, plans, builder, include_usage, cleanup)
    return await D.complete(server, request, handle, plans, builder, started)


def log_startup(server: EmulatorServer, host: str, port: int) -> None:
    """vLLM's start-up lines: the memory plan's KV-cache size, then the server address."""
    engine = server.engine
    log.info("vLLM API server version %s (ServeLab emulator: the engine is simulated, no GPU is used)",
             VLLM_VERSION)
    for line in engine.memory.loading_log_lines() + engine.memory.startup_log_lines():
        log.info("%s", line)
    log.info("ServeLab step time: %s", engine.step_model.source)
    fe = server.frontend
    log.info("ServeLab front end: %s", (
        f"one simulated API server: a request reaches the engine after {fe.http_s * 1e3:.2f} ms + "
        f"{fe.tokenize_s_per_token * 1e6:.2f} us a prompt token of its work, and tokens leave as it streams "
        f"them, {fe.detokenize_s_per_token * 1e6:.2f} us a token" if fe is not None and fe.enabled
        else "requests reach the engine at once and tokens leave at the end of their step (no API-server time)"))
    for fault in server.faults.describe():
        log.info("Fault in force: %s", fault["spec"])
    log.info("Starting vLLM API server 0 on http://%s:%d", host, port)
