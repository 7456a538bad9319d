"""The serving front end, as vLLM runs it: API-server processes between the clients and the engine.

``vllm serve`` runs the engine core in one process and the OpenAI-compatible API server in
another (or in ``--api-server-count`` N of them; the OS spreads connections across them). An API
server is a single asyncio loop, so its work on one request waits for its work on the others:

1. a request comes in: HTTP parsing and validation (``http_s``), then tokenization of the
   prompt (``tokenize_s_per_token`` per prompt token); then it is handed to the engine core,
   which takes it in at the start of its next step (a step in flight is never changed), or,
   under asynchronous scheduling, of the step after (:meth:`sim.engine.Engine._take_in`);
2. every output token comes back from the engine core at the end of the step that made it and
   is detokenized incrementally and streamed to the client as one server-sent-events chunk
   (``detokenize_s_per_token``).

The client measures its TTFT from sending the request to receiving the first chunk, and its
end-to-end latency to receiving the last one, so both include the front end's time and its
queueing. A closed loop's client may also take a while between having one answer and its next
request reaching the server (its *turnaround*: ``submit(..., delay_s=)``, see
:func:`sim.runner.run_engine`); that time counts in the client's TTFT too, since the client
stamps the request when it decides to send it. The coefficients are fitted end to end with the
engine's per-step CPU time (``servelab calibrate fit --from-aiconfigurator``; see
docs/calibration.md).

How it is simulated. Each API server is a FIFO with a ``busy_until_s`` clock: work that arrives
while it is busy starts when it is free. Requests are handed to the engine by a SimPy timeout
at their hand-off time. Output tokens arrive at step ends and are streamed in one batch per step,
from the step's end or when the server is free, whichever is later;
a client's first and last chunks are stamped when its server has streamed that step's batch
(the latest of the batch: a step's chunks are not ordered). When the engine skips over a run of
identical decode steps (fast forward), the run's tokens were streamed as they were made if the
server kept up, and only the last step's batch is streamed from the run's end (a fluid
approximation of per-token events, which would undo the fast forward).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import simpy


@dataclass(frozen=True, slots=True)
class FrontendCoefficients:
    """Seconds of API-server work. All zero: no front end (the engine alone)."""

    http_s: float = 0.0  # per request: HTTP, request validation, setting up the stream
    tokenize_s_per_token: float = 0.0  # per prompt token
    detokenize_s_per_token: float = 0.0  # per output token: incremental detokenization + one SSE chunk

    def __post_init__(self) -> None:
        for name in ("http_s", "tokenize_s_per_token", "detokenize_s_per_token"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"{name}(={value!r}) must be a number >= 0 (seconds)")

    @property
    def enabled(self) -> bool:
        return bool(self.http_s or self.tokenize_s_per_token or self.detokenize_s_per_token)


@dataclass(slots=True)
class ClientTimes:
    """One request as its client sees it."""

    server: int  # which API-server process serves it
    sent_s: float  # the client sent it (its start stamp)
    handoff_s: float  # the engine core has it (it joins at the next step start)
    reached_s: float = math.nan  # it reached the API server (sent_s plus the client's turnaround)
    first_token_s: float | None = None  # the client has the first chunk
    last_token_s: float | None = None  # the client has the latest chunk so far


class Frontend:
    """``api_server_count`` API-server processes in front of one engine (an engine listener)."""

    def __init__(self, env: simpy.Environment, engine, coefficients: FrontendCoefficients,
                 api_server_count: int = 1) -> None:
        if api_server_count < 1:
            raise ValueError(f"api_server_count(={api_server_count}) must be >= 1")
        self.env, self.engine, self.c = env, engine, coefficients
        self.busy_until_s = [0.0] * api_server_count
        self.clients: dict[str, ClientTimes] = {}
        self._pending: list[float] = []  # hand-off times not yet reached (a heap)
        self._done_pending: list[float] = []  # client completions not yet reached (a heap)
        self._count = 0
        self.on_client_done = None  # called as f(request_id, now_s) when a client has its last chunk
        self._streamed = 0  # output tokens streamed so far
        self._first: list[ClientTimes] = []  # first tokens made in the step being reported
        self._last: list[tuple[str, ClientTimes]] = []  # requests finished in it
        engine.listeners.append(self)

    # -- inbound ---------------------------------------------------------------------------
    def submit(self, prompt_token_ids, max_tokens: int, request_id: str, n: int = 1,
               delay_s: float = 0.0) -> None:
        """A client sends a request now; it reaches the API server ``delay_s`` later (the
        client's own turnaround), and the engine gets it after the API server's work."""
        if delay_s > 0:
            heapq.heappush(self._pending, self.env.now + delay_s)  # the engine gets it no earlier
            self.env.process(self._on_the_way(delay_s, prompt_token_ids, max_tokens, request_id, n))
            return
        self._reach(self.env.now, prompt_token_ids, max_tokens, request_id, n)

    def _on_the_way(self, delay_s: float, prompt_token_ids, max_tokens, request_id, n):
        sent = self.env.now
        yield self.env.timeout(delay_s)
        heapq.heappop(self._pending)
        self._reach(sent, prompt_token_ids, max_tokens, request_id, n)

    def _reach(self, sent_s: float, prompt_token_ids, max_tokens: int, request_id: str, n: int) -> None:
        """The request reaches an API server now (the client stamped it at ``sent_s``)."""
        now = self.env.now
        server = self._count % len(self.busy_until_s)  # connections spread evenly over the processes
        self._count += 1
        start = max(now, self.busy_until_s[server])
        work = self.c.http_s + self.c.tokenize_s_per_token * len(prompt_token_ids)
        handoff = start + work
        self.busy_until_s[server] = handoff
        heapq.heappush(self._pending, handoff)
        ids = [request_id] if n == 1 else [f"{k}_{request_id}" for k in range(n)]
        for rid in ids:
            self.clients[rid] = ClientTimes(server, sent_s, handoff, now)
        self.env.process(self._hand_off(handoff, prompt_token_ids, max_tokens, request_id, n))

    def _hand_off(self, at_s: float, prompt_token_ids, max_tokens, request_id, n):
        if at_s > self.env.now:
            yield self.env.timeout(at_s - self.env.now)
        heapq.heappop(self._pending)
        self.engine.add_request(prompt_token_ids, max_tokens, request_id=request_id, n=n)

    def next_handoff_s(self) -> float:
        """The earliest the engine can get its next request from the front end (inf: none
        known): a request already sent, or one a client sends when it has its last chunk (a
        closed loop). The engine ends a fast-forwarded run there at the latest."""
        t = self._pending[0] if self._pending else math.inf
        if self._done_pending:
            t = min(t, self._done_pending[0])
        return t

    # -- outbound (engine listener) --------------------------------------------------------
    # The engine reports first tokens (on_tokens) and finishes (on_finish) of a step before the
    # step itself (on_step); the step's streaming is priced in on_step, then the clients of the
    # requests that got their first or last token in it are stamped.
    def on_tokens(self, request, num_new_tokens: int, now_s: float) -> None:
        client = self.clients.get(request.request_id)
        if client is not None and client.first_token_s is None:
            self._first.append(client)

    def on_finish(self, request, now_s: float) -> None:
        client = self.clients.get(request.request_id)
        if client is not None:
            self._last.append((request.request_id, client))

    def on_step(self, record) -> None:
        made = self.engine.stats.generation_tokens_total
        tokens, self._streamed = made - self._streamed, made
        servers = len(self.busy_until_s)
        per_token = self.c.detokenize_s_per_token
        # Requests are spread evenly over the servers, and so are their tokens. Tokens of a
        # fast-forwarded run were streamed as they came if the server kept up; the last step's
        # batch is streamed from that step's end at the earliest, one token after another.
        work = per_token * tokens / servers
        last = work / max(record.num_steps, 1)  # the last step's batch: streamed from the step's end
        now = self.env.now
        for s in range(servers):
            self.busy_until_s[s] = max(self.busy_until_s[s] + work - last, now) + last
        for client in self._first:
            client.first_token_s = client.last_token_s = self.busy_until_s[client.server]
        self._first.clear()
        for request_id, client in self._last:
            client.last_token_s = self.busy_until_s[client.server]
            if client.first_token_s is None:
                client.first_token_s = client.last_token_s
            if self.on_client_done is not None:
                heapq.heappush(self._done_pending, client.last_token_s)  # now: the next run must see it
                self.env.process(self._client_done(client.last_token_s, request_id))
        self._last.clear()

    def _client_done(self, at_s: float, request_id: str):
        if at_s > self.env.now:
            yield self.env.timeout(at_s - self.env.now)
        heapq.heappop(self._done_pending)
        self.on_client_done(request_id, self.env.now)
