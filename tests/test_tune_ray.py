"""`servelab tune --executor ray`: the same search as Ray tasks, on a real local Ray instance.

One Ray instance for the whole module (``ray.init(num_cpus=2)`` takes about 20 s here), so the
suite pays for it once. Select these tests with ``-m ray``.
"""

from __future__ import annotations

import pytest

from conftest import require

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_instance():
    try:
        import ray
    except ImportError:
        require(False, "the Python package 'ray'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _request():
    from sim.tune import SearchSpace, TuneRequest, parse_sla
    from sim.tune.prices import shipped_prices
    from sim.workload import WorkloadSpec

    space = SearchSpace(model="meta-llama/Llama-3.1-8B", gpus=("h100", "l40s"), tensor_parallel_sizes=(1, 2),
                        max_num_seqs=(64, 256), max_num_batched_tokens=(8192,), max_model_len=2048)
    workload = WorkloadSpec(num_prompts=60, random_input_len=256, random_output_len=64)
    return TuneRequest(space, workload, parse_sla("p90_ttft_ms<=1000,p90_tpot_ms<=40"), shipped_prices(),
                       target_load=10.0, rel_tol=0.2)


def test_ray_executor_runs_the_search_and_agrees_with_serial(ray_instance):
    from sim.tune import tune
    from sim.tune.executors import RayExecutor

    executor = RayExecutor(chunksize=2)  # joins the instance the fixture started
    assert executor.workers == 2
    seen = []
    result = tune(_request(), executor, progress=lambda done, total, ev: seen.append((done, total)))
    executor.close()
    assert ray_instance.is_initialized()  # close() leaves an instance it did not start
    serial = tune(_request())
    assert [(e.config, e.best_load) for e in result.evaluations] == [(e.config, e.best_load) for e in serial.evaluations]
    assert [d.config for d in result.ranked] == [d.config for d in serial.ranked]
    assert seen[-1] == (8, 8) and len(seen) == 9


def test_cli_with_executor_ray(ray_instance, capsys):
    from lab.cli.main import main

    rc = main(["tune", "--model", "llama-3.1-8b", "--gpu", "h100", "--random-input-len", "256",
               "--random-output-len", "64", "--num-prompts", "60", "--tensor-parallel-size", "1",
               "--max-num-seqs", "64,128", "--max-num-batched-tokens", "8192", "--sla", "p90_tpot_ms<=40",
               "--executor", "ray"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 ray workers" in out and "Winner:" in out
