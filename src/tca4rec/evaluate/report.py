"""Compare finished runs: tables, significance, collaborative consistency, report folders.

Works on run folders alone (CF or LLM, written by ``tca4rec cf evaluate`` / ``tca4rec
evaluate``): each has ``config.json``, ``metrics_<split>.json`` and
``predictions_<split>.jsonl`` (per row: row, user, target, items, scores). Per-row hit
ranks are recomputed from the predictions so that any two runs on the same rows can be
compared pairwise (paired bootstrap) and their top-10 lists intersected (collaborative
consistency: the share of the LLM's top-10 items that are also in the CF model's top-10
for the same row).

What a reviewer asks next is reported beside every headline: metrics on the **novel** rows
(the target's title is not already in the history: repeating the history is what a
sequential CF model does best), **item-level** hits (the exact target item, no credit for an
item with the identical title; the title-level hit stays the headline, as in the paper's
release), and three p values per paired comparison (``paired_bootstrap``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tca4rec.errors import RunError
from tca4rec.evaluate.metrics import KS, bootstrap_ci, hit_ranks, paired_bootstrap, paired_difference, summarize
from tca4rec.validate import is_int, loads_json, read_jsonl

METRIC_NAMES = tuple(f"{m}@{k}" for k in KS for m in ("HR", "NDCG"))


@dataclass
class RunResult:
    """One evaluated run on one split, with everything a report needs."""

    label: str
    run_dir: Path
    config: dict
    rows: np.ndarray  # int64 [R] row indices into the split
    targets: np.ndarray  # int64 [R]
    topk: np.ndarray  # int64 [R, 10] item ids, 0 = empty
    ranks: np.ndarray  # int64 [R] 1-based hit rank, 0 = miss
    metrics: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    loss_curve: list[tuple[float, float]] = field(default_factory=list)  # (step, loss)
    item_ranks: np.ndarray | None = None  # int64 [R] rank of the exact target item (no identical-title credit)
    repeat: np.ndarray | None = None  # bool [R]: the target's title is already in the row's history
    beams: int | None = None  # beam width of an LLM run's decoding (None: a CF run's full ranking)

    @property
    def novel(self) -> np.ndarray:
        """bool [R]: rows whose target title is not in the history."""
        if self.repeat is None:
            raise RunError(f"{self.label}: novel rows need the rows' histories (load_run_result(histories=...))")
        return ~self.repeat


def _read_json(path: Path) -> dict:
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing: is the run finished and evaluated?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON: {e}") from None


def _numbered_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of every non-blank line."""
    if not path.is_file():
        raise RunError(f"{path} is missing: evaluate the run first")
    return read_jsonl(path)


def _prediction_arrays(path: Path, top: int, num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows int64 [R], targets int64 [R] and the top items int64 [R, top] (0 = empty slot) of a
    predictions file, each line checked: a damaged line is named, never counted as a miss or
    (a negative or repeated row) paired with another row."""
    records = _numbered_jsonl(path)
    if not records:
        raise RunError(f"{path} has no rows")
    rows, targets = np.empty(len(records), np.int64), np.empty(len(records), np.int64)
    topk = np.zeros((len(records), top), dtype=np.int64)
    for i, (n, record) in enumerate(records):
        where = f"{path}, line {n}"
        try:
            row, target, items = record["row"], record["target"], record["items"]
        except (KeyError, TypeError):
            raise RunError(f"{where}: a prediction needs the fields row, target and items") from None
        if not is_int(row) or row < 0:
            raise RunError(f"{where}: row {row!r} is not a row number")
        if not is_int(target) or not 1 <= target <= num_items:
            raise RunError(f"{where}: target {target!r} is not an item of the catalog (1..{num_items})")
        if not isinstance(items, list) or not all(is_int(x) and 0 <= x <= num_items for x in items):
            raise RunError(f"{where}: items must be a list of item ids of the catalog (1..{num_items}, 0 for none)")
        ranked = [x for x in items[:top] if x > 0]
        rows[i], targets[i], topk[i, :len(ranked)] = row, target, ranked
    unique, counts = np.unique(rows, return_counts=True)
    if (counts > 1).any():
        raise RunError(f"{path}: row {unique[counts > 1][0]} appears {counts.max()} times")
    return rows, targets, topk


def _loss_curve(run_dir: Path) -> list[tuple[float, float]]:
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    curve = []
    for _, rec in _numbered_jsonl(path):
        if "loss" in rec and rec["loss"] is not None:
            x = rec.get("step", rec.get("epoch", len(curve)))
            curve.append((float(x), float(rec["loss"])))
    return curve


def load_run_result(run_dir: str | Path, split: str, title_group: np.ndarray, label: str | None = None,
                    top: int = 10, suffix: str = "", histories: np.ndarray | None = None,
                    dataset_fingerprint: str | None = None) -> RunResult:
    """Read a finished, evaluated run. ``title_group`` is the dataset's (identical-title hits);
    ``suffix``: a decoding variant's predictions (``tca4rec.llm.evaluate.decoding_suffix``);
    ``histories``: the whole split's [rows, H] history ids, to tell repeat rows from novel ones;
    ``dataset_fingerprint``: that dataset's, refusing a run trained on another one (whose rows
    and titles these would silently misread)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist")
    config = _read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise RunError(f"{run_dir / 'config.json'} is not a run record (a JSON object)")
    dataset = config.get("dataset")  # a CF run's; an LLM run's fingerprint sits at the top
    trained_on = config.get("dataset_fingerprint") or (dataset.get("fingerprint") if isinstance(dataset, dict)
                                                       else None)
    if dataset_fingerprint is not None and trained_on is not None and trained_on != dataset_fingerprint:
        raise RunError(f"{run_dir} was trained on another dataset than the one given (catalog fingerprint "
                       f"{trained_on}, given {dataset_fingerprint}): pass the run's own --data")
    rows, targets, topk = _prediction_arrays(run_dir / f"predictions_{split}{suffix}.jsonl", top,
                                             len(title_group) - 1)
    order = np.argsort(rows, kind="stable")
    rows, targets, topk = rows[order], targets[order], topk[order]
    ranks = hit_ranks(topk, targets, title_group)
    repeat = None
    if histories is not None:
        if rows.max() >= len(histories):
            raise RunError(f"{run_dir}: predictions name row {rows.max()}, but the {split} split has {len(histories)}")
        history = histories[rows]  # [R, H], 0 = padding
        repeat = ((title_group[history] == title_group[targets][:, None]) & (history > 0)).any(axis=1)
    metrics_path = run_dir / f"metrics_{split}{suffix}.json"
    beams = _read_json(metrics_path).get("beams") if metrics_path.is_file() else None
    return RunResult(label=label or run_dir.name, run_dir=run_dir, config=config, rows=rows, targets=targets,
                     topk=topk, ranks=ranks, metrics=summarize(ranks), beams=beams,
                     ci95={k: tuple(v) for k, v in bootstrap_ci(ranks).items()}, loss_curve=_loss_curve(run_dir),
                     item_ranks=hit_ranks(topk, targets, np.arange(len(title_group))), repeat=repeat)


def restrict_rows(r: RunResult, row_ids: np.ndarray) -> RunResult:
    """``r`` over only its rows numbered in ``row_ids``, metrics and CIs recomputed: a report on a
    subset of the rows, such as those no earlier look has seen."""
    keep = np.isin(r.rows, row_ids)
    if not keep.any():
        raise RunError(f"{r.label}: none of its rows is among the {len(row_ids)} rows asked for")
    ranks = r.ranks[keep]
    return dataclasses.replace(
        r, rows=r.rows[keep], targets=r.targets[keep], topk=r.topk[keep], ranks=ranks, metrics=summarize(ranks),
        ci95={k: tuple(v) for k, v in bootstrap_ci(ranks).items()},
        item_ranks=None if r.item_ranks is None else r.item_ranks[keep],
        repeat=None if r.repeat is None else r.repeat[keep])


def _common_rows(a: RunResult, b: RunResult) -> tuple[np.ndarray, np.ndarray]:
    common, ia, ib = np.intersect1d(a.rows, b.rows, assume_unique=True, return_indices=True)
    if len(common) == 0:
        raise RunError(f"runs {a.label} and {b.label} share no evaluated rows")
    if not np.array_equal(a.targets[ia], b.targets[ib]):
        raise RunError(f"runs {a.label} and {b.label} disagree on the targets of the same rows: "
                       "were they evaluated on the same dataset and split?")
    return ia, ib


ROW_SETS = ("all", "novel")


def check_same_depth(results: list[RunResult]) -> None:
    """RunError if the runs' ranked lists come from different beam widths: a 3-beam run's
    "HR@10" is its HR@3, so the comparison would be meaningless (a CF run ranks everything)."""
    depth = {r.label: min(r.beams or max(KS), max(KS)) for r in results}
    if len(set(depth.values())) > 1:
        shown = ", ".join(f"{label}: {d}" for label, d in depth.items())
        raise RunError(f"these runs were decoded with different beam widths ({shown}; a CF run ranks all items): "
                       "metrics at K above a run's beams are not comparable. Evaluate them with the same --beams "
                       f"(at least {max(KS)})")


def compare(a: RunResult, b: RunResult, metric: str = "NDCG@10", rows: str = "all") -> dict:
    """Paired test of b - a on their common rows (``rows="novel"``: only those whose target
    title is not in the history): 95% bootstrap CI (significant if it excludes 0), MDE80 and
    the p values of ``paired_bootstrap``."""
    if rows not in ROW_SETS:
        raise ValueError(f"rows must be one of {ROW_SETS}, got {rows!r}")
    ia, ib = _common_rows(a, b)
    if rows == "novel":
        keep = a.novel[ia]
        ia, ib = ia[keep], ib[keep]
        if len(ia) == 0:
            raise RunError(f"runs {a.label} and {b.label} share no novel rows")
    return {"a": a.label, "b": b.label, "metric": metric, "row_set": rows, "rows": int(len(ia)),
            **paired_bootstrap(a.ranks[ia], b.ranks[ib], metric=metric)}


def compare_pooled(pairs: list[tuple[RunResult, RunResult]], metric: str = "NDCG@10", rows: str = "all") -> dict:
    """One paired test of b - a over the rows of several (a, b) pairs pooled: replications on
    disjoint row samples (another seed, other test rows) count as more rows of the same test."""
    if rows not in ROW_SETS:
        raise ValueError(f"rows must be one of {ROW_SETS}, got {rows!r}")
    ranks_a, ranks_b = [], []
    for a, b in pairs:
        ia, ib = _common_rows(a, b)
        if rows == "novel":
            keep = a.novel[ia]
            ia, ib = ia[keep], ib[keep]
        ranks_a.append(a.ranks[ia])
        ranks_b.append(b.ranks[ib])
    ranks_a, ranks_b = np.concatenate(ranks_a), np.concatenate(ranks_b)
    if len(ranks_a) == 0:
        raise RunError("the pooled pairs share no rows")
    return {"a": " + ".join(a.label for a, _ in pairs), "b": " + ".join(b.label for _, b in pairs),
            "metric": metric, "row_set": rows, "rows": int(len(ranks_a)), "pairs": len(pairs),
            **paired_bootstrap(ranks_a, ranks_b, metric=metric)}


def describe_comparison(t: dict) -> str:
    """One sentence of a ``compare`` result: difference, CI, rows, verdict, power and p values."""
    verdict = "significant" if t["significant"] else "not significant"
    if not t["significant"]:
        verdict += ("; no discordant rows, so no power to tell" if t["discordant"] == 0 else
                    f"; a true Δ of ±{t['mde80']:.4f} would be detected with 80% power")
    exact = "McNemar" if t["metric"].startswith("HR") else "sign-flip"
    which = "" if t.get("row_set", "all") == "all" else f" {t['row_set']}"  # "novel", or a subset's name
    return (f"Δ{t['metric']} = {t['diff']:+.4f} [{t['low']:+.4f}, {t['high']:+.4f}] over {t['rows']}{which} rows "
            f"({t['discordant']} rows differ; MDE80 {t['mde80']:.4f}; p {_p(t['p_exact'], t.get('p_exact_floor'))} "
            f"{exact}, {_p(t['p_bootstrap'], t.get('p_bootstrap_floor'), t.get('n_boot'))} bootstrap, "
            f"{_p(t['p_normal'])} normal): **{verdict}**")


def _p(p: float, floor: float | None = None, resamples: int | None = None) -> str:
    """A p value as text; at its resolution floor only "at most" is known, and the text says how
    many resamples (or, for the sign-flip test, ``1 / floor - 1`` random sign patterns) set it."""
    if floor and p <= floor * (1 + 1e-9):
        draws = f"{resamples:,} resamples" if resamples else f"{round(1 / floor) - 1:,} sign patterns"
        return f"≤ {floor:.2g} ({draws})"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


# A p value counts towards a multiple-testing threshold only if it can resolve it: its floor
# (the smallest p its resamples can show) at most this share of the threshold.
RESOLUTION_MARGIN = 0.1
P_VALUES = (("p_exact", "p_exact_floor", "exact"), ("p_bootstrap", "p_bootstrap_floor", "bootstrap"),
            ("p_normal", None, "normal"))


def resolved_p(t: dict, bound: float) -> tuple[float, list[str]]:
    """A test's p for the threshold ``bound``: its largest p value, leaving out those that cannot
    resolve it (floor above RESOLUTION_MARGIN x bound) and are under ``bound`` or at their floor
    ("under" may be the floor's doing; "at the floor" only says "at most the floor", which may be
    above ``bound`` when there are many tests); and the names of those left out. A coarse p above
    its floor and at or above ``bound`` stays: a Monte Carlo p errs high, so it still says "not
    significant"."""
    aside = [name for key, floor, name in P_VALUES
             if floor and key in t and t.get(floor, 0.0) > RESOLUTION_MARGIN * bound
             and (t[key] < bound or t[key] <= t[floor] * (1 + 1e-9))]
    if not aside:
        return t["p"], []
    return max(t[key] for key, _, name in P_VALUES if key in t and name not in aside), aside


def bonferroni_lines(tests: list[dict], level: float = 0.05) -> list[str]:
    """What survives a Bonferroni correction over ``tests``, judged on each test's largest p among
    those whose resolution is fine enough for the corrected threshold (``resolved_p``)."""
    if len(tests) < 2:
        return []
    bound = level / len(tests)
    judged = [(t, *resolved_p(t, bound)) for t in tests]
    kept = [(t, p) for t, p, _ in judged if p < bound]
    aside = sorted({name for _, _, names in judged for name in names})
    names = "; ".join(f"{t['b']} vs {t['a']}, Δ{t['metric']} ({t.get('row_set', 'all')} rows, p {_at_most(t, p)})"
                      for t, p in kept)
    note = ""
    if aside:
        boots = sorted({t["n_boot"] for t in tests if "n_boot" in t})
        note = (f" (the {' and '.join(aside)} p values that cannot resolve it are set aside: their resolution"
                + (f", {' / '.join(f'{n:,}' for n in boots)} resamples," if "bootstrap" in aside and boots else "")
                + f" is not finer than a tenth of {bound:.2g}; each test is judged on the others)")
    return [f"Bonferroni over these {len(tests)} tests (each at {level:g}/{len(tests)} = {bound:.2g}), on the largest "
            f"of each test's p values{note}: {len(kept)} of {len(tests)} remain significant"
            + (f": {names}." if kept else ".")]


def _at_most(t: dict, p: float) -> str:
    """``p`` as text, "≤" where it is a Monte Carlo test's floor (its true p may be smaller)."""
    at_floor = any(floor and t.get(key) == p and p <= t.get(floor, 0.0) * (1 + 1e-9) for key, floor, _ in P_VALUES)
    return ("≤ " if at_floor else "") + _p(p)


def paired_tests_section(tests: list[dict]) -> list[str]:
    """Markdown lines: the tests grouped by their ``kind`` (a heading each), then the Bonferroni line."""
    lines = ["## Paired tests", "",
             "Second method minus first, 95% bootstrap CI, MDE80, p values: exact (sign-flip permutation for NDCG, "
             "McNemar for HR), bootstrap, normal approximation.", ""]
    for kind in dict.fromkeys(t["kind"] for t in tests):
        lines += [f"### {kind}", ""]
        lines += [f"- {t['b']} vs {t['a']}: {describe_comparison(t)}." for t in tests if t["kind"] == kind]
        lines.append("")
    return lines + bonferroni_lines(tests)


def row_profile(r: RunResult) -> dict:
    """Where a run's hits come from: repeat vs novel rows, and item-level hits."""
    hr1 = r.ranks == 1
    out = {"item_level": summarize(r.item_ranks) if r.item_ranks is not None else None}
    if r.repeat is not None:
        novel = r.novel
        out.update(repeat_rows=int(r.repeat.sum()), novel_rows=int(novel.sum()),
                   hr1_hits=int(hr1.sum()), hr1_hits_on_repeat_rows=int((hr1 & r.repeat).sum()),
                   novel=summarize(r.ranks[novel]) if novel.any() else None,
                   novel_ci95={k: list(v) for k, v in bootstrap_ci(r.ranks[novel]).items()} if novel.any() else None)
    return out


def profile_table(results: list[RunResult]) -> str:
    """A markdown table of ``row_profile``: novel-row and item-level NDCG@10 / HR@10 per run."""
    lines = ["| method | repeat rows | HR@1 hits on repeat rows | novel rows | NDCG@10, novel rows | "
             "HR@10, novel rows | NDCG@10, item-level | HR@10, item-level |", "|" + "---|" * 8]
    for r in results:
        p = row_profile(r)
        item = p["item_level"]
        if "novel" in p and p["novel"] is not None:
            lo, hi = p["novel_ci95"]["NDCG@10"]
            hlo, hhi = p["novel_ci95"]["HR@10"]
            novel = (f"{p['novel']['NDCG@10']:.4f} [{lo:.3f}, {hi:.3f}] | "
                     f"{p['novel']['HR@10']:.4f} [{hlo:.3f}, {hhi:.3f}]")
            counts = f"{p['repeat_rows']} | {p['hr1_hits_on_repeat_rows']} of {p['hr1_hits']} | {p['novel_rows']}"
        else:
            novel, counts = "– | –", "– | – | –"
        lines.append(f"| {r.label} | {counts} | {novel} | {item['NDCG@10']:.4f} | {item['HR@10']:.4f} |")
    return "\n".join(lines)


def consistency_per_row(llm: RunResult, cf: RunResult, k: int = 10) -> dict[int, float]:
    """Row number -> |top-k(LLM) ∩ top-k(CF)| / k, over the rows both ranked (items, not titles)."""
    ia, ib = _common_rows(llm, cf)
    a, b = llm.topk[ia, :k], cf.topk[ib, :k]
    shared = ((a[:, :, None] == b[:, None, :]) & (a[:, :, None] > 0)).any(-1).sum(-1)  # [R]
    return dict(zip(llm.rows[ia].tolist(), (shared / k).tolist()))


def collaborative_consistency(llm: RunResult, cf: RunResult, k: int = 10) -> float:
    """Mean over common rows of |top-k(LLM) ∩ top-k(CF)| / k."""
    return float(np.mean(list(consistency_per_row(llm, cf, k).values())))


def compare_consistency(a: RunResult, b: RunResult, cf: RunResult, k: int = 10) -> dict:
    """Paired test of b - a in consistency@k with ``cf``'s top-k (``paired_difference``), over
    the rows all three ranked: does b follow the CF model more than a does?"""
    share_a, share_b = consistency_per_row(a, cf, k), consistency_per_row(b, cf, k)
    rows = sorted(share_a.keys() & share_b.keys())
    if not rows:
        raise RunError(f"runs {a.label} and {b.label} share no rows that {cf.label} ranked")
    return {"a": a.label, "b": b.label, "metric": f"consistency@{k}", "row_set": "all", "rows": len(rows),
            **paired_difference([share_a[r] for r in rows], [share_b[r] for r in rows])}


def metrics_table(results: list[RunResult], with_ci: bool = True) -> str:
    """A markdown table: one row per run, HR/NDCG at 1, 3, 5, 10 (95% CI in brackets)."""
    head = "| method | rows | " + " | ".join(METRIC_NAMES) + " |"
    lines = [head, "|" + "---|" * (len(METRIC_NAMES) + 2)]
    for r in results:
        cells = []
        for m in METRIC_NAMES:
            lo, hi = r.ci95[m]
            cells.append(f"{r.metrics[m]:.4f} [{lo:.3f}, {hi:.3f}]" if with_ci else f"{r.metrics[m]:.4f}")
        lines.append(f"| {r.label} | {len(r.ranks)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_table(results: list[RunResult], title: str = "") -> None:
    """The same table on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("method", no_wrap=True)
    for m in METRIC_NAMES:
        table.add_column(m, justify="right")
    for r in results:
        table.add_row(r.label, *[f"{r.metrics[m]:.4f}" for m in METRIC_NAMES])
    console = Console()
    # Logs and pipes default to 80 columns, too narrow for 9 columns: widen them.
    (console if console.is_terminal else Console(width=160)).print(table)


def results_json(results: list[RunResult], extra: dict | None = None) -> dict:
    return {
        "runs": [{"label": r.label, "run": str(r.run_dir), "rows": int(len(r.ranks)), "metrics": r.metrics,
                  "ci95": {k: list(v) for k, v in r.ci95.items()}, "config": r.config} for r in results],
        **(extra or {}),
    }
