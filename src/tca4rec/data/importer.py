"""Build a release-format dataset from generic CSV files (MovieLens-style logs).

Two files: interactions (one row per user-item event with an integer time) and items
(item key, title, optional brand). Column names are options, so most public logs import
without editing. Everything after reading goes through the shared pipeline
(``prepare.build_dataset``), so k-core, title cleaning, duplicate merging and the time
split behave exactly as for the Amazon files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tca4rec.data.dataset import RecDataset
from tca4rec.data.formats import int_column, read_csv_table
from tca4rec.data.prepare import PrepareConfig, build_dataset


@dataclass(frozen=True)
class ImportColumns:
    """Column names in the two CSV files."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    title: str = "title"
    brand: str | None = None  # optional brand/category column of the items file
    items_item: str | None = None  # item key column of the items file (default: ``item``)


def import_csv(interactions: str | Path, items: str | Path, columns: ImportColumns = ImportColumns(),
               config: PrepareConfig = PrepareConfig()) -> RecDataset:
    """Read the two CSV files and run the shared pipeline; errors name file, row and column."""
    interactions, items = Path(interactions), Path(items)
    log = read_csv_table(interactions, (columns.user, columns.item, columns.time))
    item_key = columns.items_item or columns.item
    catalog = read_csv_table(items, tuple(c for c in (item_key, columns.title, columns.brand) if c))
    events = pd.DataFrame({
        "user": log[columns.user].str.strip(),
        "item": log[columns.item].str.strip(),
        "time": int_column(log, columns.time, interactions, 0, None),
    })
    products = pd.DataFrame({
        "item": catalog[item_key].str.strip(),
        "title": catalog[columns.title],
        "brand": catalog[columns.brand] if columns.brand else "",
    })
    return build_dataset(events, products, interactions.stem, config)
