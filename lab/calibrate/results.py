"""Read result files of real vLLM runs into calibration points.

Two JSON kinds, with vLLM's own field names:

* ``vllm bench serve --save-result [--save-detailed]``: ``model_id``, ``num_prompts``,
  ``request_rate`` (a number or ``"inf"``), ``burstiness``, ``max_concurrency``, ``completed``,
  ``total_input_tokens``, ``total_output_tokens``, ``request_throughput``, ``median_ttft_ms``,
  ``median_tpot_ms``...; with ``--save-detailed`` also ``input_lens``, ``output_lens``,
  ``ttfts``, ``itls``. Points: the median TTFT and TPOT (and the request throughput when the
  rate is ``inf``, where it measures the engine rather than the sender). The workload is rebuilt
  with the exact lengths when the file has them, otherwise every request gets the mean lengths.
* ``vllm bench throughput --output-json``: ``elapsed_time``, ``num_requests``,
  ``total_num_tokens``, ``requests_per_second``, ``tokens_per_second``. The file does not say
  how the tokens split into prompt and output: the lengths come from ``--input-len`` /
  ``--output-len`` or from a name such as ``throughput_in512_out128.json`` (what
  ``servelab calibrate collect`` writes).

What the files do not record (GPU, tensor parallelism, engine limits) comes from flags. A bad
or partial file raises :class:`sim.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from sim.calibration_fit import ExactWorkload, Point
from sim.config import GPU_MEMORY_UTILIZATION, EngineConfig
from sim.errors import ConfigError, ServeLabError

SERVE_REQUIRED = ("model_id", "num_prompts", "request_rate", "completed", "total_input_tokens",
                  "total_output_tokens", "median_ttft_ms", "median_tpot_ms")
THROUGHPUT_REQUIRED = ("elapsed_time", "num_requests", "total_num_tokens", "requests_per_second")
NAME_LENGTHS = re.compile(r"in(\d+)[_-]out(\d+)")


@dataclass(frozen=True)
class EngineFlags:
    """Settings a result file does not record."""

    gpu: str
    model: str | None = None  # None: the file's model_id
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    num_scheduler_steps: int = 1
    input_len: int | None = None  # for throughput files
    output_len: int | None = None

    def config(self, model: str, source: str) -> EngineConfig:
        try:
            return EngineConfig(
                model=self.model or model, gpu=self.gpu, tensor_parallel_size=self.tensor_parallel_size,
                max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
                max_model_len=self.max_model_len, gpu_memory_utilization=self.gpu_memory_utilization,
                enable_chunked_prefill=self.enable_chunked_prefill,
                enable_prefix_caching=self.enable_prefix_caching, num_scheduler_steps=self.num_scheduler_steps,
            )
        except ServeLabError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def load_json(path: str) -> dict:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark an editor added is dropped
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON file ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return doc


def kind_of(doc, source: str) -> str:
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object (a vllm bench result), found {type(doc).__name__}")
    if "elapsed_time" in doc or "requests_per_second" in doc:
        return "throughput"
    if any(k in doc for k in ("median_ttft_ms", "request_throughput", "completed")):
        return "serve"
    raise ConfigError(
        f"{source}: not a vllm bench result: expected the fields of `vllm bench serve --save-result` "
        f"(median_ttft_ms, ...) or of `vllm bench throughput --output-json` (elapsed_time, ...)"
    )


def _field(doc: dict, name: str, source: str, kind: str, *, integer=False, positive=True, allow_inf=False):
    if name not in doc:
        raise ConfigError(f"{source}: missing field {name!r} (a `{kind}` result file has it)")
    v = doc[name]
    if allow_inf and (v == "inf" or v == math.inf):
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{source}: field {name!r}: expected a number, found {v!r}")
    if integer and v != int(v):
        raise ConfigError(f"{source}: field {name!r}: expected a whole number, found {v!r}")
    if (positive and v <= 0) or v < 0:
        raise ConfigError(f"{source}: field {name!r}: expected a number {'> 0' if positive else '>= 0'}, found {v!r}")
    return int(v) if integer else float(v)


def _lengths(doc: dict, name: str, counts: tuple[int, ...], source: str) -> tuple[int, ...] | None:
    """vLLM writes one length per request sent (``num_prompts``), a failed one with output 0."""
    v = doc.get(name)
    if v is None:
        return None
    if not isinstance(v, list) or len(v) not in counts:
        raise ConfigError(f"{source}: field {name!r}: expected a list of {counts[0]} lengths (one per request), "
                          f"found {type(v).__name__} of length {len(v) if isinstance(v, list) else '-'}")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < 0 or x > 10_000_000:
            raise ConfigError(f"{source}: field {name!r}: expected whole numbers >= 0, found {x!r}")
    return tuple(v)


def serve_points(doc: dict, source: str, flags: EngineFlags) -> list[Point]:
    kind = "vllm bench serve --save-result"
    model = doc.get("model_id")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{source}: missing field 'model_id' (a `{kind}` result file has it)")
    for name in SERVE_REQUIRED:
        if name not in doc:
            raise ConfigError(f"{source}: missing field {name!r} (a `{kind}` result file has it)")
    completed = _field(doc, "completed", source, kind, integer=True)
    rate = _field(doc, "request_rate", source, kind, allow_inf=True)
    burst = _field(doc, "burstiness", source, kind) if "burstiness" in doc else 1.0
    conc = doc.get("max_concurrency")
    if conc is not None:
        conc = _field(doc, "max_concurrency", source, kind, integer=True)
    total_in = _field(doc, "total_input_tokens", source, kind, integer=True)
    total_out = _field(doc, "total_output_tokens", source, kind, integer=True)
    num_prompts = _field(doc, "num_prompts", source, kind, integer=True)
    ins = _lengths(doc, "input_lens", (num_prompts, completed), source)
    outs = _lengths(doc, "output_lens", (num_prompts, completed), source)
    if ins is not None and outs is not None and len(ins) == len(outs):
        pairs = [(i, o) for i, o in zip(ins, outs) if i > 0 and o > 0]  # failed requests: output 0
        if not pairs:
            raise ConfigError(f"{source}: field 'output_lens': no request produced a token")
        ins, outs = tuple(i for i, _ in pairs), tuple(o for _, o in pairs)
    else:  # no --save-detailed: every request gets the mean lengths
        if ins is not None or outs is not None:
            raise ConfigError(f"{source}: fields 'input_lens' and 'output_lens' must both be there, one per request")
        ins = (max(1, round(total_in / completed)),) * completed
        outs = (max(1, round(total_out / completed)),) * completed
    if max(i + o for i, o in zip(ins, outs)) > 10_000_000 or completed > 1_000_000:
        raise ConfigError(f"{source}: lengths or request count out of range for a simulation")
    config = flags.config(model, source)
    workload = ExactWorkload(ins, outs, request_rate=rate, burstiness=burst, name=Path(source).stem)
    name = Path(source).name
    points = []
    for metric in ("median_ttft_ms", "median_tpot_ms"):
        value = _field(doc, metric, source, kind)
        points.append(Point(source, config, workload, metric, value, usage="serve", label=f"{name} {metric}",
                            max_concurrency=conc))
    if math.isinf(rate) and "request_throughput" in doc:
        value = _field(doc, "request_throughput", source, kind)
        points.append(Point(source, config, workload, "requests_per_second", value, usage="serve",
                            label=f"{name} request_throughput", max_concurrency=conc))
    return points


def throughput_points(doc: dict, source: str, flags: EngineFlags) -> list[Point]:
    kind = "vllm bench throughput --output-json"
    for name in THROUGHPUT_REQUIRED:
        if name not in doc:
            raise ConfigError(f"{source}: missing field {name!r} (a `{kind}` result file has it)")
    n = _field(doc, "num_requests", source, kind, integer=True)
    total = _field(doc, "total_num_tokens", source, kind, integer=True)
    rps = _field(doc, "requests_per_second", source, kind)
    _field(doc, "elapsed_time", source, kind)
    in_len, out_len = flags.input_len, flags.output_len
    if in_len is None or out_len is None:
        m = NAME_LENGTHS.search(Path(source).name)
        if not m:
            raise ConfigError(
                f"{source}: a `{kind}` file does not record the prompt and output lengths; pass "
                f"--input-len and --output-len, or name the file like throughput_in512_out128.json")
        in_len, out_len = int(m.group(1)), int(m.group(2))
    if in_len <= 0 or out_len <= 0:
        raise ConfigError(f"{source}: --input-len and --output-len: expected positive token counts, "
                          f"got {in_len} and {out_len}")
    if n > 1_000_000:
        raise ConfigError(f"{source}: field 'num_requests': expected at most 1,000,000 requests to simulate, found {n}")
    if abs(n * (in_len + out_len) - total) > 0.05 * total:
        raise ConfigError(
            f"{source}: total_num_tokens is {total}, but {n} requests of {in_len} + {out_len} tokens make "
            f"{n * (in_len + out_len)}: check --input-len/--output-len")
    model = doc.get("model_id") if isinstance(doc.get("model_id"), str) else None
    if not (flags.model or model):
        raise ConfigError(f"{source}: the file does not name the model: pass --model")
    config = flags.config(model or "", source)
    workload = ExactWorkload((in_len,) * n, (out_len,) * n, name=Path(source).stem)
    return [Point(source, config, workload, "requests_per_second", rps, usage="offline",
                  label=f"{Path(source).name} requests_per_second")]


def points_from_doc(doc, source: str, flags: EngineFlags) -> list[Point]:
    kind = kind_of(doc, source)
    return serve_points(doc, source, flags) if kind == "serve" else throughput_points(doc, source, flags)


def points_from_file(path: str, flags: EngineFlags) -> list[Point]:
    return points_from_doc(load_json(path), path, flags)
