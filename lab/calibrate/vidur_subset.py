"""Write the subset of Vidur's profiling data that ServeLab ships (``sim/data/vidur``).

Vidur (github.com/microsoft/vidur, MIT) measured per-operator GPU times. ServeLab keeps only
what :mod:`sim.calibration_ops` fits: the median times of the four GEMMs of a layer with the
model's shape columns (``mlp.csv``), and rank 0's single-node all-reduce medians
(``all_reduce.csv``). Rows are kept as they are; only columns (and, for the all-reduce, rows of
other ranks and of multi-node runs) are dropped. Run::

    python3 -m lab.calibrate.vidur_subset /work/shared/peers/vidur-data sim/data/vidur
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from sim.calibration_ops import VIDUR_GEMMS, VIDUR_SHAPE

MLP_FILES = {  # destination -> source, relative to Vidur's data/profiling/compute
    "a100/Llama-2-7b-hf/mlp.csv": "a100/meta-llama/Llama-2-7b-hf/mlp.csv",
    "a100/Llama-2-70b-hf/mlp.csv": "a100/meta-llama/Llama-2-70b-hf/mlp.csv",
    "h100/Llama-2-7b-hf/mlp.csv": "h100/meta-llama/Llama-2-7b-hf/mlp.csv",
    "h100/Llama-2-70b-hf/mlp.csv": "h100/meta-llama/Llama-2-70b-hf/mlp.csv",
}
ALL_REDUCE_FILES = {"a100_dgx/all_reduce.csv": "a100_dgx/all_reduce.csv",
                    "h100_dgx/all_reduce.csv": "h100_dgx/all_reduce.csv"}
MLP_COLUMNS = tuple(f"time_stats.{op}.median" for op in VIDUR_GEMMS) + VIDUR_SHAPE + ("use_gated_mlp",)
ALL_REDUCE_COLUMNS = ("num_workers", "devices_per_node", "size", "time_stats.all_reduce.median")


def _copy(src: Path, dst: Path, columns: tuple[str, ...], keep=lambda row: True) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with src.open() as fin, dst.open("w", newline="") as fout:
        reader = csv.DictReader(fin)
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow(columns)
        for row in reader:
            if keep(row):
                writer.writerow([row[c] for c in columns])
                n += 1
    return n


def main(argv: list[str]) -> int:
    src, dst = Path(argv[0]) / "data" / "profiling", Path(argv[1])
    for out, inp in MLP_FILES.items():
        print(out, _copy(src / "compute" / inp, dst / out, MLP_COLUMNS), "rows")
    single_node_rank0 = lambda r: r["rank"] == "0" and r["devices_per_node"] == r["num_workers"]
    for out, inp in ALL_REDUCE_FILES.items():
        print(out, _copy(src / "network" / inp, dst / out, ALL_REDUCE_COLUMNS, single_node_rank0), "rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
