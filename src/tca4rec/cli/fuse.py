"""``tca4rec fuse fit | apply``: the learned fusion of an LLM run and a CF run (docs/fusion.md)."""

from __future__ import annotations

import argparse

from tca4rec.cli import add_command


def _fit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.fuse.config import FusionConfig
    from tca4rec.fuse.fit import fit_fusion

    record = fit_fusion(args.run, cf_run=args.cf_run, batch_size=args.batch_size, data=args.data,
                        config=FusionConfig(rows=args.rows, k=args.k, beams=args.beams, holdout=args.holdout))
    selection, chosen = record["selection"], record["settings"]
    table = Table(title=f"learned fusion on {record['fit_rows']} valid rows: fit on the first {selection['fit_rows']}, "
                        f"chosen by {selection['metric']} on the last {selection['held_out_rows']}")
    for column in ("num_leaves", "min_data_in_leaf", "trees", "NDCG@10", "HR@10"):
        table.add_column(column, justify="right")
    for row in selection["table"]:
        mark = " *" if all(row[key] == value for key, value in chosen.items()) else ""
        table.add_row(str(row["num_leaves"]), str(row["min_data_in_leaf"]), f"{row['trees']}{mark}",
                      f"{row['NDCG@10']:.4f}", f"{row['HR@10']:.4f}")
    Console().print(table)
    held, found = selection["held_out"], selection["target_in_candidates"]
    print(f"held-out NDCG@10: fusion {held['fusion']:.4f}, LLM beams {held['llm']:.4f}, CF titles {held['cf']:.4f}; "
          f"target among the candidates in {found['union']:.1%} of the {record['fit_rows']} rows (LLM beams "
          f"{found['llm']:.1%}, CF top-{record['config']['k']} {found['cf']:.1%})")
    print(f"refit on all {record['fit_rows']} rows with {chosen} in {record['fit_seconds']:.1f} s; stored in "
          f"{args.run}/fusion for --fusion")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from tca4rec.cli.llm import print_metrics
    from tca4rec.fuse.apply import fuse_predictions
    from tca4rec.fuse.config import FUSION_SUFFIX

    record = fuse_predictions(args.run, split=args.split, cf_run=args.cf_run, data=args.data)
    print_metrics(record)
    print(f"wrote metrics_{args.split}{FUSION_SUFFIX}.json and predictions_{args.split}{FUSION_SUFFIX}.jsonl "
          f"in {args.run}")
    return 0


def register(sub) -> None:
    from tca4rec.fuse.config import FusionConfig

    d = FusionConfig()
    fuse = sub.add_parser("fuse", help="the learned fusion: a ranker over the LLM's beams and the CF model's top "
                                       "titles (fit, apply)", description=__doc__)
    group = fuse.add_subparsers(dest="fuse_command", metavar="COMMAND")
    p = add_command(group, "fit", _fit, "decode valid rows with the LLM and fit the learned fusion on them "
                                        "(LightGBM LambdaRank; settings chosen on the last valid rows)", (
        "tca4rec fuse fit --run runs/tallrec --cf-run runs/sasrec",
        "tca4rec fuse fit --run runs/tca --rows 800 --k 20",
    ))
    p.add_argument("--run", required=True, help="LLM run folder (the fusion is stored in RUN/fusion)")
    p.add_argument("--cf-run", metavar="CF_RUN", help="CF run of the candidates and features (default: the run's "
                                                      "teacher)")
    p.add_argument("--rows", type=int, default=d.rows, help=f"first N valid rows to fit on (default {d.rows})")
    p.add_argument("--k", type=int, default=d.k, help=f"the CF model's top-K titles join the beams (default {d.k})")
    p.add_argument("--beams", type=int, default=d.beams, help=f"LLM beams per row (default {d.beams})")
    p.add_argument("--holdout", type=float, default=d.holdout,
                   help=f"share of the rows (the last) that chooses the settings (default {d.holdout:g})")
    p.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    p.add_argument("--data", help="dataset folder, if it moved since training")

    p = add_command(group, "apply", _apply, "re-rank a split's plain decoding already in the run folder with its "
                                            "learned fusion (no decoding)", (
        "tca4rec fuse apply --run runs/tallrec --split test",
        "tca4rec fuse apply --run docs/results/office-cpu-seed1/run/Office_Products/llm/tallrec-nocf-a0-s1 "
        "--cf-run docs/results/office-cpu-seed1/run/Office_Products/cf/sasrec-s1",
    ))
    p.add_argument("--run", required=True, help="LLM run folder with predictions_<split>.jsonl and fusion/")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--cf-run", metavar="CF_RUN", help="the fusion's CF run, if it moved (default: the recorded one)")
    p.add_argument("--data", help="dataset folder, if it moved since training")
