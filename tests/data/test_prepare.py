"""Raw-data pipeline: Amazon 2018 JSON lines and generic CSV, checked against slow references."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tca4rec.data import load_dataset, save_dataset
from tca4rec.data.importer import ImportColumns, import_csv
from tca4rec.data.prepare import PrepareConfig, build_splits, clean_title, prepare_amazon
from tca4rec.errors import ConfigError, DatasetError


def reference_rows(sequences, times, max_history):
    """Slow, obvious: every (user, history, target, time) row, sorted by time."""
    rows = []
    for user, (items, stamps) in enumerate(zip(sequences, times), start=1):
        for k in range(1, len(items)):
            rows.append((int(stamps[k]), user, k, [int(i) for i in items[max(0, k - max_history):k]], int(items[k])))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return rows


def test_build_splits_matches_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        users = int(rng.integers(2, 12))
        sequences = [rng.integers(1, 30, size=rng.integers(3, 15)) for _ in range(users)]
        times = [np.sort(rng.integers(0, 50, size=len(s))) for s in sequences]
        max_history = int(rng.integers(1, 6))
        splits = build_splits(sequences, times, max_history, (0.6, 0.2))
        expected = reference_rows(sequences, times, max_history)
        got = []
        for name in ("train", "valid", "test"):
            s = splits[name]
            got += [(int(s.timestamps[r]), int(s.users[r]), s.history(r), int(s.targets[r])) for r in range(len(s))]
        assert got == [(t, u, h, i) for t, u, _, h, i in expected]
        assert len(splits["train"]) == int(0.6 * len(expected))


def test_build_splits_refuses_an_empty_split():
    with pytest.raises(DatasetError, match="only 2 rows"):
        build_splits([np.array([1, 2, 3])], [np.array([1, 2, 3])], 10, (0.8, 0.1))


def test_clean_title():
    assert clean_title("  Barbie &amp; Ken<br/> Doll\n\tSet ") == "Barbie & Ken Doll Set"
    assert clean_title("x" * 150) == "x" * 100
    assert clean_title("<span></span>") == "" and clean_title(None) == "" and clean_title(["a"]) == ""


# ---- a small raw Amazon 2018 category in the exact file format --------------------------

def write_jsonl_gz(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def raw_amazon(tmp_path: Path, seed: int = 0) -> tuple[Path, Path, list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    asins = [f"B{k:09d}" for k in range(40)]
    meta = []
    for k, asin in enumerate(asins):
        record = {"asin": asin, "brand": f"Brand{k % 5}", "title": f"Toy &amp; Game {k // 2 if k < 6 else k}  Deluxe"}
        if k == 7:
            record["title"] = "<div>  </div>"  # no usable title: dropped
        if k == 8:
            del record["title"]
        if k == 9:
            record["title"] = "Long " * 40
        meta.append(record)
    reviews = []
    for user in range(60):
        for asin in rng.choice(asins, size=rng.integers(1, 12), replace=True):  # repeats are dropped
            reviews.append({"reviewerID": f"U{user:03d}", "asin": str(asin), "overall": 5.0,
                            "unixReviewTime": int(rng.integers(1_300_000_000, 1_500_000_000))})
    return (write_jsonl_gz(tmp_path / "Toys.json.gz", reviews), write_jsonl_gz(tmp_path / "meta_Toys.json.gz", meta),
            reviews, meta)


def reference_interactions(reviews, meta, k):
    """Slow reference of cleaning, duplicate merging, dedup and iterative k-core."""
    canonical, first_with_title = {}, {}
    for m in meta:
        title = clean_title(m.get("title"))
        if title and m["asin"] not in canonical:
            canonical[m["asin"]] = first_with_title.setdefault(title, m["asin"])
    events = {}
    for r in sorted(reviews, key=lambda r: (r["unixReviewTime"], r["reviewerID"], canonical.get(r["asin"], ""))):
        if r["asin"] in canonical:
            events.setdefault((r["reviewerID"], canonical[r["asin"]]), r["unixReviewTime"])
    while True:
        users = Counter(u for u, _ in events)
        items = Counter(i for _, i in events)
        kept = {key: t for key, t in events.items() if users[key[0]] >= k and items[key[1]] >= k}
        if len(kept) == len(events):
            return kept
        events = kept


def interactions_of(ds) -> dict[tuple[int, int], int]:
    """(uid, iid) -> time of every interaction, recovered from the rows (first items from histories)."""
    out = {}
    for split in ds.splits.values():
        for r in range(len(split)):
            out[(int(split.users[r]), int(split.targets[r]))] = int(split.timestamps[r])
    return out


def test_prepare_amazon_matches_reference(tmp_path):
    reviews_path, meta_path, reviews, meta = raw_amazon(tmp_path)
    ds = prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=3, max_history=4))
    expected = reference_interactions(reviews, meta, 3)
    assert 100 < len(expected) < len(reviews)  # the filters drop something and keep enough
    users = sorted({u for u, _ in expected})
    asin_of = ds.raw_ids
    got = {(users[u - 1], asin_of[i]): t for (u, i), t in interactions_of(ds).items()}
    # Rows cover every interaction except each user's first (which only appears in histories).
    firsts = {u: min((t, i) for (uu, i), t in expected.items() if uu == u) for u in users}
    assert got == {key: t for key, t in expected.items() if (key[1] != firsts[key[0]][1])}
    assert ds.num_users == len(users) and ds.name == "Toys"
    # k-core, dense ids, cleaned and unique titles.
    assert min(Counter(u for u, _ in expected).values()) >= 3 and min(Counter(i for _, i in expected).values()) >= 3
    assert sorted(asin_of[1:]) == sorted({i for _, i in expected})
    assert all(t and len(t) <= 100 and "&amp;" not in t and "  " not in t for t in ds.titles[1:])
    assert len(set(ds.titles[1:])) == ds.num_items
    assert "B000000001" not in asin_of  # its title duplicates B000000000's: merged into it
    # Histories time-ordered per user; splits time-ordered.
    splits = [ds.splits[k] for k in ("train", "valid", "test")]
    for a, b in zip(splits, splits[1:]):
        assert a.timestamps.max() <= b.timestamps.min()
    time_of = {(users[u - 1], asin_of[i]): t for (u, i), t in interactions_of(ds).items()}
    for s in splits:
        for r in range(len(s)):
            user = users[s.users[r] - 1]
            stamps = [time_of.get((user, asin_of[i]), firsts[user][0]) for i in s.history(r)]
            assert stamps == sorted(stamps) and stamps[-1] <= s.timestamps[r]
    # Round trip through the release format.
    loaded = load_dataset(save_dataset(ds, tmp_path / "out"))
    assert loaded.titles == ds.titles and loaded.raw_ids == ds.raw_ids and loaded.brands == ds.brands
    for name in ds.splits:
        np.testing.assert_array_equal(loaded.splits[name].histories, ds.splits[name].histories)


def test_sample_train_is_seeded_subset(tmp_path):
    reviews_path, meta_path, _, _ = raw_amazon(tmp_path)
    full = prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=3))
    a = prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=3, sample_train=20, seed=1))
    b = prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=3, sample_train=20, seed=1))
    c = prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=3, sample_train=20, seed=2))
    assert len(a.splits["train"]) == 20 and np.array_equal(a.splits["train"].targets, b.splits["train"].targets)
    assert not np.array_equal(a.splits["train"].histories, c.splits["train"].histories)
    full_rows = {(int(u), int(t), int(s)) for u, t, s in zip(full.splits["train"].users, full.splits["train"].targets,
                                                         full.splits["train"].timestamps)}
    sample = a.splits["train"]
    assert {(int(u), int(t), int(s)) for u, t, s in zip(sample.users, sample.targets, sample.timestamps)} <= full_rows
    assert np.all(np.diff(sample.timestamps) >= 0)
    assert len(a.splits["test"]) == len(full.splits["test"])


def test_csv_import_equals_amazon_front_end(tmp_path):
    reviews_path, meta_path, reviews, meta = raw_amazon(tmp_path)
    pd.DataFrame({"userId": [r["reviewerID"] for r in reviews], "movieId": [r["asin"] for r in reviews],
                  "ts": [r["unixReviewTime"] for r in reviews]}).to_csv(tmp_path / "Toys.csv", index=False)
    pd.DataFrame({"movieId": [m["asin"] for m in meta], "name": [m.get("title", "") for m in meta],
                  "genre": [m["brand"] for m in meta]}).to_csv(tmp_path / "movies.csv", index=False)
    config = PrepareConfig(k_core=3)
    imported = import_csv(tmp_path / "Toys.csv", tmp_path / "movies.csv",
                          ImportColumns(user="userId", item="movieId", time="ts", title="name", brand="genre"), config)
    amazon = prepare_amazon(reviews_path, meta_path, config)
    assert imported.titles == amazon.titles and imported.brands == amazon.brands and imported.raw_ids == amazon.raw_ids
    for name in amazon.splits:
        for field in ("users", "histories", "targets", "timestamps"):
            np.testing.assert_array_equal(getattr(imported.splits[name], field), getattr(amazon.splits[name], field))


def test_csv_import_errors(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu1,i1,5\nu1,i2,soon\n")
    (tmp_path / "items.csv").write_text("item_id,title\ni1,A\ni2,B\n")
    with pytest.raises(DatasetError) as info:
        import_csv(tmp_path / "log.csv", tmp_path / "items.csv")
    assert (info.value.row, info.value.field) == (2, "timestamp") and "log.csv" in str(info.value)
    with pytest.raises(DatasetError, match="missing column") as info:
        import_csv(tmp_path / "log.csv", tmp_path / "items.csv", ImportColumns(title="name"))
    assert info.value.field == "name" and "items.csv" in str(info.value)


def test_csv_import_counts_conflicting_titles_and_unknown_items_or_refuses_them(tmp_path):
    users = [f"u{u}" for u in range(8) for _ in range(6)]
    items = [f"i{(u + k) % 7}" for u in range(8) for k in range(6)]
    items[9] = items[20] = "ghost"  # two events of an item the catalog does not list
    times = list(range(len(users)))
    pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times}).to_csv(tmp_path / "log.csv", index=False)
    catalog = [f"i{i},Title {i}" for i in range(7)] + ["i3,Another title", "i4,Title 4"]  # i3 conflicts, i4 repeats
    (tmp_path / "items.csv").write_text("item_id,title\n" + "\n".join(catalog) + "\n")
    warnings: list[str] = []
    ds = import_csv(tmp_path / "log.csv", tmp_path / "items.csv", config=PrepareConfig(k_core=2), warn=warnings.append)
    assert len(warnings) == 2
    assert "items.csv: 1 item id(s) listed again with another title" in warnings[0] and "row 8" in warnings[0]
    assert "log.csv: 2 event(s) name 1 item(s) missing" in warnings[1] and "row 10" in warnings[1]
    assert "Title 3" in ds.titles and "Another title" not in ds.titles  # the first title is kept
    with pytest.raises(DatasetError) as info:
        import_csv(tmp_path / "log.csv", tmp_path / "items.csv", strict=True)
    assert (info.value.row, info.value.field) == (8, "title") and "items.csv" in str(info.value)
    (tmp_path / "items.csv").write_text("item_id,title\n" + "\n".join(catalog[:7]) + "\n")
    with pytest.raises(DatasetError) as info:
        import_csv(tmp_path / "log.csv", tmp_path / "items.csv", strict=True)
    assert (info.value.row, info.value.field) == (10, "item_id") and "log.csv" in str(info.value)


def test_nothing_survives_k_core(tmp_path):
    reviews_path, meta_path, _, _ = raw_amazon(tmp_path)
    with pytest.raises(DatasetError, match="no interactions survive"):
        prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=50))
    with pytest.raises(ConfigError):
        prepare_amazon(reviews_path, meta_path, PrepareConfig(k_core=0))
    with pytest.raises(ConfigError, match="--seed: -1 is not a seed"):  # numpy's ValueError, after the reading
        PrepareConfig(sample_train=5, seed=-1)


@pytest.mark.parametrize("lines,row,field,match", [
    (['{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}', "{not json"], 2, None, "not valid JSON"),
    (['{"asin": "b", "unixReviewTime": 1}'], 1, "reviewerID", "missing field"),
    (['{"reviewerID": "a", "asin": "b", "unixReviewTime": "May 5"}'], 1, "unixReviewTime", "unexpected value"),
    (['{"reviewerID": "a", "asin": 7, "unixReviewTime": 1}'], 1, "asin", "unexpected value"),
    (['["a", "b"]'], 1, None, "JSON object"),
    (['{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}', "[" * 5000 + "]" * 5000], 2, None,
     "nested too deeply"),
])
def test_bad_raw_reviews(tmp_path, lines, row, field, match):
    _, meta_path, _, _ = raw_amazon(tmp_path)
    path = tmp_path / "bad.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=match) as info:
        prepare_amazon(path, meta_path)
    assert (info.value.row, info.value.field) == (row, field) and "bad.json.gz" in str(info.value)


def test_a_byte_order_mark_before_the_raw_reviews_changes_nothing(tmp_path):
    reviews_path, meta_path, _, _ = raw_amazon(tmp_path)
    marked = tmp_path / "marked.json.gz"
    marked.write_bytes(gzip.compress(b"\xef\xbb\xbf" + gzip.decompress(reviews_path.read_bytes())))
    plain, bom = prepare_amazon(reviews_path, meta_path), prepare_amazon(marked, meta_path)
    assert bom.titles == plain.titles
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(bom.split(split).histories, plain.split(split).histories)
        np.testing.assert_array_equal(bom.split(split).targets, plain.split(split).targets)


def test_unreadable_raw_files(tmp_path):
    reviews_path, meta_path, _, _ = raw_amazon(tmp_path)
    (tmp_path / "plain.json.gz").write_text('{"asin": "x"}\n')  # not gzip
    data = reviews_path.read_bytes()
    (tmp_path / "cut.json.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "latin1.json.gz").write_bytes(gzip.compress(b'{"asin": "\xe9"}\n'))
    for bad, match in (("plain.json.gz", "cannot read"), ("cut.json.gz", "cannot read|not valid JSON"),
                       ("latin1.json.gz", "not UTF-8"), ("absent.json.gz", "missing file")):
        with pytest.raises(DatasetError, match=match) as info:
            prepare_amazon(reviews_path, tmp_path / bad)
        assert bad in str(info.value)
