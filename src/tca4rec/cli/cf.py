"""``tca4rec cf ...``: train, evaluate and list the collaborative-filtering models."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

from tca4rec.cli import add_command
from tca4rec.errors import ConfigError, RunError


def _parse_set(model_name: str, pairs: list[str], many: bool = False) -> dict:
    """``--set num_layers=3`` -> {"num_layers": 3}, typed by the model's config field.

    With ``many``, ``--set mask_prob=0.2,0.4`` -> {"mask_prob": [0.2, 0.4]} (a sweep grid).
    """
    from tca4rec.cf.zoo import cf_model_class

    config_class = cf_model_class(model_name).config_class
    types = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        if key in values:
            raise ConfigError(f"--set {pair!r}: {key} is set twice")
        try:
            typed = [types[key](part.strip()) for part in (raw.split(",") if many else [raw])]
        except ValueError:
            raise ConfigError(f"--set {pair!r}: {key} needs a {types[key].__name__}") from None
        values[key] = typed if many else typed[0]
    return values


def cmd_train(args) -> int:
    from tca4rec.cf import train_cf
    from tca4rec.data import load_dataset

    overrides = _parse_set(args.model, args.set or [])
    for name in ("seed", "hidden_size", "lr", "batch_size", "patience", "num_negatives"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    dataset = load_dataset(args.data)
    out = train_cf(dataset, args.model, args.out, config=overrides, epochs=args.epochs, limit=args.limit,
                   overwrite=args.overwrite, progress=not args.quiet)
    print(f"trained {args.model} on {dataset.name} -> {out}")
    return 0


def cmd_sweep(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.cf.sweep import sweep_cf
    from tca4rec.data import load_dataset

    values = _parse_set(args.model, args.set or [], many=True)
    grid = {key: v for key, v in values.items() if len(v) > 1}
    base = {key: v[0] for key, v in values.items() if len(v) == 1}
    if args.epochs is not None:
        base["epochs"] = args.epochs
    dataset = load_dataset(args.data)
    out = args.out or f"runs/sweep/{dataset.name}/{args.model}"
    rows = sweep_cf(dataset, args.model, out, grid, base=base, limit=args.limit, progress=not args.quiet)
    fixed = ", ".join(f"{k}={v}" for k, v in base.items()) or "defaults"
    table = Table(title=f"{args.model} on {dataset.name}: valid split ({fixed})")
    for column in ("setting", "valid NDCG@10", "valid HR@10", "best epoch", "epochs", "train s"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in rows:
        table.add_row(row["run"], f"{row['valid_NDCG@10']:.4f}", f"{row['valid_HR@10']:.4f}", str(row["best_epoch"]),
                      str(row["epochs_run"]), f"{row['train_seconds']:.0f}")
    Console().print(table)
    print(f"wrote {Path(out) / 'sweep.json'}")
    return 0


def cmd_evaluate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.cf import evaluate_cf
    from tca4rec.cf.run import read_run_config
    from tca4rec.data import load_dataset

    config = read_run_config(args.run)
    data = args.data or config["dataset"].get("root")
    if data is None:
        raise RunError(f"{args.run} does not record its dataset folder; pass --data")
    record = evaluate_cf(args.run, load_dataset(data), split=args.split, limit=args.limit,
                         sample_seed=args.sample_seed)
    table = Table(title=f"{record['model']} on {record['dataset']} / {args.split} ({record['rows']} rows)")
    table.add_column("K", justify="right")
    table.add_column("HR@K", justify="right")
    table.add_column("NDCG@K", justify="right")
    for k in (1, 3, 5, 10):
        table.add_row(str(k), f"{record['metrics'][f'HR@{k}']:.4f}", f"{record['metrics'][f'NDCG@{k}']:.4f}")
    Console().print(table)
    print(f"wrote {Path(args.run) / f'metrics_{args.split}.json'}")
    return 0


def cmd_models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.cf import CF_MODELS

    table = Table(title="CF models")
    table.add_column("name")
    table.add_column("description")
    table.add_column("options (--set KEY=VALUE)")
    base = {"hidden_size", "max_history", "dropout", "lr", "weight_decay", "batch_size", "epochs", "patience",
            "seed", "num_negatives"}
    for name, cls in sorted(CF_MODELS.items()):
        doc = " ".join((sys.modules[cls.__module__].__doc__ or "").split()).split(": ")[0].split(". ")[0]
        extra = [f"{f.name}={f.default}" for f in dataclasses.fields(cls.config_class) if f.name not in base]
        table.add_row(name, doc, " ".join(extra))
    Console().print(table)
    return 0


def register(sub) -> None:
    cf = sub.add_parser("cf", help="collaborative-filtering models (SASRec, BERT4Rec, ...)", description=__doc__)
    group = cf.add_subparsers(dest="cf_command", metavar="CF_COMMAND")

    p = add_command(group, "train", cmd_train, "train a CF model on a dataset's train rows into a run folder", (
        "tca4rec cf train --data data/synth --model sasrec --out runs/sasrec",
        "tca4rec cf train --data data/toys --model bert4rec --out runs/b4r --epochs 20 --set mask_prob=0.2",
        "tca4rec cf train --data data/toys --model mostpop --out runs/pop --overwrite",
    ))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--model", required=True, help="model name (see 'tca4rec cf models')")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping on valid NDCG@10)")
    p.add_argument("--limit", type=int, help="use only the first N train rows (and N valid rows)")
    p.add_argument("--seed", type=int)
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--patience", type=int, help="epochs without improvement before stopping")
    p.add_argument("--num-negatives", type=int, help="sampled-softmax negatives (0 = full softmax)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field, e.g. num_layers=3")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add_command(group, "sweep", cmd_sweep, "train a grid of settings and compare valid NDCG@10 (tune on your data)", (
        "tca4rec cf sweep --data data/toys --model bert4rec --set mask_prob=0.2,0.4,0.6 --set dropout=0.1,0.3",
        "tca4rec cf sweep --data data/toys --model sasrec --set num_negatives=0,1000 --set patience=5 --epochs 50",
    ))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--model", required=True, help="model name (see 'tca4rec cf models')")
    p.add_argument("--set", action="append", metavar="KEY=V1,V2",
                   help="config field and its values; one value fixes it for every setting")
    p.add_argument("--out", help="sweep folder, one run folder per setting (default runs/sweep/DATASET/MODEL)")
    p.add_argument("--epochs", type=int, help="maximum epochs of every setting (early stopping on valid NDCG@10)")
    p.add_argument("--limit", type=int, help="use only the first N train rows (and N valid rows)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = add_command(group, "evaluate", cmd_evaluate, "full-ranking HR/NDCG of a CF run on a split", (
        "tca4rec cf evaluate --run runs/sasrec --split test",
        "tca4rec cf evaluate --run runs/sasrec --split valid --data data/synth --limit 500",
    ))
    p.add_argument("--run", required=True, help="CF run folder")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--data", help="dataset folder (default: the one recorded in the run)")
    p.add_argument("--limit", type=int, help="evaluate only the first N rows of the split")
    p.add_argument("--sample-seed", type=int, dest="sample_seed",
                   help="evaluate a random sample of --limit rows drawn with this seed instead of the first ones")

    add_command(group, "models", cmd_models, "list the CF model zoo", ("tca4rec cf models",))
    cf.set_defaults(func=lambda args: cf.print_help() or 1)
