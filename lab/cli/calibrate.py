"""``servelab calibrate collect|fit``: measure real vLLM on a GPU, then fit the step-time model.

``collect`` is what a user with a GPU runs: a sweep of ``vllm bench throughput`` at fixed
lengths and ``vllm bench serve`` at several request rates (against a ``vllm serve`` it starts),
and the operator profiler; every result lands in one folder. ``fit`` reads those files (or any
``vllm bench`` result files, and operator-timing CSVs in Vidur's layout or the profiler's),
fits the coefficients by least squares, prints the residuals and writes a calibration profile
that ``--calibration FILE`` selects.
"""

from __future__ import annotations

import argparse


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    from lab.cli.engine_args import human_int_arg, max_model_len_arg

    sub = parser.add_subparsers(dest="calibrate_command", metavar="{collect,fit}")
    fit = sub.add_parser("fit", help="fit a calibration profile to vLLM result files",
                         description="Fit the step-time model to `vllm bench` result files and operator CSVs.")
    fit.add_argument("files", nargs="*", metavar="FILE",
                     help="vllm bench serve --save-result JSON, vllm bench throughput --output-json JSON, "
                          "operator-timing CSV (Vidur's mlp.csv / all_reduce.csv, or the profiler's)")
    fit.add_argument("--from-aiconfigurator", nargs="?", const="", default=None, metavar="DIR",
                     help="derive the operator tables (sim/data/operators) from the installed aiconfigurator-core "
                          "0.12.0 (or its folder DIR), then fit the engine core's and the API server's times to the "
                          "real H200 runs (sim/data/reference/vllm-silicon.csv); see docs/calibration.md")
    fit.add_argument("--tables-dir", default=None, metavar="DIR",
                     help="with --from-aiconfigurator: write the tables here instead of sim/data/operators")
    fit.add_argument("--no-fit", action="store_true", help="with --from-aiconfigurator: derive the tables only")
    fit.add_argument("--gpu", default=None, help="the GPU the files were measured on (the files do not say)")
    fit.add_argument("--model", default=None, help="override the files' model_id (needed for throughput files)")
    fit.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    fit.add_argument("--max-num-seqs", type=int, default=None)
    fit.add_argument("--max-num-batched-tokens", type=human_int_arg, default=None, metavar="TOKENS")
    fit.add_argument("--max-model-len", type=max_model_len_arg, default=None, metavar="TOKENS")
    fit.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    fit.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=True)
    fit.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    fit.add_argument("--num-scheduler-steps", type=int, default=1, help="vLLM 0.6's multi-step scheduling")
    fit.add_argument("--input-len", type=int, default=None, help="prompt length of throughput files")
    fit.add_argument("--output-len", type=int, default=None, help="output length of throughput files")
    fit.add_argument("--free", default=None,
                     help="coefficients the end-to-end fit may move (comma-separated; default: overhead_s,per_seq_s "
                          "on GPUs with operator tables, overhead_s,per_seq_s,kv_bw_eff,matmul_eff elsewhere)")
    fit.add_argument("--max-evaluations", type=int, default=40, help="simulations per point, at most")
    fit.add_argument("--calibration", metavar="FILE", default=None,
                     help="profile to start from and to merge into (default: the shipped one)")
    fit.add_argument("--output", "-o", metavar="FILE", default="calibration.yaml",
                     help="where to write the profile (default calibration.yaml)")
    fit.set_defaults(run=_run_fit)

    col = sub.add_parser("collect", help="run (or print) the measurement sweep on a GPU",
                         description="Run vLLM's benchmarks and the operator profiler; write result files.")
    col.add_argument("--model", required=True)
    col.add_argument("--gpu", required=True, help="for the file names and the profiler's shapes check")
    col.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    col.add_argument("--output-dir", default="calibration-runs")
    col.add_argument("--lengths", default="128:128,512:128,1024:256,2048:64",
                     help="input:output pairs for vllm bench throughput")
    col.add_argument("--num-prompts", type=int, default=500)
    col.add_argument("--request-rates", default="1,2,4,8,16", help="for vllm bench serve")
    col.add_argument("--dataset-name", default="random", help="vllm bench serve --dataset-name")
    col.add_argument("--port", type=int, default=8000)
    col.add_argument("--skip-profiler", action="store_true")
    col.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    col.set_defaults(run=_run_collect)
    parser.set_defaults(run=lambda args: (parser.print_help(), 2)[1])


def run(args) -> int:
    return args.run(args)


def _run_fit(args) -> int:
    from sim.errors import ConfigError

    if args.from_aiconfigurator is not None:
        if args.files:  # they would be silently ignored
            raise ConfigError(f"calibrate fit: --from-aiconfigurator fits to the shipped real H200 runs and reads no "
                              f"result files, but {len(args.files)} file(s) were given ({args.files[0]}); run "
                              f"`servelab calibrate fit FILES --gpu GPU` for them, separately")
        return _from_aiconfigurator(args)
    aiconfigurator_only = [flag for flag, given in (("--tables-dir", args.tables_dir is not None),
                                                    ("--no-fit", args.no_fit)) if given]
    if aiconfigurator_only:
        raise ConfigError(f"{aiconfigurator_only[0]}: only with --from-aiconfigurator (it says where the derived "
                          f"operator tables go, or to skip the fit); result files do not use it")
    if not args.files:
        raise ConfigError("calibrate fit: give result files (vllm bench JSON, operator CSVs), "
                          "or --from-aiconfigurator to derive the operator tables and fit to the real H200 runs")
    if not args.gpu:
        raise ConfigError("--gpu: required with result files (the GPU they were measured on)")
    from lab.calibrate.fitcmd import fit_files

    return fit_files(args)


def _from_aiconfigurator(args) -> int:
    from pathlib import Path

    from lab.calibrate.aiconfigurator import package_data_dir, write_tables
    from sim.calibration import SHIPPED
    from sim.ops.tables import OPERATORS_DIR

    from lab.calibrate.args import check_profile, check_writable

    check_profile(args.calibration)
    if not args.no_fit:
        check_writable("--output", args.output)
    data_dir = package_data_dir(args.from_aiconfigurator or None)
    out_dir = Path(args.tables_dir) if args.tables_dir else OPERATORS_DIR
    for line in write_tables(data_dir, out_dir):
        print(line)
    if args.no_fit:
        return 0
    from lab.calibrate.silicon import fit_and_write

    command = "servelab calibrate fit --from-aiconfigurator" + (f" -o {args.output}" if args.output else "")
    print("Fitting the engine core's and the API server's times to the real H200 runs "
          f"(at most {args.max_evaluations} evaluations of every dense row)")
    entry = fit_and_write(args.output, args.calibration or str(SHIPPED), args.max_evaluations, command)
    print(f"coefficients: {entry['coefficients']}")
    print(f"frontend: {entry['frontend']}")
    for name, m in entry["provenance"]["mape"].items():
        print(f"MAPE {name}: TTFT {m['ttft']:.1%}, TPOT {m['tpot']:.1%}")
    print(f"Wrote {args.output} (select it with --calibration {args.output})")
    return 0


def _run_collect(args) -> int:
    from lab.calibrate.collect import collect

    return collect(args)
