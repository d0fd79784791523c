"""``tca4rec data stats | synth | prepare | import``: inspect, generate and build datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tca4rec.cli import add_command
from tca4rec.errors import DatasetError


def _refuse_existing(out: str) -> None:
    """Fail before minutes of work, not after: datasets are never overwritten."""
    if Path(out).exists():
        raise DatasetError("output folder already exists; choose a new one", file=out)


def _stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tca4rec.data import load_dataset
    from tca4rec.data.stats import dataset_stats

    stats = dataset_stats(load_dataset(args.dir))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    table = Table(title=f"{stats['name']}: {stats['num_users']:,} users, {stats['num_items']:,} items")
    table.add_column("split")
    table.add_column("rows", justify="right")
    table.add_column("users", justify="right")
    table.add_column("history mean / min / max", justify="right")
    for name, split in stats["splits"].items():
        h = split["history_length"]
        lengths = f"{h['mean']:.2f} / {h['min']:g} / {h['max']:g}"
        table.add_row(name, f"{split['rows']:,}", f"{split['users']:,}", lengths)
    console = Console()
    console.print(table)
    chars, words = stats["title_chars"], stats["title_words"]
    console.print(f"title chars mean {chars['mean']:.1f} (min {chars['min']:g}, max {chars['max']:g}); "
                  f"words mean {words['mean']:.1f} (min {words['min']:g}, max {words['max']:g})")
    console.print(f"duplicate titles: {stats['duplicate_title_items']:,} items repeat one of "
                  f"{stats['duplicate_title_groups']:,} titles; {stats['brands']:,} brands")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from tca4rec.data.synth import SynthConfig, write_synthetic_dataset

    _refuse_existing(args.out)
    config = SynthConfig(num_items=args.items, num_users=args.users, seed=args.seed, max_history=args.max_history)
    out = write_synthetic_dataset(args.out, config)
    print(f"wrote a synthetic dataset ({args.items} items, {args.users} users, seed {args.seed}) -> {out}")
    return 0


def _prepare_config(args: argparse.Namespace):
    from tca4rec.data.prepare import PrepareConfig

    return PrepareConfig(k_core=args.k_core, max_history=args.max_history, sample_train=args.sample_train,
                         seed=args.seed, split_fractions=(args.train_fraction, args.valid_fraction))


def _report(ds, out: Path) -> None:
    rows = ", ".join(f"{len(s):,} {name}" for name, s in ds.splits.items())
    print(f"wrote {ds.num_items:,} items, {ds.num_users:,} users, rows: {rows} -> {out}")


def _prepare(args: argparse.Namespace) -> int:
    from tca4rec.data import save_dataset
    from tca4rec.data.prepare import prepare_amazon

    _refuse_existing(args.out)
    ds = prepare_amazon(args.reviews, args.meta, _prepare_config(args))
    _report(ds, save_dataset(ds, args.out))
    return 0


def _import(args: argparse.Namespace) -> int:
    from tca4rec.data import save_dataset
    from tca4rec.data.importer import ImportColumns, import_csv, import_recbole

    _refuse_existing(args.out)
    columns = ImportColumns(user=args.user_col, item=args.item_col, time=args.time_col, title=args.title_col,
                            brand=args.brand_col, items_item=args.items_item_col)
    recbole = args.format == "recbole" or (args.format is None and Path(args.interactions).suffix == ".inter")
    ds = (import_recbole if recbole else import_csv)(args.interactions, args.items, columns, _prepare_config(args),
                                                     strict=args.strict)
    _report(ds, save_dataset(ds, args.out))
    return 0


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="new dataset folder (must not exist)")
    p.add_argument("--k-core", type=int, default=5, help="min interactions per user and item (default 5)")
    p.add_argument("--max-history", type=int, default=10, help="history length of each row (default 10)")
    p.add_argument("--train-fraction", type=float, default=0.8, help="earliest rows for train (default 0.8)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="next rows for valid (default 0.1)")
    p.add_argument("--sample-train", type=int, default=None, help="keep a random sample of N train rows")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample-train (default 0)")


def register(sub) -> None:
    data = sub.add_parser("data", help="datasets: stats, synth, prepare, import", description=__doc__)
    group = data.add_subparsers(dest="data_command", metavar="DATA")

    p = add_command(group, "stats", _stats, "summarize a dataset folder (release format)",
                    ("tca4rec data stats data/synth", "tca4rec data stats data/Toys_and_Games --json"))
    p.add_argument("dir", help="dataset folder (item.csv, train*.csv, valid*.csv, test*.csv, data_stat.json)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")

    p = add_command(group, "synth", _synth, "write a seeded synthetic dataset in the release format",
                    ("tca4rec data synth --out data/synth", "tca4rec data synth --out data/big --items 20000 "
                     "--users 15000 --seed 1"))
    p.add_argument("--out", required=True, help="new dataset folder (must not exist)")
    p.add_argument("--items", type=int, default=1500, help="number of items (default 1500)")
    p.add_argument("--users", type=int, default=1000, help="number of users (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-history", type=int, default=10, help="history length of each row (default 10)")

    p = add_command(group, "prepare", _prepare, "build a dataset from raw Amazon Reviews 2018 files",
                    ("tca4rec data prepare --reviews Toys_and_Games.json.gz --meta meta_Toys_and_Games.json.gz "
                     "--out data/toys",
                     "tca4rec data prepare --reviews Office_Products.json.gz --meta meta_Office_Products.json.gz "
                     "--out data/office --sample-train 10000 --seed 0"))
    p.add_argument("--reviews", required=True, help="<Category>.json.gz (reviewerID, asin, unixReviewTime)")
    p.add_argument("--meta", required=True, help="meta_<Category>.json.gz (asin, title, brand)")
    _add_pipeline_options(p)

    p = add_command(group, "import", _import, "build a dataset from CSV files (MovieLens-style) or RecBole atomic files",
                    ("tca4rec data import --interactions ratings.csv --items movies.csv --out data/ml "
                     "--user-col userId --item-col movieId --time-col timestamp --title-col title",
                     "tca4rec data import --interactions ml-1m.inter --items ml-1m.item --out data/ml1m "
                     "--title-col movie_title"))
    p.add_argument("--interactions", required=True, help="CSV, or RecBole .inter, with one row per user-item event")
    p.add_argument("--items", required=True, help="CSV, or RecBole .item, with one row per item (key, title, brand)")
    p.add_argument("--format", choices=("csv", "recbole"), default=None,
                   help="file format (default: recbole when --interactions ends in .inter, else csv)")
    p.add_argument("--user-col", default="user_id", help="user column of --interactions (default user_id)")
    p.add_argument("--item-col", default="item_id", help="item column of --interactions (default item_id)")
    p.add_argument("--time-col", default="timestamp",
                   help="time column: integer (CSV) or seconds, floored (RecBole) (default timestamp)")
    p.add_argument("--title-col", default="title", help="title column of --items (default title)")
    p.add_argument("--brand-col", default=None, help="optional brand/category column of --items")
    p.add_argument("--items-item-col", default=None, help="item column of --items (default: --item-col)")
    p.add_argument("--strict", action="store_true",
                   help="refuse items listed twice with different titles and events of unknown items "
                        "(default: warn with their counts, keep the first title, drop those events)")
    _add_pipeline_options(p)
