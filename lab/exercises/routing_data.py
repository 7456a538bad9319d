"""Exercise 6.2's world: two models, their prices and quality per task type, and a mixed workload.

The numbers are teaching values, not measurements, and the exercise README prints this table:

- Prices are of the order of public per-token list prices for hosted Llama 3.1 70B and 8B
  in 2024-2025 (roughly $0.9 and $0.2 per million tokens); the exact figures here are ours.
- Quality is a judge score in [0, 1] per task type. The gaps follow a pattern widely reported
  for these model sizes: code generation falls off sharply for a small model (Meta's model
  card gives HumanEval pass@1 of 72.6 for Llama 3.1 8B Instruct against 80.5 for 70B), while
  summarising a given text is close to saturated for both. The values themselves are
  illustrative, chosen so that the course's rule is the right answer; ServeLab does not
  claim them as benchmark results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoutedModel:
    name: str  # what route() returns
    model_id: str  # the model behind it
    usd_per_million_input_tokens: float
    usd_per_million_output_tokens: float
    quality: dict[str, float]  # judge score by task type


TASK_TYPES = ("code_generation", "summarization", "chat")

MODELS: dict[str, RoutedModel] = {
    "large": RoutedModel(
        "large",
        "meta-llama/Llama-3.1-70B",
        0.90,
        0.90,
        {"code_generation": 0.86, "summarization": 0.90, "chat": 0.88},
    ),
    "small": RoutedModel(
        "small",
        "meta-llama/Llama-3.1-8B",
        0.20,
        0.20,
        {"code_generation": 0.64, "summarization": 0.88, "chat": 0.82},
    ),
}

# The course's rule: these task types must go to these models. "chat" is left to the student.
REQUIRED_ROUTE = {"code_generation": "large", "summarization": "small"}

# (share of requests, prompt tokens range, output tokens range) per task type. Summaries read
# long documents and write little; code generation reads a short spec and writes a lot.
MIX = {
    "code_generation": (0.35, (150, 600), (200, 800)),
    "summarization": (0.40, (1500, 6000), (100, 300)),
    "chat": (0.25, (50, 400), (50, 400)),
}

SAMPLE_PROMPTS = {
    "code_generation": "Write a Python function that parses an ISO 8601 duration.",
    "summarization": "Summarise the following incident report in five bullet points: ...",
    "chat": "What is the difference between a process and a thread?",
}


def build_tasks(num_tasks: int = 200, seed: int = 0) -> list[dict]:
    """The mixed workload the check sends through the student's route(), in a fixed order."""
    rng = np.random.default_rng(seed)
    types = list(MIX)
    shares = np.array([MIX[t][0] for t in types])
    picks = rng.choice(len(types), size=num_tasks, p=shares / shares.sum())
    tasks = []
    for i, k in enumerate(picks):
        task_type = types[int(k)]
        _, (p_lo, p_hi), (o_lo, o_hi) = MIX[task_type]
        tasks.append(
            {
                "request_id": f"req-{i:04d}",
                "task_type": task_type,
                "prompt": SAMPLE_PROMPTS[task_type],
                "prompt_tokens": int(rng.integers(p_lo, p_hi + 1)),
                "max_tokens": int(rng.integers(o_lo, o_hi + 1)),
            }
        )
    return tasks


def cost_usd(model: RoutedModel, task: dict) -> float:
    return (
        task["prompt_tokens"] * model.usd_per_million_input_tokens
        + task["max_tokens"] * model.usd_per_million_output_tokens
    ) / 1e6


def score(tasks: list[dict], routes: list[str]) -> dict:
    """Total cost (USD), mean quality and requests per model for one assignment of routes."""
    total = 0.0
    quality = 0.0
    per_model = {name: 0 for name in MODELS}
    for task, name in zip(tasks, routes, strict=True):
        model = MODELS[name]
        total += cost_usd(model, task)
        quality += model.quality[task["task_type"]]
        per_model[name] += 1
    return {
        "cost_usd": round(total, 6),
        "mean_quality": round(quality / len(tasks), 4),
        "requests": per_model,
    }
