"""GF-CF and BSPM with the item filter R~^T R~ sparse against dense, side by side.

    python -m benchmarks.bench_graph_filters                       # ml-1m_clean + Amazon-Beauty
    python -m benchmarks.bench_graph_filters --datasets amazon-beauty-general --users 4096

The plugin keeps the item x item filter sparse when under
``SPARSE_FILTER_BELOW_DENSITY`` of it is non-zero (recbole_diffrec/models/graph_filters.py).
For each dataset and model this builds the model twice in one process, once with the
filter dense (the threshold set to 0) and once with the format the plugin picks (sparse
on sparse data), and scores the same users with both (one torch thread, as a Tune
trial): seconds to build, seconds per 1000 users scored, the filter's bytes, and how far
the scores and each user's top 20 move. Settings: each model's tuned setting on the
dataset from the committed tuned search, else on ml-1m_clean, else the plugin's defaults.
One JSON per dataset in ``benchmarks/results/graph_filters/``, report
``benchmarks/graph_filters.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Tuple

if __name__ == "__main__" and not __package__:
    raise SystemExit("run it as a module: python -m benchmarks.bench_graph_filters")

from .bench_compute_plan import SEARCHED_ON, search_result, suite_spec  # noqa: E402
from .runner import ROOT, write_atomically  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "graph_filters"
REPORT = ROOT / "benchmarks" / "graph_filters.md"
MODELS = ("GFCF", "BSPM")
TOP_K = 20


def tuned_setting(model: str, dataset: str) -> Tuple[Dict[str, Any], str]:
    """The committed tuned search's best setting (this dataset's, else ml-1m_clean's)."""
    for where in (dataset, SEARCHED_ON):
        found = search_result(model, where)
        if found:
            return dict(found["best_settings"]), f"tuned on {where}"
    return {}, "plugin defaults"


def filter_bytes(tensor) -> int:
    import torch

    if tensor.layout == torch.sparse_csr:
        parts = (tensor.crow_indices(), tensor.col_indices(), tensor.values())
        return sum(p.numel() * p.element_size() for p in parts)
    return tensor.numel() * tensor.element_size()


def measure(dataset: str, models: List[str], users: int) -> Dict[str, Any]:
    """Both formats of each model on ``dataset``, in this process."""
    import torch

    from recbole_diffrec.config import config_from_settings
    from recbole_diffrec.models import graph_filters
    from recbole_diffrec.pipeline import build_model
    from recbole_diffrec.quick_start import load_splits

    torch.set_num_threads(1)
    spec = suite_spec()
    dataset_file = str(ROOT / spec["datasets"][dataset])
    default_threshold = graph_filters.SPARSE_FILTER_BELOW_DENSITY
    rows: List[Dict[str, Any]] = []
    for model in models:
        setting, source = tuned_setting(model, dataset)
        settings = {**spec["common"], **setting, "seed": 2020}
        config = config_from_settings(model, dataset, settings, [dataset_file])
        _, train_data, _, _ = load_splits(config)
        n_users = train_data.dataset.user_num - 1  # id 0 is padding
        chosen = torch.arange(1, 1 + min(users, n_users))
        batch = int(settings["eval_batch_users"])  # users per batch, as in evaluation
        scores, row = {}, {"model": model, "settings": setting, "source": source}
        for label, threshold in (("dense", 0.0), ("chosen", default_threshold)):
            graph_filters.SPARSE_FILTER_BELOW_DENSITY = threshold
            try:
                start = time.perf_counter()
                built = build_model(config, train_data.dataset).eval()
                build_seconds = time.perf_counter() - start
            finally:
                graph_filters.SPARSE_FILTER_BELOW_DENSITY = default_threshold
            matrix = built.linear_filter
            start = time.perf_counter()
            with torch.no_grad():
                parts = [built.score_users(b) for b in chosen.split(batch)]
            seconds = time.perf_counter() - start
            scores[label] = torch.cat(parts)[:, 1:]
            row[label] = {
                "format": "sparse" if matrix.layout == torch.sparse_csr else "dense",
                "build_seconds": build_seconds,
                "score_seconds": seconds,
                "seconds_per_1000_users": 1000 * seconds / len(chosen),
                "filter_mb": filter_bytes(matrix) / 2**20,
            }
            del built, matrix
        dense, chosen_scores = scores["dense"], scores["chosen"]
        top_dense = dense.topk(TOP_K, dim=1).indices.sort(dim=1).values
        top_chosen = chosen_scores.topk(TOP_K, dim=1).indices.sort(dim=1).values
        row.update(
            users_scored=len(chosen),
            users=n_users,
            items=train_data.dataset.item_num - 1,
            max_abs_score_difference=float((dense - chosen_scores).abs().max()),
            same_top20_share=float((top_dense == top_chosen).all(dim=1).float().mean()),
            speedup=row["dense"]["score_seconds"] / row["chosen"]["score_seconds"],
        )
        rows.append(row)
        print(
            f"{dataset} {model}: {row['chosen']['format']} filter, "
            f"{row['speedup']:.1f}x faster scoring, "
            f"{row['dense']['filter_mb']:.0f} -> {row['chosen']['filter_mb']:.0f} MB",
            flush=True,
        )
    return {
        "dataset": dataset,
        "threshold": default_threshold,
        "torch_threads": 1,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }


# ---------------------------------------------------------------------------- report
def render(results: List[Dict[str, Any]]) -> str:
    lines = [
        "# GF-CF and BSPM: sparse against dense item filter",
        "",
        "Measured by `python -m benchmarks.bench_graph_filters` on this machine (one torch "
        "thread; both formats built and timed one after the other in one process, on the "
        "same users). *dense*: the filter R~^T R~ as a dense matrix (the plugin before "
        "2026-12-05, and still its choice above the density threshold); *chosen*: the "
        "format the plugin picks. Top-20 agreement: share of the users scored whose 20 "
        "best items are the same set with both formats. Where the chosen format is dense, "
        "both runs are the same code: their ratio is this machine's timing noise.",
        "",
        "| dataset | model | setting | users x items | chosen format | s / 1000 users: "
        "dense, chosen | speedup | build s: dense, chosen | filter MB: dense, chosen | "
        "max abs score diff | same top-20 | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            dense, chosen = row["dense"], row["chosen"]
            lines.append(
                f"| {result['dataset']} | {row['model']} | {row['source']} | "
                f"{row['users']:,} x {row['items']:,} | {chosen['format']} | "
                f"{dense['seconds_per_1000_users']:.2f}, "
                f"{chosen['seconds_per_1000_users']:.2f} | {row['speedup']:.1f}x | "
                f"{dense['build_seconds']:.1f}, {chosen['build_seconds']:.1f} | "
                f"{dense['filter_mb']:.0f}, {chosen['filter_mb']:.0f} | "
                f"{row['max_abs_score_difference']:.1e} | "
                f"{100 * row['same_top20_share']:.2f}% of {row['users_scored']:,} | "
                f"{result['measured_at']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="*", default=["ml-1m_clean", "amazon-beauty-general"]
    )
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument(
        "--users", type=int, default=4096, help="users scored per model and format"
    )
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for dataset in args.datasets:
            write_atomically(
                RESULTS / f"{dataset}.json", measure(dataset, args.models, args.users)
            )
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    REPORT.write_text(render(results))
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
