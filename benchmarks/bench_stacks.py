"""The plugin's DiffRec on ml-1m_clean under several Python stacks, side by side in one run.

Each interpreter (a virtual environment made with the README's install command) trains the
same run, the plugin's DiffRec with the official ml-1m_clean settings and seed 2020
(``bench_diffrec_ml1m``'s ``plugin`` run, as its own worker process). Rounds alternate
the order of the stacks, so a machine that slows down or speeds up during the benchmark
weighs on every stack alike. Writes one JSON per run and ``benchmarks/stacks.md``.

    python -m benchmarks.bench_stacks --python .venv/bin/python .venv-py313/bin/python
    python -m benchmarks.bench_stacks --python A B --rounds 3 --run plugin

Every interpreter runs the worker as ``python -m benchmarks.bench_diffrec_ml1m`` from the
repository root, so each needs only the plugin installed.

The first interpreter is the reference: the report gives every other stack's test NDCG@20
difference and seconds-per-epoch ratio against it, beside the targets of issue #15
(|difference| <= 0.002, ratio <= 1.05).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

if __name__ == "__main__" and not __package__:
    raise SystemExit(
        "run it as a module from the repository root: python -m benchmarks.bench_stacks"
    )

from .runner import ROOT  # noqa: E402

WORKER = "benchmarks.bench_diffrec_ml1m"  # run with -m from the repository root
REPORT = ROOT / "benchmarks" / "stacks.md"
NDCG_TOLERANCE = 0.002
RATIO_LIMIT = 1.05
VERSIONS = (
    "import json; from recbole_diffrec.compat import stack_versions; "
    "print(json.dumps(stack_versions()))"
)


def stack_of(python: str) -> Dict[str, str]:
    out = subprocess.run(
        [python, "-c", VERSIONS], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(versions: Dict[str, str]) -> str:
    return (
        f"Python {versions['python']}, NumPy {versions['numpy']}, Ray {versions['ray']}, "
        f"torch {versions['torch']}"
    )


def run_one(python: str, run: str, out: Path, log: Path) -> Dict[str, Any]:
    with open(log, "w") as err:
        subprocess.run(
            [python, "-m", WORKER, "--worker", run, "--out", str(out)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return json.loads(out.read_text())


def summarize(runs: List[Dict[str, Any]], order: List[str]) -> List[Dict[str, Any]]:
    """Per stack: mean test NDCG@20 and seconds per epoch over its rounds, and the
    NDCG@20 difference and seconds-per-epoch ratio against the first stack."""
    rows = []
    for python in order:
        mine = [r for r in runs if r["python"] == python]
        rows.append(
            {
                "python": python,
                "stack": mine[0]["stack"],
                "rounds": len(mine),
                "ndcg@20": statistics.mean(r["test"]["ndcg@20"] for r in mine),
                "epoch_seconds": statistics.mean(r["epoch_seconds"] for r in mine),
            }
        )
    for row in rows:
        row["ndcg_diff"] = row["ndcg@20"] - rows[0]["ndcg@20"]
        row["epoch_ratio"] = row["epoch_seconds"] / rows[0]["epoch_seconds"]
    return rows


def report(runs, rows, command: str) -> str:
    def stack_cell(v: Dict[str, str]) -> str:
        return " / ".join(
            v[k] for k in ("python", "numpy", "pandas", "scipy", "ray", "torch")
        )

    lines = [
        "# The plugin's DiffRec on several stacks, side by side",
        "",
        f"Made by `{command}` on {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "ml-1m_clean, the paper protocol, the official DiffRec settings, seed 2020; each "
        "run in its own process, one after the other, the order of the stacks alternating "
        "by round. Test metrics of the best validation checkpoint.",
        "",
        "Stack: Python / NumPy / pandas / SciPy / Ray / torch.",
        "",
        "| stack | round | Recall@20 | NDCG@20 | epochs | s / epoch | s / test eval |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {stack_cell(r['stack'])} | {r['round']} | {r['test']['recall@20']:.4f} | "
            f"{r['test']['ndcg@20']:.4f} | {r['epochs']} | {r['epoch_seconds']:.2f} | "
            f"{r['test_eval_seconds']:.2f} |"
        )
    lines += [
        "",
        f"Against the first stack (targets: NDCG@20 within +-{NDCG_TOLERANCE}, seconds per "
        f"epoch ratio <= {RATIO_LIMIT}):",
        "",
        "| stack | rounds | mean NDCG@20 | difference | mean s / epoch | ratio | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows):
        if i == 0:
            verdict = "reference"
        else:
            same = abs(row["ndcg_diff"]) <= NDCG_TOLERANCE
            fast = row["epoch_ratio"] <= RATIO_LIMIT
            verdict = (
                ("same results" if same else "RESULTS DIFFER")
                + ", "
                + ("no slower" if fast else "SLOWER")
            )
        lines.append(
            f"| {stack_cell(row['stack'])} | {row['rounds']} | {row['ndcg@20']:.4f} | "
            f"{row['ndcg_diff']:+.4f} | {row['epoch_seconds']:.2f} | "
            f"{row['epoch_ratio']:.3f} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_stacks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--python", nargs="+", required=True, help="interpreters, reference first"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", default="plugin", help="a bench_diffrec_ml1m run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "stacks"))
    parser.add_argument("--report", default=str(REPORT))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: got %d; allowed: an integer >= 1" % args.rounds)
    for python in args.python:
        if not Path(python).is_file():
            parser.error(f"--python: {python} is not a file")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stacks = {python: stack_of(python) for python in args.python}
    runs = []
    for round_index in range(1, args.rounds + 1):
        order = args.python if round_index % 2 else list(reversed(args.python))
        for python in order:
            versions = stacks[python]
            name = (
                f"{args.run}-py{versions['python']}-torch{versions['torch']}"
                f"-{args.python.index(python)}-round{round_index}"
            )
            print(f"[{name}] {label(versions)} ...", flush=True)
            result = run_one(
                python, args.run, out / f"{name}.json", out / f"{name}.log"
            )
            result.update(python=python, stack=stacks[python], round=round_index)
            (out / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(
                f"  test NDCG@20 {result['test']['ndcg@20']:.4f}, "
                f"{result['epoch_seconds']:.2f} s / epoch, {result['epochs']} epochs",
                flush=True,
            )
            runs.append(result)

    rows = summarize(runs, args.python)
    command = shlex.join(
        ["python", "-m", "benchmarks.bench_stacks", *(argv or sys.argv[1:])]
    )
    text = report(runs, rows, command)
    Path(args.report).write_text(text)
    print(text)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
