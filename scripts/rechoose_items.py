"""Apply the same-title item rule to committed LLM predictions (evidence issue, round 4, defect 1).

Until the rule existed, a generated title named the smallest item id with that title, so an
LLM row whose target shares its title with a smaller id could never be an item-level hit.
Decoding now names the item that the ranking's CF model scores highest (the guide of a fused
decoding, else the run's teacher) or, without one, the most popular in the train rows
(``tca4rec.llm.decoding.choose_items``). The titles of a ranking do not change, so neither do
title-level hits: this rewrites each file's ``items`` (atomically) and records the rule in the
metrics file beside it (``item_choice``); the metrics themselves are title-level and stay.

Usage (from the repository root, where the runs' recorded paths are relative to):
    python scripts/rechoose_items.py RUN_FOLDER [RUN_FOLDER ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from tca4rec.cf import load_cf_run
from tca4rec.data import load_dataset
from tca4rec.io import atomic_write_json, atomic_write_jsonl
from tca4rec.llm.decoding import TEACHER, choose_items, item_logits
from tca4rec.llm.evaluate import ITEM_CHOICE, POPULARITY_CHOICE

BATCH = 256


def rechoose(run: Path) -> list[str]:
    """Rewrite every ``predictions_*.jsonl`` of the LLM run folder ``run``; one line per file."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]
    dataset = load_dataset(config["data"])
    done = []
    for metrics_path in sorted(run.glob("metrics_*.json")):
        predictions_path = run / metrics_path.name.replace("metrics_", "predictions_").replace(".json", ".jsonl")
        record = json.loads(metrics_path.read_text(encoding="utf-8"))
        guide = record.get("guide_cf")
        cf_path = (config["cf"] if guide == TEACHER else guide) if guide else config["cf"]
        rows = [json.loads(line) for line in predictions_path.read_text(encoding="utf-8").splitlines() if line]
        split = dataset.split(record["split"])
        row_ids = np.array([p["row"] for p in rows], dtype=np.int64)
        items = np.array([p["items"] for p in rows], dtype=np.int64)
        if cf_path is None:
            chosen = choose_items(dataset, items, None)
        else:
            model = load_cf_run(cf_path, dataset).eval()
            chosen = np.concatenate([choose_items(dataset, items[s:s + BATCH], item_logits(
                model, torch.tensor(split.users[row_ids[s:s + BATCH]]), torch.tensor(split.histories[row_ids[s:s + BATCH]])))
                for s in range(0, len(rows), BATCH)])
        assert (dataset.title_group[chosen] == dataset.title_group[items]).all(), "a title changed"
        changed = int((chosen != items).sum())
        for p, new in zip(rows, chosen):
            p["items"] = [int(i) for i in new]
            p["titles"] = [dataset.titles[i] if i > 0 else None for i in p["items"]]
        atomic_write_jsonl(predictions_path, rows)
        record["item_choice"] = POPULARITY_CHOICE if cf_path is None else ITEM_CHOICE
        atomic_write_json(metrics_path, record)
        done.append(f"{predictions_path}: {changed} of {items.size} items changed ({record['item_choice']}"
                    + (f": {cf_path})" if cf_path else ")"))
    return done


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for folder in sys.argv[1:]:
        for line in rechoose(Path(folder)):
            print(line)
