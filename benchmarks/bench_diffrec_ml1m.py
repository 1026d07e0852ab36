"""Plugin DiffRec vs RecBole's built-in DiffRec on ml-1m_clean, side by side in one run.

Each model trains in its own subprocess (so peak memory is its own) with the official
ml-1m_clean settings and the paper protocol (properties/dataset/ml-1m_clean.yaml), one
after the other on the same machine. Writes benchmarks/diffrec_ml1m.md.

    python -m benchmarks.bench_diffrec_ml1m            # all runs
    python -m benchmarks.bench_diffrec_ml1m --only plugin L-plugin-release-emb
    python -m benchmarks.bench_diffrec_ml1m --force    # ignore cached results

RecBole's own LDiffRec imports kmeans_pytorch without declaring it:
`pip install kmeans-pytorch==0.3` before running the L-recbole run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    raise SystemExit(
        "run it as a module from the repository root: "
        "python -m benchmarks.bench_diffrec_ml1m"
    )

from .runner import ROOT  # noqa: E402
from .training import peak_rss_mb, timed_trainer  # noqa: E402

WORK = ROOT / "benchmarks" / "out"  # results cached as diffrec_ml1m_<run>.json
DATASET_YAML = ROOT / "properties" / "dataset" / "ml-1m_clean.yaml"

# The official DiffRec ml-1m_clean settings (YiyanXu/DiffRec run.sh), as named by the issue.
OFFICIAL = {
    "learner": "adamw",
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "train_batch_size": 400,
    "embedding_size": 10,
    "mean_type": "x0",
    "steps": 40,
    "noise_scale": 0.005,
    "noise_min": 0.005,
    "noise_max": 0.01,
    "noise_schedule": "linear-var",
    "reweight": True,
    "sampling_steps": 0,
    "sampling_noise": False,
    "beta_fixed": True,
    "history_num_per_term": 10,
    "eval_batch_users": 400,
    "show_progress": False,
    "seed": 2020,
}

# The official L-DiffRec ml-1m_clean settings, as named by issue #3.
OFFICIAL_L = {
    **{k: v for k, v in OFFICIAL.items() if k not in ("learning_rate",)},
    "lr1": 1e-3,
    "lr2": 5e-4,
    "n_cate": 2,
    "in_dims": [300],
    "out_dims": [],
    "lamda": 0.03,
    "dims_dnn": [300],
    "noise_max": 0.02,
    "beta_fixed": False,
}
RELEASE_EMB = str(ROOT.parent / "shared" / "datasets" / "ml-1m_clean" / "item_emb.npy")
FILE_EMB = {"item_emb_source": "file", "item_emb_path": RELEASE_EMB}

RUNS = {
    # name: (model, settings, note)
    "plugin": (
        "DiffRec",
        {**OFFICIAL, "dims_dnn": [200, 600]},
        "recbole_diffrec DiffRec; dims [200, 600] mirrored as in the official DNN "
        "(n -> 600 -> 200 -> 600 -> n)",
    ),
    "recbole": (
        "recbole.DiffRec",
        {**OFFICIAL, "dims_dnn": [200, 600], "mlp_act_func": "tanh"},
        "RecBole 1.2.1 DiffRec with dims_dnn [200, 600]: RecBole does not mirror, so "
        "this is n -> 200 -> 600 -> n, a smaller network than the official one",
    ),
    "recbole-same-net": (
        "recbole.DiffRec",
        {**OFFICIAL, "dims_dnn": [600, 200, 600], "mlp_act_func": "tanh"},
        "RecBole 1.2.1 DiffRec with dims_dnn [600, 200, 600]: the official network "
        "(n -> 600 -> 200 -> 600 -> n)",
    ),
    "L-plugin-release-emb": (
        "LDiffRec",
        {**OFFICIAL_L, **FILE_EMB},
        "recbole_diffrec LDiffRec, official settings, clusters from the release's "
        "item_emb.npy (re-ordered to RecBole's item ids)",
    ),
    "L-plugin-lightgcn-emb": (
        "LDiffRec",
        {**OFFICIAL_L, "item_emb_source": "lightgcn"},
        "recbole_diffrec LDiffRec, official settings, clusters from embeddings of a "
        "RecBole LightGCN the plugin trains on the training split (20 epochs; its time "
        "is included in time to result)",
    ),
    "T-plugin-0.1": (
        "TDiffRec",
        {**OFFICIAL, "dims_dnn": [200, 600], "w_min": 0.1, "w_max": 1.0},
        "recbole_diffrec TDiffRec, DiffRec settings, (w_min, w_max) = (0.1, 1.0)",
    ),
    "T-plugin-0.5": (
        "TDiffRec",
        {**OFFICIAL, "dims_dnn": [200, 600], "w_min": 0.5, "w_max": 1.0},
        "recbole_diffrec TDiffRec, DiffRec settings, (w_min, w_max) = (0.5, 1.0)",
    ),
    "LT-plugin-0.1": (
        "LTDiffRec",
        {**OFFICIAL_L, **FILE_EMB, "w_min": 0.1, "w_max": 1.0},
        "recbole_diffrec LTDiffRec, L-DiffRec settings (release embeddings), "
        "(w_min, w_max) = (0.1, 1.0)",
    ),
    "LT-plugin-0.5": (
        "LTDiffRec",
        {**OFFICIAL_L, **FILE_EMB, "w_min": 0.5, "w_max": 1.0},
        "recbole_diffrec LTDiffRec, L-DiffRec settings (release embeddings), "
        "(w_min, w_max) = (0.5, 1.0)",
    ),
    "L-recbole": (
        "recbole.LDiffRec",
        {
            **{k: v for k, v in OFFICIAL_L.items() if k not in ("lr1", "lr2")},
            "learning_rate": 1e-3,
            "mlp_act_func": "tanh",
            "ae_act_func": "tanh",
        },
        "RecBole 1.2.1 LDiffRec, official settings with one learning rate (RecBole has "
        "no lr1/lr2); it reads item_emb.npy from the dataset folder by row position, "
        "without RecBole's item-id remapping, and clusters with kmeans_pytorch",
    ),
    "T-recbole-0.1": (
        "recbole.DiffRec",
        {
            **OFFICIAL,
            "dims_dnn": [200, 600],
            "mlp_act_func": "tanh",
            "time-aware": True,
            "w_min": 0.1,
            "w_max": 1.0,
        },
        "RecBole 1.2.1 time-aware DiffRec (its T-DiffRec), dims_dnn [200, 600] (not "
        "mirrored), (w_min, w_max) = (0.1, 1.0)",
    ),
}


def worker(name: str, out: Path) -> None:
    """Train and test one model; write its measurements as JSON."""
    from recbole_diffrec import run

    model, settings, _ = RUNS[name]
    TimedTrainer, epoch_seconds, eval_seconds = timed_trainer(model)

    start = time.perf_counter()
    result = run(
        model,
        "ml-1m_clean",
        config_file_list=[str(DATASET_YAML)],
        config_dict=settings,
        saved=True,
        trainer_class=TimedTrainer,
    )
    total = time.perf_counter() - start
    test_seconds, test_users = eval_seconds[-1]
    valid = eval_seconds[:-1]
    out.write_text(
        json.dumps(
            {
                "name": name,
                "test": result["test_result"],
                "best_valid": result["best_valid_result"],
                "parameters": result["parameters"],
                "epochs": len(epoch_seconds),
                "epoch_seconds": sum(epoch_seconds) / len(epoch_seconds),
                "valid_eval_seconds": sum(s for s, _ in valid) / max(len(valid), 1),
                "valid_users": valid[0][1] if valid else 0,
                "test_eval_seconds": test_seconds,
                "test_users": test_users,
                "time_to_result": total,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def table(rows) -> str:
    head = (
        "| run | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | params | epochs | s / epoch "
        "| s / full eval (users) | time to result (s) | peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        t = r["test"]
        lines.append(
            f"| {r['name']} | {t['recall@10']:.4f} | {t['recall@20']:.4f} | "
            f"{t['ndcg@10']:.4f} | {t['ndcg@20']:.4f} | {r['parameters']:,} | {r['epochs']} | "
            f"{r['epoch_seconds']:.2f} | {r['test_eval_seconds']:.1f} ({r['test_users']:,}) | "
            f"{r['time_to_result']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


# (plugin run, RecBole run) pairs compared on speed
PAIRS = [
    ("plugin", "recbole"),
    ("plugin", "recbole-same-net"),
    ("L-plugin-release-emb", "L-recbole"),
    ("T-plugin-0.1", "T-recbole-0.1"),
]


def ratios(rows) -> str:
    by = {r["name"]: r for r in rows}
    out = [
        "| plugin / RecBole | s per epoch | s per full eval | time to result |",
        "|---|---|---|---|",
    ]
    for plugin, other in PAIRS:
        if plugin not in by or other not in by:
            continue
        p, r = by[plugin], by[other]
        out.append(
            f"| {plugin} / {other} | {p['epoch_seconds'] / r['epoch_seconds']:.2f} | "
            f"{p['test_eval_seconds'] / r['test_eval_seconds']:.2f} | "
            f"{p['time_to_result'] / r['time_to_result']:.2f} |"
        )
    return "\n".join(out) + "\n"


def train_each(names, force: bool) -> None:
    """Each run in its own process (so its peak memory is its own), unless cached."""
    WORK.mkdir(parents=True, exist_ok=True)
    if any(RUNS[n][0] == "recbole.LDiffRec" for n in names):
        # RecBole's LDiffRec loads <data_path>/<dataset>/item_emb.npy by row position.
        target = ROOT / "dataset" / "ml-1m_clean" / "item_emb.npy"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RELEASE_EMB, target)
    for name in names:
        out = WORK / f"diffrec_ml1m_{name}.json"
        if out.is_file() and not force:
            print(f"[{name}] cached: {out}", flush=True)
            continue
        print(f"[{name}] training ...", flush=True)
        with open(WORK / f"diffrec_ml1m_{name}.log", "w") as log:
            subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_diffrec_ml1m"]
                + ["--worker", name, "--out", str(out)],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        print(table([json.loads(out.read_text())]), flush=True)


def report(rows, command: str) -> str:
    notes = "\n".join(f"- **{r['name']}**: {RUNS[r['name']][2]}" for r in rows)
    return (
        "# DiffRec family on ml-1m_clean: plugin vs RecBole built-in\n\n"
        f"Made by `{command}` on {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores): every run in its own process, one after the other on "
        "the same machine (results cached in benchmarks/out/; `--force` re-runs).\n\n"
        "Paper protocol (properties/dataset/ml-1m_clean.yaml): full ranking, training items "
        "masked at validation, training + validation items masked at test, selection on "
        "validation Recall@20 every 5 epochs, early stop as the official code. Test metrics "
        "of the best validation checkpoint. *s / full eval*: one full-ranking pass over all "
        "test users (every ml-1m_clean user has test items). Peak RSS is the training "
        "process's maximum resident memory.\n\n"
        + table(rows)
        + "\n"
        + ratios(rows)
        + "\nShared settings: "
        + ", ".join(f"{k}={v}" for k, v in OFFICIAL.items())
        + "; L-DiffRec runs: "
        + ", ".join(f"{k}={v}" for k, v in OFFICIAL_L.items() if OFFICIAL.get(k) != v)
        + "\n\n"
        + notes
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_diffrec_ml1m",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--force", action="store_true", help="re-run cached results")
    parser.add_argument(
        "--report", default=str(ROOT / "benchmarks" / "diffrec_ml1m.md")
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.out))
        return
    train_each(args.only, args.force)
    rows = [
        json.loads((WORK / f"diffrec_ml1m_{n}.json").read_text())
        for n in RUNS
        if (WORK / f"diffrec_ml1m_{n}.json").is_file()
    ]
    command = shlex.join(
        ["python", "-m", "benchmarks.bench_diffrec_ml1m", *sys.argv[1:]]
    )
    Path(args.report).write_text(report(rows, command))
    print(f"wrote {args.report}")


if __name__ == "__main__":
    main()
