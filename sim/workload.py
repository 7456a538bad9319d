"""Workloads: which requests arrive when, with how many prompt and output tokens.

A :class:`WorkloadSpec` is spelled with ``vllm bench`` flags (``--dataset-name``,
``--random-input-len``, ``--request-rate``, ``--burstiness``, ``--n`` ...);
:func:`build_workload` turns it, with a seeded ``numpy.random.Generator``, into a
:class:`Workload`: numpy arrays in request order.

Datasets (``dataset_name``):

* ``random``: vLLM's ``RandomDataset``. Lengths are uniform integers in
  ``[floor(len x (1 - r)), ceil(len x (1 + r))]``, ``r = --random-range-ratio`` in [0, 1), the
  output's lower bound at least 1 (vLLM 0.33 ``benchmarks/datasets.py``). vLLM subtracts the
  tokenizer's special tokens from the input length; we have no tokenizer and subtract none.
  The prompts are built as vLLM builds them: request ``i`` is a run of consecutive token ids,
  ``(offset_i + i + 0, 1, 2, ...) mod V``, from a uniform random ``offset_i``, over the ``V``
  ids of the tokenizer's vocabulary (less its special tokens). Two requests whose runs start
  at the same id send the same prompt, so the second hits the prefix cache: about
  ``N^2 / 2V`` of ``N`` prompts (4 of 1,000 with Llama 3's 128k vocabulary; 213 of 1,000 with
  a 2,000-token tokenizer). ``vocab_size`` sets ``V`` (``servelab bench serve --tokenizer
  DIR``); by default the model's. ``prompt_ids="independent"`` draws every id independently
  instead (no prompt repeats), for harnesses that are not vLLM's client.
  ``bench throughput``'s ``--input-len``/``--output-len`` are the same dataset (set
  ``random_input_len``/``random_output_len``, ratio 0 for fixed lengths).
* ``sharegpt``, ``sharegpt-vllm``, ``alpaca``: synthetic stand-ins for the real datasets (which
  we do not ship): independent log-normal prompt and output lengths, rounded, then filtered as
  vLLM's ShareGPT sampler does (both at least 4 tokens, prompt at most 1024, prompt + output
  at most 2048, or ``max_model_len`` if smaller), with rejected draws replaced. The log-normal
  locations are set so that the filtered means match the published ones (table below); the
  spreads are our choice (ShareGPT is long-tailed, Alpaca narrow). Real ShareGPT prompt and
  output lengths are weakly correlated; ours are independent.
* ``trace``: replay of a CSV with the columns ``arrived_at`` (s), ``num_prefill_tokens`` and
  ``num_decode_tokens``, the format of Vidur's processed Azure traces (two ship with ServeLab:
  ``dataset_path="azure-conv"`` or ``"azure-code"``). ``trace_time_scale`` multiplies the
  arrival times (0.5 replays twice as fast).

Shared system prompt: ``prefix_len`` tokens, identical within a group, on a fraction
``prefix_fraction`` of requests (vLLM's ``--random-prefix-len`` is ``prefix_len`` with fraction
1). For synthetic datasets the prefix is prepended to the sampled prompt, as vLLM does; for a
trace, whose prompt lengths are facts, it is the first ``min(prefix_len, prompt_len - 1)``
tokens of the prompt.

Arrivals follow vLLM's ``get_request``: ``request_rate = inf`` sends all at t = 0; otherwise
gaps are Gamma(shape = burstiness, mean = 1/rate) (burstiness 1: Poisson), accumulated and then
rescaled so that the last request arrives at ``num_prompts / request_rate``;
``burstiness = inf`` gives constant gaps of ``1/rate``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from sim.errors import ConfigError

DATASETS = ("random", "sharegpt", "sharegpt-vllm", "alpaca", "trace")
SHIPPED_TRACES = {"azure-conv": "splitwise_conv.csv", "azure-code": "splitwise_code.csv"}
TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
DEFAULT_NUM_PROMPTS = 1000  # vLLM's --num-prompts default
MIN_RATE, MIN_BURSTINESS = 1e-6, 1e-3
TOKEN_CHUNK = 1024  # requests whose own prompt tokens are drawn together


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """Log-normal prompt and output lengths, filtered as vLLM's ShareGPT sampler."""

    mu_in: float
    sigma_in: float
    mu_out: float
    sigma_out: float
    target_mean_in: float
    target_mean_out: float
    source: str


# mu fitted (fixed-point iteration on 400,000 draws) so the filtered means hit the targets.
LENGTH_DISTRIBUTIONS = {
    "sharegpt": LengthDistribution(4.6007, 1.2, 5.4537, 1.0, 161.31, 337.99,
                                   "vLLM paper, Fig. 11 legend (ShareGPT, filtered for OPT's 2048 context)"),
    "sharegpt-vllm": LengthDistribution(4.9402, 1.1, 4.7212, 1.0, 202.0, 179.0,
                                        "vLLM blog 2024-09-05: 500 ShareGPT prompts as vLLM's benchmark samples them"),
    "alpaca": LengthDistribution(2.7753, 0.6, 3.7462, 0.8, 19.31, 58.45, "vLLM paper, Fig. 11 legend (Alpaca)"),
}
SHAREGPT_MIN_LEN, SHAREGPT_MAX_PROMPT, SHAREGPT_MAX_TOTAL = 4, 1024, 2048


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What to send, spelled like ``vllm bench`` (field = flag without dashes)."""

    dataset_name: str = "random"
    num_prompts: int | None = None  # None: 1000, or every row of a trace
    random_input_len: int = 1024
    random_output_len: int = 128
    random_range_ratio: float = 0.0
    sharegpt_output_len: int | None = None  # fixes every output length, as vLLM's flag
    dataset_path: str | None = None  # trace CSV, or "azure-conv" / "azure-code"
    trace_time_scale: float = 1.0
    prefix_len: int = 0
    prefix_fraction: float = 1.0
    num_prefix_groups: int = 1
    request_rate: float = math.inf
    burstiness: float = 1.0
    n: int = 1
    max_model_len: int | None = None  # tightens the ShareGPT filter
    name: str = ""
    # How prompt ids are drawn: "vllm" (runs of consecutive ids, vLLM's RandomDataset; the
    # random dataset's default) or "independent" (every id on its own; the other datasets').
    prompt_ids: str | None = None
    vocab_size: int | None = None  # ids prompts are drawn from (a tokenizer's); None: the model's

    def __post_init__(self) -> None:
        if self.dataset_name not in DATASETS:
            raise ConfigError(f"--dataset-name: expected one of {', '.join(DATASETS)}, got {self.dataset_name!r}")
        _positive_int("--num-prompts", self.num_prompts, optional=True)
        _positive_int("--random-input-len", self.random_input_len)
        _positive_int("--random-output-len", self.random_output_len)
        _positive_int("--sharegpt-output-len", self.sharegpt_output_len, optional=True)
        _positive_int("--n", self.n)
        _positive_int("--num-prefix-groups", self.num_prefix_groups)
        _positive_int("--max-model-len", self.max_model_len, optional=True)
        _positive_int("--tokenizer (its vocabulary size)", self.vocab_size, optional=True)
        if self.prompt_ids not in (None, "vllm", "independent"):
            raise ConfigError(f"prompt_ids: expected 'vllm' or 'independent', got {self.prompt_ids!r}")
        if not isinstance(self.prefix_len, int) or isinstance(self.prefix_len, bool) or self.prefix_len < 0:
            raise ConfigError(f"--prefix-len: expected 0 or a positive integer, got {self.prefix_len!r}")
        if not _number(self.random_range_ratio) or not 0.0 <= self.random_range_ratio < 1.0:
            raise ConfigError(f"--random-range-ratio: must be in [0, 1), got {self.random_range_ratio!r}")
        if not _number(self.prefix_fraction) or not 0.0 <= self.prefix_fraction <= 1.0:
            raise ConfigError(f"--prefix-fraction: expected a fraction in [0, 1], got {self.prefix_fraction!r}")
        # vLLM takes any positive float; we bound them away from 0 so gaps stay finite numbers.
        if not _number(self.request_rate) or math.isnan(self.request_rate) or self.request_rate < MIN_RATE:
            raise ConfigError(f"--request-rate: expected requests per second >= {MIN_RATE:g}, or inf, got {self.request_rate!r}")
        if not _number(self.burstiness) or math.isnan(self.burstiness) or self.burstiness < MIN_BURSTINESS:
            raise ConfigError(f"--burstiness: expected a number >= {MIN_BURSTINESS:g} (1 = Poisson, inf = constant), got {self.burstiness!r}")
        if not _number(self.trace_time_scale) or not 0 < self.trace_time_scale < math.inf:
            raise ConfigError(f"--trace-time-scale: expected a positive number, got {self.trace_time_scale!r}")
        if self.dataset_name == "trace":
            if not self.dataset_path:
                raise ConfigError("--dataset-path: the trace dataset needs a CSV path (or azure-conv, azure-code)")
            if self.request_rate != math.inf:
                raise ConfigError("--request-rate: a trace brings its own arrival times; "
                                  "leave --request-rate unset and use --trace-time-scale to speed it up")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _positive_int(flag: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")


@dataclass(frozen=True, eq=False)
class Workload:
    """Requests in order. Arrays are read-only; ``n`` samples per request (vLLM's ``--n``)."""

    name: str
    arrival_s: np.ndarray  # float64, non-decreasing
    prompt_len: np.ndarray  # int64, prefix included
    output_len: np.ndarray  # int64
    prefix_len: np.ndarray  # int64, tokens of the shared prefix at the prompt's start (0: none)
    prefix_group: np.ndarray  # int64, -1: none
    n: int = 1
    token_seed: int = 0  # drawn from the build's Generator; seeds prompt_token_ids
    consecutive_ids: bool = False  # prompts as vLLM's RandomDataset builds them (module docstring)
    vocab_size: int | None = None  # overrides the vocabulary callers pass (a tokenizer's)
    num_filtered: int = 0  # draws or trace rows dropped by the length filter
    _prefix_cache: dict = field(default_factory=dict, repr=False, compare=False)  # token streams, lazily

    def __post_init__(self) -> None:
        for arr in (self.arrival_s, self.prompt_len, self.output_len, self.prefix_len, self.prefix_group):
            arr.setflags(write=False)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def prompt_token_ids(self, i: int, vocab_size: int) -> list[int]:
        """Request ``i``'s prompt: its group's shared prefix, then tokens of its own.

        Deterministic in (token_seed, i, vocab_size); the workload's own ``vocab_size``, if
        set, replaces the caller's. The prefix comes from the group's own stream, so requests
        of a group share it exactly. The rest is request ``i``'s own: with ``consecutive_ids``
        a run of consecutive ids from its start (vLLM's RandomDataset: requests that start at
        the same id repeat the same prompt); otherwise its slice of a random stream (drawn per
        chunk of TOKEN_CHUNK requests, so a call costs a slice), so two requests match beyond
        the prefix only by chance (a full 16-token block: vocab**-16).
        """
        return self.prompt_token_array(i, vocab_size).tolist()

    def prompt_token_array(self, i: int, vocab_size: int) -> np.ndarray:
        """The same tokens as :meth:`prompt_token_ids`, as an int64 array (no list to build:
        hashing blocks with ``arr[a:b].tobytes()`` is much cheaper on long prompts)."""
        vocab_size = self.vocab_size or vocab_size
        plen = int(self.prefix_len[i])
        own = self._consecutive_tokens(i, vocab_size) if self.consecutive_ids else self._own_tokens(i, vocab_size)
        if plen > 0:
            return np.concatenate((self._group_prefix(int(self.prefix_group[i]), vocab_size)[:plen], own))
        return own.copy()

    def _own_tokens(self, i: int, vocab_size: int) -> np.ndarray:
        chunk = i // TOKEN_CHUNK
        key = ("own", chunk, vocab_size)
        if key not in self._prefix_cache:
            lo, hi = chunk * TOKEN_CHUNK, min((chunk + 1) * TOKEN_CHUNK, len(self))
            lengths = self.prompt_len[lo:hi] - self.prefix_len[lo:hi]
            offsets = np.concatenate(([0], np.cumsum(lengths)))
            stream = np.random.default_rng([self.token_seed, 1, chunk])
            tokens = stream.integers(0, vocab_size, int(offsets[-1]), dtype=np.int64)
            # Keep the chunks of at most two (vocab, chunk) pairs: callers go in request order.
            for old in [k for k in self._prefix_cache if k[0] == "own"][:-1]:
                del self._prefix_cache[old]
            self._prefix_cache[key] = (tokens, offsets)
        tokens, offsets = self._prefix_cache[key]
        j = i - chunk * TOKEN_CHUNK
        return tokens[offsets[j]: offsets[j + 1]]

    def _consecutive_tokens(self, i: int, vocab_size: int) -> np.ndarray:
        key = ("starts", vocab_size)
        if key not in self._prefix_cache:  # vLLM: offset_i + i, offset_i uniform over the vocabulary
            offsets = np.random.default_rng([self.token_seed, 2]).integers(0, vocab_size, len(self))
            self._prefix_cache[key] = (offsets + np.arange(len(self))) % vocab_size
        start = self._prefix_cache[key][i]
        length = int(self.prompt_len[i] - self.prefix_len[i])
        return (start + np.arange(length, dtype=np.int64)) % vocab_size

    def _group_prefix(self, group: int, vocab_size: int) -> np.ndarray:
        key = ("prefix", group, vocab_size)
        if key not in self._prefix_cache:
            longest = int(self.prefix_len.max())
            stream = np.random.default_rng([self.token_seed, 0, group])
            self._prefix_cache[key] = stream.integers(0, vocab_size, longest, dtype=np.int64)
        return self._prefix_cache[key]

    def describe(self) -> dict:
        return {
            "name": self.name, "num_requests": len(self), "n": self.n,
            "mean_prompt_len": float(self.prompt_len.mean()) if len(self) else 0.0,
            "mean_output_len": float(self.output_len.mean()) if len(self) else 0.0,
            "duration_s": float(self.arrival_s[-1]) if len(self) else 0.0,
            "requests_with_prefix": int((self.prefix_group >= 0).sum()),
        }


def build_workload(spec: WorkloadSpec, rng: np.random.Generator) -> Workload:
    """Draw a workload; the same spec and Generator state give the same arrays."""
    num_filtered = 0
    if spec.dataset_name == "trace":
        rows = read_trace(spec.dataset_path)  # type: ignore[arg-type]
        arrival, prompt, output = rows
        if spec.max_model_len is not None:
            keep = prompt + output <= spec.max_model_len
            num_filtered = int((~keep).sum())
            arrival, prompt, output = arrival[keep], prompt[keep], output[keep]
        if spec.num_prompts is not None:
            arrival, prompt, output = arrival[: spec.num_prompts], prompt[: spec.num_prompts], output[: spec.num_prompts]
        arrival = (arrival - (arrival[0] if len(arrival) else 0.0)) * spec.trace_time_scale
        count = len(arrival)
    else:
        count = spec.num_prompts or DEFAULT_NUM_PROMPTS
        if spec.dataset_name == "random":
            prompt, output = _random_lengths(spec, count, rng)
        else:
            prompt, output, num_filtered = _sharegpt_like_lengths(spec, count, rng)
        arrival = arrival_times(count, spec.request_rate, spec.burstiness, rng)

    has_prefix = np.zeros(count, dtype=bool)
    group = np.full(count, -1, dtype=np.int64)
    prefix = np.zeros(count, dtype=np.int64)
    if spec.prefix_len > 0 and count:
        has_prefix = rng.random(count) < spec.prefix_fraction if spec.prefix_fraction < 1 else np.ones(count, bool)
        group = np.where(has_prefix, rng.integers(0, spec.num_prefix_groups, count), -1).astype(np.int64)
        if spec.dataset_name == "trace":
            prefix = np.where(has_prefix, np.minimum(spec.prefix_len, prompt - 1), 0).astype(np.int64)
            group = np.where(prefix > 0, group, -1)
        else:
            prefix = np.where(has_prefix, spec.prefix_len, 0).astype(np.int64)
            prompt = prompt + prefix
    return Workload(
        name=spec.name or _default_name(spec),
        arrival_s=np.asarray(arrival, dtype=np.float64),
        prompt_len=np.asarray(prompt, dtype=np.int64),
        output_len=np.asarray(output, dtype=np.int64),
        prefix_len=prefix,
        prefix_group=group,
        n=spec.n,
        token_seed=int(rng.integers(0, 2**62)),
        num_filtered=num_filtered,
        consecutive_ids=(spec.prompt_ids or ("vllm" if spec.dataset_name == "random" else "independent")) == "vllm",
        vocab_size=spec.vocab_size,
    )


def _default_name(spec: WorkloadSpec) -> str:
    if spec.dataset_name == "random":
        return f"random-{spec.random_input_len}-{spec.random_output_len}"
    if spec.dataset_name == "trace":
        return f"trace-{Path(str(spec.dataset_path)).stem}"
    return spec.dataset_name


def _random_lengths(spec: WorkloadSpec, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r = spec.random_range_ratio
    in_low, in_high = math.floor(spec.random_input_len * (1 - r)), math.ceil(spec.random_input_len * (1 + r))
    out_low = max(math.floor(spec.random_output_len * (1 - r)), 1)
    out_high = max(math.ceil(spec.random_output_len * (1 + r)), 1)
    # vLLM accepts an input lower bound of 0 (a prefix may make up the prompt); a request needs
    # at least one prompt token here, so a 0 is raised to 1 (deliberate departure).
    prompt = np.maximum(rng.integers(in_low, in_high + 1, size=count), 1)
    output = rng.integers(out_low, out_high + 1, size=count)
    return prompt.astype(np.int64), output.astype(np.int64)


def _sharegpt_like_lengths(spec: WorkloadSpec, count: int, rng: np.random.Generator):
    dist = LENGTH_DISTRIBUTIONS[spec.dataset_name]
    max_total = min(SHAREGPT_MAX_TOTAL, spec.max_model_len or SHAREGPT_MAX_TOTAL)
    max_prompt = min(SHAREGPT_MAX_PROMPT, max_total - SHAREGPT_MIN_LEN)
    fixed_out = spec.sharegpt_output_len
    if fixed_out is not None and fixed_out + SHAREGPT_MIN_LEN > max_total:
        raise ConfigError(f"--sharegpt-output-len: {fixed_out} leaves no room for a prompt within {max_total} tokens")
    prompts: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    have, rejected = 0, 0
    while have < count:
        batch = max(64, int((count - have) * 1.2))
        p = np.rint(rng.lognormal(dist.mu_in, dist.sigma_in, batch)).astype(np.int64)
        o = (np.full(batch, fixed_out, dtype=np.int64) if fixed_out is not None
             else np.rint(rng.lognormal(dist.mu_out, dist.sigma_out, batch)).astype(np.int64))
        # vLLM's is_valid_sequence; a fixed output length skips the minimum-output check, as vLLM.
        ok = (p >= SHAREGPT_MIN_LEN) & (p <= max_prompt) & (p + o <= max_total)
        if fixed_out is None:
            ok &= o >= SHAREGPT_MIN_LEN
        rejected += int((~ok).sum())
        prompts.append(p[ok])
        outputs.append(o[ok])
        have += int(ok.sum())
    prompt = np.concatenate(prompts)[:count]
    output = np.concatenate(outputs)[:count]
    return prompt, output, rejected


def arrival_times(count: int, request_rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """vLLM's ``get_request`` schedule: cumulative Gamma gaps, rescaled to end at count/rate."""
    if count == 0:
        return np.zeros(0)
    if request_rate == math.inf:
        return np.zeros(count)
    if burstiness == math.inf:
        gaps = np.full(count, 1.0 / request_rate)
    else:
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=count)
    times = np.cumsum(gaps)
    if times[-1] > 0:
        times *= (count / request_rate) / times[-1]
    return times


# -- traces -------------------------------------------------------------------------------
def resolve_trace_path(path: str) -> Path:
    if path in SHIPPED_TRACES:
        return Path(str(resources.files("sim") / "data" / "traces" / SHIPPED_TRACES[path]))
    return Path(path).expanduser()


def read_trace(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrived_at_s, prompt_len, output_len) from a trace CSV file (or a shipped trace's name)."""
    resolved = resolve_trace_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--dataset-path: {path}: no such file (shipped traces: {', '.join(SHIPPED_TRACES)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--dataset-path: {path}: cannot read it as text ({exc})") from None
    return parse_trace_csv(text, source=str(path))


def parse_trace_csv(text: str, source: str = "<trace>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Parse a trace: a header naming at least TRACE_COLUMNS, then one request per line.

    Any line ending reads (``\n``, ``\r\n``, a lone ``\r``), and a UTF-8 byte-order mark before
    the header (what a spreadsheet's "CSV UTF-8" export writes) is dropped, so that the first
    column is ``arrived_at`` and not ``\ufeffarrived_at``."""
    # newline="": the csv module does its own line splitting (a lone "\r" otherwise raises csv.Error).
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        return _parse_trace_rows(reader, source)
    except csv.Error as exc:  # e.g. a cell over the csv module's field size limit
        raise ConfigError(f"{source}, line {reader.line_num}: not a readable CSV line ({exc}); "
                          f"expected {', '.join(TRACE_COLUMNS)} separated by commas") from None


def _parse_trace_rows(reader, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    header = next(reader, None)
    if not header:
        raise ConfigError(f"{source}: empty file; expected a header line with {', '.join(TRACE_COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in TRACE_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{source}, line 1: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'} "
                          f"(expected {', '.join(TRACE_COLUMNS)})")
    twice = [c for c in TRACE_COLUMNS if header.count(c) > 1]
    if twice:  # which of the two is meant? Reading the first would be a silent guess.
        raise ConfigError(f"{source}, line 1: column(s) {', '.join(twice)} appear more than once; keep one of each")
    col = {c: header.index(c) for c in TRACE_COLUMNS}
    arrival: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ConfigError(f"{source}, line {line}: expected {len(header)} columns, found {len(row)}")
        t = _cell_float(row[col["arrived_at"]], source, line, "arrived_at")
        if arrival and t < arrival[-1]:
            raise ConfigError(f"{source}, line {line}, column 'arrived_at': {t} is earlier than the previous "
                              f"request ({arrival[-1]}); sort the trace by arrival time")
        arrival.append(t)
        prompt.append(_cell_int(row[col["num_prefill_tokens"]], source, line, "num_prefill_tokens"))
        output.append(_cell_int(row[col["num_decode_tokens"]], source, line, "num_decode_tokens"))
    if not arrival:
        raise ConfigError(f"{source}: no requests after the header")
    return np.array(arrival, dtype=np.float64), np.array(prompt, dtype=np.int64), np.array(output, dtype=np.int64)


def _cell_float(cell: str, source: str, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{source}, line {line}, column {column!r}: expected seconds >= 0, found {cell!r}")
    return value


def _cell_int(cell: str, source: str, line: int, column: str) -> int:
    text = cell.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
            value = int(f) if math.isfinite(f) and f == int(f) else -1
        except (ValueError, OverflowError):
            value = -1
    if value <= 0 or value > 10**9:
        raise ConfigError(f"{source}, line {line}, column {column!r}: expected a positive token count, found {cell!r}")
    return value
