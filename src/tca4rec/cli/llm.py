"""``tca4rec train | evaluate | recommend | tune-beta``: the LLM recommender from the command line.

``recommend --histories FILE --out FILE`` is offline batch scoring (``tca4rec.llm.recommend_file``);
``--fusion`` ranks by the run's learned fusion instead (``tca4rec.fuse``, docs/fusion.md).
"""

from __future__ import annotations

import argparse

from tca4rec.cli import add_command


def _train(args: argparse.Namespace) -> int:
    from tca4rec.llm.config import TrainConfig
    from tca4rec.llm.train import train

    config = TrainConfig(
        data=args.data, out=args.out, host=args.host, cf=args.cf, alpha=args.alpha, temperature=args.temperature,
        form=args.form, tau=args.tau, llm=args.llm, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, lora_targets=args.lora_targets, lr=args.lr, batch_size=args.batch_size,
        grad_accum=args.grad_accum, epochs=args.epochs, max_steps=args.max_steps, max_minutes=args.max_minutes,
        save_steps=args.save_steps, eval_steps=args.eval_steps,
        eval_rows=args.eval_rows, eval_beams=args.eval_beams, patience=args.patience,
        train_limit=args.train_limit, seed=args.seed, logging_steps=args.logging_steps,
        group_by_length=not args.no_group_by_length)
    run_dir = train(config, resume=args.resume, overwrite=args.overwrite)
    print(f"trained {config.host} (alpha {config.alpha:g}) -> {run_dir}")
    return 0


def print_metrics(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['model']} on {record['split']} ({record['rows']} rows, {record['beams']} beams)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, value in record["metrics"].items():
        low, high = record["ci95"][name]
        table.add_row(name, f"{value:.4f}", f"[{low:.4f}, {high:.4f}]")
    Console().print(table)


def _evaluate(args: argparse.Namespace) -> int:
    from tca4rec.llm.evaluate import decoding_suffix, evaluate_llm_run
    from tca4rec.llm.run import process_state

    if args.fusion:
        return _evaluate_fused(args)
    record = evaluate_llm_run(args.run, split=args.split, limit=args.limit, beams=args.beams,
                              batch_size=args.batch_size, data=args.data, beta=args.beta, cf_run=args.cf_run,
                              length_normalize=args.length_normalize, sample_seed=args.sample_seed,
                              cf_lookahead=args.cf_lookahead)
    if process_state().is_main_process:
        print_metrics(record)
        suffix = decoding_suffix(record["beta"], args.length_normalize, args.cf_lookahead)
        print(f"wrote metrics_{args.split}{suffix}.json and predictions_{args.split}{suffix}.jsonl in {args.run}")
    return 0


def _evaluate_fused(args: argparse.Namespace) -> int:
    from tca4rec.fuse.apply import evaluate_fused
    from tca4rec.fuse.config import FUSION_SUFFIX
    from tca4rec.llm.run import process_state

    _check_fusion_options(args)
    record = evaluate_fused(args.run, split=args.split, limit=args.limit, beams=args.beams, batch_size=args.batch_size,
                            data=args.data, cf_run=args.cf_run, sample_seed=args.sample_seed)
    if process_state().is_main_process:
        print_metrics(record)
        print(f"wrote metrics_{args.split}.json and predictions_{args.split}.jsonl (plain decoding), and "
              f"metrics_{args.split}{FUSION_SUFFIX}.json and predictions_{args.split}{FUSION_SUFFIX}.jsonl "
              f"in {args.run}")
    return 0


def _check_fusion_options(args: argparse.Namespace) -> None:
    from tca4rec.errors import ConfigError
    from tca4rec.llm.decoding import parse_beta

    if args.beta == "auto" or parse_beta(args.beta) != 0 or args.length_normalize:
        raise ConfigError("--fusion re-ranks plain decoding: it takes no --beta or --length-normalize")


def _tune_beta(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.llm.decoding import tuned_beta_file
    from tca4rec.llm.run import process_state
    from tca4rec.llm.tune_beta import tune_beta

    record = tune_beta(args.run, split=args.split, rows=args.rows, grid=args.grid, cf_run=args.cf_run,
                       beams=args.beams, batch_size=args.batch_size, data=args.data, cf_lookahead=args.cf_lookahead)
    if process_state().is_main_process:
        table = Table(title=f"CF-guided decoding on {record['split']} ({record['rows']} rows, {record['beams']} beams, "
                            f"CF run: {record['cf_run']}, {record['cf_lookahead']} lookahead)")
        for column in ("beta", "HR@1", "HR@5", "HR@10", "NDCG@10"):
            table.add_column(column, justify="right")
        for row in record["table"]:
            mark = " *" if row["beta"] == record["best_beta"] else ""
            table.add_row(f"{row['beta']:g}{mark}", *(f"{row[m]:.4f}" for m in ("HR@1", "HR@5", "HR@10", "NDCG@10")))
        Console().print(table)
        print(f"chosen beta {record['best_beta']:g} (best {record['metric']}); stored in "
              f"{args.run}/{tuned_beta_file(args.cf_lookahead)} for --beta auto --cf-lookahead {args.cf_lookahead}")
        if 0 < record["best_beta"] == max(row["beta"] for row in record["table"]):
            print("note: the chosen beta is the largest tried; a grid that goes higher may find a better one")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.errors import ConfigError
    from tca4rec.llm.recommend import recommend

    if args.fusion:
        _check_fusion_options(args)
        if args.beams is not None:
            raise ConfigError("--fusion decodes the beams its fusion was fit on: it takes no --beams")
    if args.histories is not None:
        return _recommend_file(args)
    if args.out or args.skip_bad_rows:
        raise ConfigError("--out and --skip-bad-rows go with --histories FILE")
    if args.fusion:
        from tca4rec.fuse.recommend import recommend_fused

        recs = recommend_fused(args.run, args.history, k=args.k, cf_run=args.cf_run, data=args.data)
    else:
        recs = recommend(args.run, args.history, k=args.k, beams=args.beams, beta=args.beta, cf_run=args.cf_run,
                         length_normalize=args.length_normalize, data=args.data, cf_lookahead=args.cf_lookahead)
    table = Table(title=f"top {args.k} after {len(args.history)} item(s)")
    for column, justify in (("#", "right"), ("title", "left"), ("item id", "right"), ("score", "right")):
        table.add_column(column, justify=justify)
    for rank, rec in enumerate(recs, 1):
        table.add_row(str(rank), rec.title, str(rec.item_id), f"{rec.score:.3f}")
    Console().print(table)
    return 0


def _recommend_file(args: argparse.Namespace) -> int:
    from tca4rec.errors import ConfigError
    from tca4rec.llm.recommend_file import recommend_file
    from tca4rec.llm.run import process_state

    if not args.out:
        raise ConfigError("--histories needs --out FILE (JSON lines, one per user)")
    if args.fusion:
        from tca4rec.fuse.recommend import recommend_file_fused

        summary = recommend_file_fused(args.run, args.histories, args.out, k=args.k, cf_run=args.cf_run,
                                       batch_size=args.batch_size, skip_bad_rows=args.skip_bad_rows, data=args.data)
    else:
        summary = recommend_file(args.run, args.histories, args.out, k=args.k, beams=args.beams, beta=args.beta,
                                 cf_run=args.cf_run, batch_size=args.batch_size, skip_bad_rows=args.skip_bad_rows,
                                 data=args.data, length_normalize=args.length_normalize,
                                 cf_lookahead=args.cf_lookahead)
    if process_state().is_main_process:
        resumed = f" ({summary['resumed_after']} were already there)" if summary["resumed_after"] else ""
        bad = (f"; {summary['bad_rows']} bad row(s) skipped, listed in {summary['bad_rows_file']}"
               if summary["bad_rows_file"] else "")
        print(f"wrote the top {args.k} of {summary['rows']} users to {summary['out']}{resumed}{bad}")
    return 0


def _add_guidance_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beta", default="0", metavar="BETA|auto",
                   help="CF-guided decoding: token score + BETA * log q(token | trie node) from the CF model "
                        "(0 = plain decoding; auto = the value `tca4rec tune-beta` chose on valid rows)")
    p.add_argument("--cf-run", metavar="CF_RUN", help="CF run whose logits guide decoding (default: the run's teacher)")
    p.add_argument("--length-normalize", action="store_true",
                   help="rank titles by mean token score instead of the sum (default: sum, as D3 recommends)")
    _add_lookahead_option(p)


def _add_fusion_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fusion", action="store_true",
                   help="rank by the run's learned fusion (`tca4rec fuse fit`): its plain beams and the CF model's "
                        "top titles re-ranked; --cf-run then names the fusion's CF run (default: the one it was fit "
                        "with)")


def _add_lookahead_option(p: argparse.ArgumentParser) -> None:
    # No choices list here: it lives with the search (tca4rec.align.guidance), which loads torch;
    # the search refuses another value with a one-line error.
    p.add_argument("--cf-lookahead", default="max", dest="cf_lookahead", metavar="sum|max",
                   help="CF part of a partial title: the CF probability of its most probable title (max, "
                        "default: keeps the CF model's top titles in the beam; chosen on valid rows) or its "
                        "prefix's CF share (sum); finished titles are ranked the same way by both")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub) -> None:
    from tca4rec.llm.config import DEFAULT_GRID, DEFAULT_LLM, HOSTS, LOSS_FORMS, MSL_DEFAULT_TAU, TrainConfig

    d = TrainConfig(data="", out="")
    p = add_command(sub, "train", _train, "LoRA fine-tune an LLM recommender (host + TCA4Rec when --alpha > 0)", (
        "tca4rec train --data data/synth --host tallrec --cf runs/sasrec --alpha 0.1 --out runs/tca",
        "tca4rec train --data data/synth --host tallrec --alpha 0 --out runs/tallrec --max-steps 200",
        "tca4rec train --data data/synth --host llara --cf runs/sasrec --alpha 0.05 --out runs/llara --resume",
        "torchrun --nproc_per_node 2 -m tca4rec.cli train --data data/synth --host msl --alpha 0 --out runs/msl",
        "tca4rec train --data data/synth --alpha 0 --llm models/Llama-3.2-3B-Q4_K_M.gguf --out runs/llama",
        "tca4rec train --data data/synth --alpha 0 --llm models/pythia-160m --lora-targets query_key_value "
        "--out runs/pythia",
    ))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--host", choices=HOSTS, default=d.host, help="host recommender (default %(default)s)")
    p.add_argument("--cf", metavar="CF_RUN", help="frozen CF run folder (required for --alpha > 0 and for llara)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="TCA4Rec weight in [0, 1]; 0 = host alone")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    p.add_argument("--llm", default=DEFAULT_LLM,
                   help="a local Hugging Face causal-LM folder or a .gguf file (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="CF temperature T (default 1)")
    p.add_argument("--form", choices=LOSS_FORMS, default=d.form, help="soft loss form (default %(default)s)")
    p.add_argument("--tau", type=float, default=MSL_DEFAULT_TAU, help="msl masked-softmax temperature (default 4.5)")
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--no-group-by-length", action="store_true", dest="no_group_by_length",
                   help="batch rows in random order instead of grouping rows of similar length (more padding)")
    p.add_argument("--lora-targets", nargs="+", metavar="MODULE",
                   help="module names to adapt (a name or its last parts, e.g. q_proj or attn.c_proj); "
                        "default: every attention projection (q, k, v, output) of the architecture")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per-device batch size")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="gradient accumulation steps")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--max-minutes", type=float, dest="max_minutes",
                   help="wall-clock budget: stop once spent (the last step is evaluated and saved; the best is kept)")
    p.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N optimizer steps")
    p.add_argument("--eval-steps", type=int, help="valid HR@3 every N steps (default: --save-steps)")
    p.add_argument("--eval-rows", type=int, default=d.eval_rows, help="valid rows for model selection; 0 = none")
    p.add_argument("--eval-beams", type=int, default=d.eval_beams)
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience (evaluations)")
    p.add_argument("--logging-steps", type=int, default=d.logging_steps)
    p.add_argument("--train-limit", type=int, help="use the first N train rows only")
    p.add_argument("--seed", type=int, default=d.seed)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")

    p = add_command(sub, "evaluate", _evaluate, "evaluate an LLM run by constrained beam search (HR/NDCG@1,3,5,10)", (
        "tca4rec evaluate --run runs/tca --split test",
        "tca4rec evaluate --run runs/tca --split valid --limit 200 --beams 10",
        "tca4rec evaluate --run runs/tca --split test --beta auto",
        "tca4rec evaluate --run runs/tallrec --split test --beta 1 --cf-run runs/sasrec",
        "tca4rec evaluate --run runs/tca --split test --beta auto --cf-lookahead max",
        "tca4rec evaluate --run runs/tallrec --split test --fusion   # after `tca4rec fuse fit`",
        "torchrun --nproc_per_node 2 -m tca4rec.cli -- evaluate --run runs/tca --split test",
    ))
    p.add_argument("--run", required=True, help="LLM run folder")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--limit", type=_positive_int, help="first N rows only (with --sample-seed: N random rows)")
    p.add_argument("--sample-seed", type=int, dest="sample_seed",
                   help="evaluate a random sample of --limit rows drawn with this seed instead of the first ones")
    p.add_argument("--beams", type=_positive_int, default=10, help="beam width = ranked list length (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="prompts decoded together")
    p.add_argument("--data", help="dataset folder, if it moved since training")
    _add_guidance_options(p)
    _add_fusion_option(p)

    p = add_command(sub, "tune-beta", _tune_beta, "choose the CF weight beta of CF-guided decoding on valid rows", (
        "tca4rec tune-beta --run runs/tca --rows 100",
        "tca4rec tune-beta --run runs/tallrec --cf-run runs/sasrec --grid 0 0.5 1 2 --rows 50",
        "tca4rec tune-beta --run runs/tca --cf-lookahead max",
    ))
    p.add_argument("--run", required=True, help="LLM run folder (the choice is stored there)")
    p.add_argument("--split", default="valid", help="split to tune on (valid, the default; train and test are refused)")
    p.add_argument("--rows", type=_positive_int, default=100, help="first N rows of the split (default 100)")
    p.add_argument("--grid", type=float, nargs="+", default=list(DEFAULT_GRID), metavar="BETA",
                   help="beta values to try (default %(default)s)")
    p.add_argument("--cf-run", metavar="CF_RUN", help="CF run whose logits guide decoding (default: the run's teacher)")
    _add_lookahead_option(p)
    p.add_argument("--beams", type=_positive_int, default=10, help="beam width = ranked list length (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="prompts decoded together")
    p.add_argument("--data", help="dataset folder, if it moved since training")

    p = add_command(sub, "recommend", _recommend, "recommend items after a history of titles, or for a file of users", (
        'tca4rec recommend --run runs/tca --history "Lego City Police Car" "Uno Card Game"',
        'tca4rec recommend --run runs/tca --history "Uno Card Game" --k 5',
        "tca4rec recommend --run runs/tca --histories users.jsonl --out recs.jsonl --k 10",
        'tca4rec recommend --run runs/tallrec --history "Uno Card Game" --fusion',
        "tca4rec recommend --run runs/tca --histories users.csv --out recs.jsonl --skip-bad-rows bad.jsonl",
        "torchrun --nproc_per_node 2 -m tca4rec.cli -- recommend --run runs/tca --histories users.jsonl "
        "--out recs.jsonl",
    ))
    p.add_argument("--run", required=True, help="LLM run folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--history", nargs="+", metavar="TITLE", help="item titles, oldest first")
    source.add_argument("--histories", metavar="FILE",
                        help='JSON lines {"user": ..., "history": [titles or item ids]} (or a .csv with columns user '
                             "and history, a JSON list); with --out, resumable")
    p.add_argument("--out", metavar="FILE", help="with --histories: output JSON lines, one per user")
    p.add_argument("--skip-bad-rows", metavar="FILE", dest="skip_bad_rows",
                   help="with --histories: list bad input rows in FILE (JSON lines) and go on, instead of stopping")
    p.add_argument("--k", type=int, default=10, help="number of items (default 10)")
    p.add_argument("--beams", type=int, help="beam width (default max(k, 10); must be >= k)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="with --histories: rows decoded together")
    p.add_argument("--data", help="dataset folder, if it moved since training")
    _add_guidance_options(p)
    _add_fusion_option(p)

