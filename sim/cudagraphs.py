"""Which step sizes vLLM 0.33 captures as CUDA graphs.

vLLM records a CUDA graph for each of a list of batch sizes (in tokens) at start-up and replays
the smallest one that holds a step; a step larger than the largest runs eagerly, kernel by
kernel. ServeLab needs the list twice: for memory (each graph keeps its own buffers:
:func:`sim.memory.cudagraph_bytes`) and for step time (a collective inside a graph runs the
custom all-reduce's graph variant: :mod:`sim.ops.allreduce`).

The rule (``VllmConfig._set_cudagraph_sizes`` in vllm/config/vllm.py, one token per decode,
no speculative decoding):

- the ceiling is 1,024 tokens on data-center Blackwell (compute capability 10.x: B200, B300)
  and 512 elsewhere; the largest size is ``min(2 x max_num_seqs, ceiling)``;
- a model can set the largest size itself: gpt-oss asks for 1,024 on every GPU
  (``GptOssForCausalLMConfig.verify_and_update_config`` in vllm/model_executor/models/config.py,
  "for performance"), and then the ``2 x max_num_seqs`` cap does not apply;
- the largest size never exceeds ``max_num_batched_tokens``;
- the sizes are 1, 2, 4 (every size up to 32 with ``--performance-mode interactivity``), then
  every 8 up to 248, then every 16 from 256 up to the largest;
  ``max_num_batched_tokens`` is added when it fits under the largest, and so is
  ``max_num_seqs`` (a batch of nothing but decodes) when the default ceiling applies;
- ``--enforce-eager`` captures nothing.
"""

from __future__ import annotations

DEFAULT_CEILING = 512
BLACKWELL_CEILING = 1024  # compute capability 10.x (is_device_capability_family(100))
# Models that set max_cudagraph_capture_size themselves, by ServeLab's architecture name.
MODEL_LARGEST = {"gpt_oss": 1024}


def capture_sizes(model, gpu, max_num_seqs: int, max_num_batched_tokens: int,
                  enforce_eager: bool = False, performance_mode: str = "balanced") -> tuple[int, ...]:
    """The step sizes (tokens) vLLM 0.33 captures for ``model`` on ``gpu``, ascending; empty
    under ``--enforce-eager``."""
    if enforce_eager:
        return ()
    largest = MODEL_LARGEST.get(getattr(model, "architecture", None))
    decode_only: list[int] = []
    if largest is None:
        ceiling = BLACKWELL_CEILING if gpu.compute_capability[0] == 10 else DEFAULT_CEILING
        largest = min(2 * max_num_seqs, ceiling)
        if max_num_seqs <= largest:
            decode_only = [max_num_seqs]
    largest = min(max_num_batched_tokens, largest)
    if performance_mode == "interactivity":  # fine-grained graphs at small batches
        sizes = list(range(1, min(largest, 32) + 1))
    else:
        sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += range(8, min(largest + 1, 256), 8)
    sizes += range(256, largest + 1, 16)
    if max_num_batched_tokens <= largest:
        sizes.append(max_num_batched_tokens)
    sizes += [s for s in decode_only if s <= max_num_batched_tokens]
    return tuple(sorted(set(sizes)))


def largest_capture_size(model, gpu, max_num_seqs: int, max_num_batched_tokens: int,
                         enforce_eager: bool = False, performance_mode: str = "balanced") -> int:
    """The largest step (tokens) that runs in a CUDA graph; 0 when none is captured."""
    sizes = capture_sizes(model, gpu, max_num_seqs, max_num_batched_tokens, enforce_eager, performance_mode)
    return sizes[-1] if sizes else 0
