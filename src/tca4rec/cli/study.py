"""``tca4rec demo``, ``tca4rec study CONFIG.yaml`` and ``tca4rec report ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tca4rec.cli import add_command


def _demo(args: argparse.Namespace) -> int:
    from tca4rec.study.config import DemoConfig
    from tca4rec.study.demo import run_demo

    fields = {k: v for k, v in vars(args).items() if k in DemoConfig.__dataclass_fields__ and v is not None}
    report = run_demo(DemoConfig(**fields))
    print(f"report folder: {report}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from tca4rec.study.runner import load_study

    report = load_study(args.config, args.set).run(jobs=args.jobs, only=args.only, finish_within=args.finish_within,
                                                   eval_reserve=args.eval_reserve, stage=args.stage,
                                                   rerun_changed=args.rerun_changed)
    if report is not None:
        print(f"report folder: {report}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tca4rec.errors import ConfigError

    single = Path(args.runs[0]) if len(args.runs) == 1 else None
    # A study folder or a study file: the report of its finished cells, while others still run.
    if single is not None and ((single / "study.yaml").is_file() or single.suffix in (".yaml", ".yml")):
        from tca4rec.study.runner import load_study

        print(f"report folder: {load_study(args.runs[0]).report()}")
        return 0
    if args.data is None:
        raise ConfigError("reporting on run folders needs --data DIR (the dataset they were evaluated on)")
    from tca4rec.study.runs_report import write_runs_report

    print(f"report folder: {write_runs_report(args.runs, args.data, args.split, args.out)}")
    return 0


def register(sub) -> None:
    from tca4rec.study.config import DemoConfig

    p = add_command(sub, "demo", _demo, "the main job: SASRec, LLM and LLM + TCA4Rec on one dataset, with a report",
                    ("tca4rec demo", "tca4rec demo --data ../shared/data/amazon2018/Toys_and_Games --out demo_toys",
                     "tca4rec demo --max-steps 40 --test-limit 50   # a quicker look",
                     "tca4rec demo --no-guided   # without the fused rows (CF-guided decoding, beta tuned on valid)"))
    p.add_argument("--data", help="dataset folder (default: a synthetic dataset generated on the spot)")
    p.add_argument("--out", help="output folder (default: demo_out); rerun with the same folder to resume")
    p.add_argument("--llm", help="local Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--train-limit", type=int, dest="train_limit", help=f"LLM training rows (default {DemoConfig.train_limit})")
    p.add_argument("--max-steps", type=int, dest="max_steps", help=f"optimizer steps per LLM run (default {DemoConfig.max_steps})")
    p.add_argument("--test-limit", type=int, dest="test_limit", help=f"test rows evaluated (default {DemoConfig.test_limit})")
    p.add_argument("--seed", type=int)
    p.add_argument("--guided", action=argparse.BooleanOptionalAction, default=None,
                   help="also decode both LLM runs with CF-guided decoding, beta tuned on valid rows (the fused "
                        "rows; default on; --no-guided skips them)")
    p.add_argument("--beta-rows", type=int, dest="beta_rows",
                   help=f"valid rows per beta when tuning (default {DemoConfig.beta_rows})")

    p = add_command(sub, "study", _study, "run (or resume) a grid of datasets x hosts x CF models x alpha x seeds",
                    ("tca4rec study docs/results/amazon.yaml",
                     "tca4rec study docs/results/gpu-office.yaml --jobs 4   # 4 LLM cells at once (one GPU or several)"))
    p.add_argument("config", help="study YAML file (see docs/results/ for examples), or a study output folder")
    p.add_argument("--jobs", type=int, default=1,
                   help="LLM cells trained and evaluated at once, one process each (default 1)")
    p.add_argument("--finish-within", type=float, dest="finish_within", metavar="SECONDS",
                   help="with --jobs >= the LLM cells: give each the same training budget so that all end by then")
    p.add_argument("--eval-reserve", type=float, dest="eval_reserve", default=120.0, metavar="SECONDS",
                   help="with --finish-within: seconds kept for start-up, loading and the report (default 120); "
                        "test decoding is budgeted from the rate the valid evaluations measure")
    p.add_argument("--stage", choices=["all", "train", "evaluate"], default="all",
                   help="train: CF cells and LLM fine-tuning only; evaluate: decode the fine-tuned cells only")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of the study file (YAML value), e.g. --set train.max_minutes=4; repeatable")
    p.add_argument("--rerun-changed", action="store_true", dest="rerun_changed",
                   help="train and evaluate again the cells made with other settings than the study file's "
                        "(without it such a study is refused)")
    p.add_argument("--only", nargs="+", metavar="CELL",
                   help="run only these cells (folders such as Office_Products/llm/tallrec-nocf-a0-s0); no report")

    p = add_command(sub, "report", _report, "rebuild tables and plots from finished runs, a study folder or file",
                    ("tca4rec report runs/my-study",
                     "tca4rec report docs/results/breadth.yaml   # the finished cells of a study still running",
                     "tca4rec report runs/sasrec runs/tallrec-a0 runs/tallrec-a0.1 --data data/synth --out report"))
    p.add_argument("runs", nargs="+", help="a study folder or YAML file, or evaluated run folders (CF or LLM)")
    p.add_argument("--data", help="dataset folder of the runs (for run folders)")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--out", default="report", help="report folder for run folders (default: report)")
