"""validate: per-point table on a cheap point, held-out bookkeeping, memory table, --json shape."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from lab.cli.main import main
from sim.calibration_fit import Point, simulate
from sim.config import EngineConfig
from sim.steptime import StepCoefficients
from sim.calibration import select_entry
from sim.validate import TARGETS, memory_table, reference_points, validate
from sim.workload import WorkloadSpec

CHEAP = Point("a test", EngineConfig(model="meta-llama/Llama-2-7b-hf", gpu="a100-80gb", max_num_seqs=64),
              WorkloadSpec(num_prompts=40, random_input_len=256, random_output_len=32),
              "requests_per_second", 10.0, label="cheap point")


def _profile(tmp_path, fitted: list[str], **coeffs) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"profiles": [
        {"name": "mine", "match": {"gpu": "a100-80gb", "model": "meta-llama/Llama-2-7b-hf"},
         "coefficients": coeffs, "provenance": {"fitted_points": fitted}},
        {"name": "default", "coefficients": {}},
    ]}))
    return str(path)


def test_one_cheap_point_row(tmp_path):
    path = _profile(tmp_path, ["cheap point"], overhead_s=0.002)
    report = validate([CHEAP], profile_path=path)
    (row,) = report.rows
    # An entry that does not name its step model was fitted to the roofline, CPU and GPU in series.
    roofline = StepCoefficients(step_model="roofline", async_scheduling=False)
    expected = simulate(CHEAP, replace(roofline, overhead_s=0.002))
    assert row["simulated"] == pytest.approx(expected)
    assert row["error"] == pytest.approx(expected / 10.0 - 1)
    assert row["profile_entry"] == "mine" and row["held_out"] is False
    assert row["within_target"] == (abs(row["error"]) <= TARGETS["requests_per_second"])
    assert "Llama-2-7b-hf a100-80gb tp1 random 256/32 offline n=40" in row["setup"]
    assert report.mape(False) == {"requests_per_second": pytest.approx(abs(row["error"]))}
    assert report.mape(True) == {}


def test_a_point_not_listed_as_fitted_is_held_out(tmp_path):
    report = validate([CHEAP], profile_path=_profile(tmp_path, ["some other point"]))
    assert report.rows[0]["held_out"] is True and report.mape(False) == {}


def test_selection_prefers_the_most_specific_entry():
    profile = ({"name": "gpu", "match": {"gpu": "h100-80gb"}, "coefficients": {}},
               {"name": "gpu+model", "match": {"gpu": "h100-80gb", "model": "m"}, "coefficients": {}},
               {"name": "default", "coefficients": {}})
    assert select_entry(profile, "h100-80gb", "m", 1)["name"] == "gpu+model"
    assert select_entry(profile, "h100-80gb", "other", 1)["name"] == "gpu"
    assert select_entry(profile, "a100-80gb", "m", 1)["name"] == "default"


def test_memory_table_matches_the_paper_rows():
    rows = memory_table()
    assert len(rows) == 6
    opt13 = {r["metric"]: r for r in rows if r["label"].startswith("facebook/opt-13b")}
    assert opt13["max_kv_slots"]["measured"] == 15_700 and opt13["kv_cache_gib"]["measured"] == 12
    for r in rows:
        assert r["error"] == pytest.approx(r["simulated"] / r["measured"] - 1)


def test_reference_points_cover_every_published_row_and_respect_the_cap():
    points = reference_points(200)
    assert len(points) == 6 + 7
    assert max(p.workload.num_prompts for p in points) <= 200
    assert len({p.label for p in points}) == len(points)


def test_cli_json_shape(tmp_path, capsys):
    out = tmp_path / "v.json"
    assert main(["validate", "--points", "in=2600 out=60", "--max-prompts", "60", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MAPE" in printed and "Memory: vLLM paper Table 1" in printed and "in=2600" not in printed.split("setup")[0]
    data = json.loads(out.read_text())
    assert set(data) >= {"profile", "points", "mape_fitted", "mape_held_out", "memory_table", "targets", "num_misses"}
    (point,) = data["points"]
    assert set(point) >= {"label", "source", "setup", "metric", "measured", "simulated", "error", "held_out",
                          "within_target", "profile_entry"}
    assert point["measured"] == 3.52 and point["metric"] == "requests_per_second"
    assert point["source"].startswith("vLLM blog")
    assert len(data["memory_table"]) == 6


@pytest.mark.parametrize("argv,match", [
    (["--points", "no such point"], "--points"), (["--max-prompts", "-1"], "--max-prompts"),
], ids=["points", "max-prompts"])
def test_cli_errors(capsys, argv, match):
    assert main(["validate", *argv]) == 2
    assert match in capsys.readouterr().err
