"""The aggregate report of a study (and of the demo): ``report.md``, ``results.json``, PNGs.

Per dataset: one table of every method (mean over seeds; the 95% bootstrap CI over test
rows for one seed, the spread over seeds otherwise), collaborative consistency against
the CF model, paired-bootstrap significance of each TCA4Rec run against its host alone,
and plots: metrics per method, training loss, accuracy and consistency against alpha.
A cell's CF-guided decodings and its learned fusion (``_fusion`` files) are rows of their own,
each tested against the cell's plain decoding and its CF model.
The text states what the numbers say, significant or not.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from tca4rec.errors import RunError
from tca4rec.evaluate.plots import plot_against_alpha, plot_loss_curves, plot_metrics
from tca4rec.evaluate.report import (
    METRIC_NAMES,
    ROW_SETS,
    RunResult,
    bonferroni_lines,
    collaborative_consistency,
    compare,
    describe_comparison,
    load_run_result,
    print_table,
    profile_table,
    row_profile,
)
from tca4rec.fuse.config import FUSION_SUFFIX
from tca4rec.io import atomic_write_json, atomic_write_text
from tca4rec.llm.evaluate import decoding_suffix
from tca4rec.study.cells import CF_LABELS, CFCell, LLMCell
from tca4rec.study.cells import as_list as _as_list
from tca4rec.validate import loads_json


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _mean_spread(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _training_line(label: str, run: Path) -> str | None:
    """What a cell's fine-tuning did, from its ``train_state.json`` (None if absent)."""
    path = run / "train_state.json"
    if not path.is_file():
        return None
    try:
        state = loads_json(path.read_text(encoding="utf-8"))
        text = f"- {label}: {int(state['global_step'])} optimizer steps ({float(state['epoch']):.2f} epochs)"
        if state.get("best_checkpoint"):
            text += (f"; evaluated: the best on valid HR@3, {state['best_checkpoint']} "
                     f"({float(state['best_metric']):.4f})")
        else:
            text += "; evaluated: the last step (no model selection)"
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ValueError: not JSON, not UTF-8
        raise RunError(f"{path} is not a training state written by tca4rec ({type(e).__name__}: {e})") from None
    if state.get("stopped_by_time_budget_at_step") is not None:
        text += f"; stopped by the time budget at step {state['stopped_by_time_budget_at_step']}"
    return text


def _paired(a: RunResult, b: RunResult, seed: int) -> list[dict]:
    """b against a on NDCG@10 and HR@10, over all rows and over the novel rows."""
    return [{"seed": seed, **compare(a, b, metric, rows)} for rows in ROW_SETS for metric in ("NDCG@10", "HR@10")]


def write_study_report(study) -> Path:
    cfg, out = study.config, study.out
    split = cfg.split
    report_dir = out / "report"
    lines = [f"# Study: {cfg.name}", ""]
    summary: dict = {"study": cfg.name, "split": split, "datasets": {}}
    seeds = len(cfg.seeds)
    for name in cfg.datasets:
        ds = study.dataset(name)
        histories = ds.split(split).histories
        cf_cells = [c for c in cfg.cf_cells() if c.dataset == name]
        llm_cells = [c for c in cfg.llm_cells() if c.dataset == name]
        results: dict = {}
        for cell in [*cf_cells, *llm_cells]:
            run = out / cell.folder
            if (run / f"predictions_{split}.jsonl").is_file():
                results[cell] = load_run_result(run, split, ds.title_group, histories=histories,
                                                label=cfg.labels.get(cell.folder, cell.label))
        if not results:
            raise RunError(f"study {cfg.name}: no evaluated run for dataset {name} yet")
        primary_cf = cf_cells[0].model if cf_cells else None
        # CF-guided decodings of a cell: keyed (cell, beta as configured), beside the cell itself.
        guided: dict = {}
        for cell in llm_cells:
            for b in study.guided_betas():
                value = study.guided_beta_value(cell, b)
                suffix = decoding_suffix(value, False, cfg.cf_lookahead) if value is not None else None
                if cell in results and suffix is not None and (out / cell.folder / f"predictions_{split}{suffix}.jsonl").is_file():
                    text = (f"β={value:g}" + (", max lookahead" if cfg.cf_lookahead == "max" else "")
                            + (", tuned on valid" if b == "auto" else ""))
                    guided[(cell, b)] = load_run_result(out / cell.folder, split, ds.title_group, suffix=suffix,
                                                        histories=histories, label=f"{results[cell].label} + CF-guided decoding ({text})")

        def cf_of(cell) -> str | None:
            return cell.cf or primary_cf

        # The learned fusion of a cell (fit on its valid rows), keyed (cell, "fusion") like a guided decoding;
        # only where the study asks for one: a fusion fit by hand in its folder is not the study's test.
        for cell in llm_cells if cfg.fusion is not None else ():
            if cell in results and (out / cell.folder / f"predictions_{split}{FUSION_SUFFIX}.jsonl").is_file():
                guided[(cell, "fusion")] = load_run_result(
                    out / cell.folder, split, ds.title_group, suffix=FUSION_SUFFIX, histories=histories,
                    label=f"{results[cell].label} + learned fusion ({CF_LABELS.get(cf_of(cell), cf_of(cell))}, "
                          "fit on valid)")
        results.update(guided)

        consistency: dict = {}
        for key in [*llm_cells, *guided]:
            cell = key[0] if isinstance(key, tuple) else key
            cf_cell = CFCell(name, cf_of(cell), cell.seed) if cf_of(cell) else None
            if key in results and cf_cell in results:
                consistency[key] = collaborative_consistency(results[key], results[cf_cell])

        # Table rows: one per label, aggregated over seeds.
        by_label: dict[str, list] = defaultdict(list)
        for cell, res in results.items():
            by_label[res.label].append(cell)
        rows_out = []
        header = "| method | seeds | test rows | " + " | ".join(METRIC_NAMES) + " | consistency@10 |"
        table = [header, "|" + "---|" * (len(METRIC_NAMES) + 4)]
        for label, cells in by_label.items():
            rs = [results[c] for c in cells]
            cells_txt, rec = [], {"method": label, "seeds": len(rs), "rows": int(len(rs[0].ranks)), "metrics": {}}
            for m in METRIC_NAMES:
                mean, spread = _mean_spread([r.metrics[m] for r in rs])
                if len(rs) == 1:
                    lo, hi = rs[0].ci95[m]
                    cells_txt.append(f"{mean:.4f} [{lo:.3f}, {hi:.3f}]")
                    rec["metrics"][m] = {"mean": mean, "ci95": [lo, hi]}
                else:
                    cells_txt.append(f"{mean:.4f} ± {spread:.4f}")
                    rec["metrics"][m] = {"mean": mean, "std": spread}
            cons = [consistency[c] for c in cells if c in consistency]
            cons_txt = f"{np.mean(cons):.3f}" if cons else "–"
            rec["consistency@10"] = float(np.mean(cons)) if cons else None
            table.append(f"| {label} | {len(rs)} | {len(rs[0].ranks)} | " + " | ".join(cells_txt) + f" | {cons_txt} |")
            rows_out.append(rec)

        # Significance: every TCA4Rec cell against the same host alone (same seed, same rows).
        def host_alone(cell: LLMCell) -> LLMCell | None:
            return next((c for c in llm_cells if c.host == cell.host and c.alpha == 0 and c.seed == cell.seed
                         and (c.cf is None or c.cf == cell.cf)), None)

        tests = []
        for cell in llm_cells:
            if cell.alpha != 0 and cell in results and host_alone(cell) in results:
                tests += _paired(results[host_alone(cell)], results[cell], cell.seed)
        # The fused recommender (CF-guided or learned fusion) against each of its parts: the same run
        # decoded plainly, its CF model, and (for TCA4Rec) the host alone fused the same way.
        for (cell, b), res in guided.items():
            tests += _paired(results[cell], res, cell.seed)
            guide = CFCell(name, cf_of(cell), cell.seed)
            if guide in results:
                tests += _paired(results[guide], res, cell.seed)
            if cell.alpha != 0 and (host_alone(cell), b) in guided:
                tests += _paired(guided[(host_alone(cell), b)], res, cell.seed)

        training = [_training_line(results[c].label, out / c.folder) for c in llm_cells if c in results]

        ds_dir = report_dir / name
        plots = [plot_metrics(list(results.values()), ds_dir / "metrics.png")]
        curves = [r for c, r in results.items() if isinstance(c, LLMCell) and r.loss_curve]
        if curves:
            plots.append(plot_loss_curves(curves, ds_dir / "training_loss.png"))
        acc: dict[str, list] = defaultdict(list)
        cons_series: dict[str, list] = defaultdict(list)
        for block in cfg.grid:
            for host in _as_list(block["host"]):
                for cf in _as_list(block.get("cf", [])):
                    series = [c for c in llm_cells if c in results and c.host == host
                              and (c.cf == cf or (c.cf is None and c.alpha == 0))]
                    alphas = sorted({c.alpha for c in series})
                    if len(alphas) < 2:
                        continue
                    key = f"{host} / {cf}"
                    for a in alphas:
                        at = [c for c in series if c.alpha == a]
                        for metric in ("NDCG@10", "HR@10"):
                            mean, spread = _mean_spread([results[c].metrics[metric] for c in at])
                            acc[f"{key} {metric}"].append((a, mean, spread))
                        cs = [collaborative_consistency(results[c], results[CFCell(name, cf, c.seed)]) for c in at
                              if CFCell(name, cf, c.seed) in results]
                        if cs:
                            cons_series[key].append((a, *_mean_spread(cs)))
        acc = {k: v for k, v in acc.items() if len(v) > 1}
        if acc:
            plots.append(plot_against_alpha(acc, "accuracy", ds_dir / "accuracy_vs_alpha.png",
                                            title=f"{name}: NDCG@10 and HR@10 against alpha"))
        if cons_series:
            plots.append(plot_against_alpha(dict(cons_series), "collaborative consistency@10",
                                            ds_dir / "consistency_vs_alpha.png",
                                            title=f"{name}: share of LLM top-10 also in CF top-10"))

        n_train = len(ds.split("train"))
        # What each cell was trained with, from its own config.json (not from the study file).
        limits = sorted({(results[c].config.get("config") or {}).get("train_limit") or n_train
                         for c in llm_cells if c in results}) or [n_train]
        train_text = (f"{min(limits[0], n_train)} training rows available to the LLM (of {n_train})" if len(limits) == 1
                      else f"training rows available to the LLM differ by cell ({', '.join(map(str, limits))}, "
                           f"of {n_train})")
        row_counts = sorted({len(r.ranks) for r in results.values()})
        rows_text = (f"{row_counts[0]} {split} rows, the same for every method" if len(row_counts) == 1 else
                     f"{split} rows differ by method (column 'test rows'; paired tests use the rows both share)")
        lines += [f"## {name}", "",
                  f"{ds.num_items} items; {train_text}; {rows_text}; {seeds} seed(s). Brackets: 95% bootstrap CI over {split} rows"
                  f"{'; ± : std over seeds' if seeds > 1 else ''}. Consistency@10: share of the LLM's top-10 "
                  "items also in the CF model's top-10 for the same row. Hits count an item with the target's "
                  "title (the paper's protocol; many titles are shared, so the item-level columns below count "
                  "the exact item only).", "", *table, "",
                  "Where the hits come from: repeat rows (the target's title is already in the history, which a "
                  "sequential CF model ranks first) against novel rows, and item-level hits:", "",
                  profile_table(list(results.values())), ""]
        if any(training):
            lines += ["Training actually done, and which checkpoint each evaluation used:", "",
                      *[t for t in training if t], ""]
        if tests:
            lines += ["Paired bootstrap over the same rows (95% CI of the difference, the second method minus the "
                      "first: TCA4Rec minus its host alone, CF-guided decoding or learned fusion minus plain decoding "
                      "of the same run, and minus its CF model; MDE80: the "
                      "smallest true difference these rows detect with 80% power at the 5% level), on all rows and on "
                      "the novel rows; p values: exact (sign-flip permutation for NDCG, McNemar for HR), bootstrap "
                      "and normal approximation:", ""]
            for t in tests:
                lines.append(f"- {t['b']} vs {t['a']} (seed {t['seed']}): {describe_comparison(t)}.")
            lines += ["", *bonferroni_lines(tests), ""]
        lines += [f"![{p.stem}]({_rel(p, report_dir)})" for p in plots] + [""]
        summary["datasets"][name] = {"items": ds.num_items, "methods": rows_out, "significance": tests,
                                     "profiles": {r.label: row_profile(r) for r in results.values()},
                                     "plots": [_rel(p, report_dir) for p in plots]}
        print_table(list(results.values()), title=f"{name} ({split})")
    atomic_write_text(report_dir / "report.md", "\n".join(lines))
    atomic_write_json(report_dir / "results.json", summary)
    study.log(f"report: {report_dir / 'report.md'}")
    return report_dir
