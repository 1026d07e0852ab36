"""Ray Tune searches: the space checks (no Ray), and real searches on a local Ray and on
a running cluster, interrupted and resumed."""

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SEARCH as TINY
from conftest import interrupt_once_started

from recbole_diffrec import run
from recbole_diffrec.tune import (
    build_config,
    device_settings,
    evaluate_checkpoint_on_test,
    load_search_space,
    parse_cli_value,
    run_search,
    trial_index,
)

ROOT = Path(__file__).resolve().parents[1]
RUNNER = str(ROOT / "run_recbole_diffrec.py")


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize(
    "space, message",
    [
        ("learning_rate: {normal: [0, 1]}", "unknown distribution 'normal'"),
        ("learning_rate: {choice: []}", "choice needs a non-empty list"),
        ("learning_rate: {uniform: [0.1, 0.01]}", "low 0.1 > high 0.01"),
        ("learning_rate: {loguniform: [0, 0.01]}", "loguniform needs low > 0"),
        ("learning_rate: {quniform: [0.1, 0.5]}", "quniform needs [low, high, q]"),
        ("learning_rate: 0.001", "expected one distribution"),
        ("learnig_rate: {choice: [0.001]}", "did you mean 'learning_rate'"),
        ("seed: {choice: [1, 2]}", "cannot be searched"),
        # Never valid in any combination: the model's own check names the setting.
        ("steps: {choice: [0, -1]}", "steps: got 0"),
    ],
)
def test_bad_search_space_is_rejected_before_ray_starts(workdir, space, message):
    path = write(workdir / "space.yaml", f"space:\n  {space}\n")
    with pytest.raises(ValueError, match="space.yaml") as err:
        run_search("DiffRec", "ml-100k", path)
    assert message in str(err.value)


def test_bad_tune_options_and_files(workdir):
    ok = "space:\n  learning_rate: {choice: [0.001]}\n"
    path = write(workdir / "a.yaml", ok + "tune:\n  schedular: asha\n")
    with pytest.raises(ValueError, match="unknown tune option 'schedular'"):
        load_search_space(path)
    path = write(workdir / "b.yaml", ok + "tune:\n  scheduler: hyperband\n")
    with pytest.raises(
        ValueError, match="scheduler: got 'hyperband'; allowed: asha or fifo"
    ):
        load_search_space(path)
    with pytest.raises(ValueError, match="num_samples: got 0"):
        load_search_space(write(workdir / "c.yaml", ok), {"num_samples": 0})
    path = write(
        workdir / "d.yaml",
        "space:\n  learning_rate: {uniform: [0.001, 0.01]}\ntune:\n  search: grid\n",
    )
    with pytest.raises(ValueError, match="search: grid enumerates every value"):
        load_search_space(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_search_space(str(workdir / "missing.yaml"))


def test_grace_period_beyond_the_evaluations_is_refused_before_ray_starts(workdir):
    # Ray's ASHA asserted grace_period <= max_t with a traceback after the search began.
    path = write(
        workdir / "g.yaml",
        "space:\n  learning_rate: {choice: [0.001]}\ntune:\n  grace_period: 4\n",
    )
    with pytest.raises(
        ValueError, match=r"grace_period: got 4 with epochs=1 .*\[1, 2\]"
    ):
        run_search("DiffRec", "ml-100k", path, fixed={"epochs": 1, "eval_step": 1})


def test_space_values_are_checked_in_combination(workdir):
    # noise_min 0.01 only works with noise_max 0.02: accepted (some combination is valid).
    path = write(
        workdir / "space.yaml",
        """
        space:
          noise_min: {choice: [0.001, 0.01]}
          noise_max: {choice: [0.005, 0.02]}
        """,
    )
    spec = load_search_space(path)
    from recbole_diffrec.tune import check_space_against_model

    check_space_against_model(spec, build_config("DiffRec", "ml-100k", [], {}))
    # 0.05 is above every noise_max: no combination can use it.
    path = write(
        workdir / "space2.yaml",
        """
        space:
          noise_min: {choice: [0.001, 0.05]}
          noise_max: {choice: [0.005, 0.02]}
        """,
    )
    with pytest.raises(ValueError, match="noise_min'?: value 0.05 fails"):
        check_space_against_model(
            load_search_space(path), build_config("DiffRec", "ml-100k", [], {})
        )


def test_large_spaces_are_still_checked(workdir):
    # 70 x 70 x 2 combinations: more than the old check's 4,096, past which it stopped
    # checking and accepted steps 0, which no combination can use.
    rates = ", ".join(f"{1e-4 * (i + 1):.4g}" for i in range(70))
    path = write(
        workdir / "big.yaml",
        f"""
        space:
          learning_rate: {{choice: [{rates}]}}
          weight_decay: {{choice: [{rates}]}}
          steps: {{choice: [5, 0]}}
        """,
    )
    from recbole_diffrec.tune import check_space_against_model

    with pytest.raises(
        ValueError, match="'steps': value 0 fails .* in all 4096 sampled"
    ):
        check_space_against_model(
            load_search_space(path), build_config("DiffRec", "ml-100k", [], {})
        )


def test_shipped_search_spaces_fit_their_models():
    for path in sorted((ROOT / "properties" / "hyper").glob("*.yaml")):
        spec = load_search_space(str(path))
        from recbole_diffrec.tune import check_space_against_model

        check_space_against_model(spec, build_config(path.stem, "ml-100k", [], {}))
    assert {p.stem for p in (ROOT / "properties" / "hyper").glob("*.yaml")} >= {
        "DiffRec",
        "LDiffRec",
        "TDiffRec",
        "LTDiffRec",
        "BPR",
        "LightGCN",
        "MultiVAE",
        "CDAE",
        "EASE",
        "DiffuRec",
        "SeqDiffRec",
    }


def test_trial_device_and_helpers(monkeypatch):
    assert device_settings([]) == {"gpu_id": ""}
    assert device_settings([3]) == {"gpu_id": "3"}
    assert device_settings(["1", "2"]) == {"gpu_id": "1,2"}
    # RecBole's Config applies gpu_id to CUDA_VISIBLE_DEVICES: the trial sees only its GPUs.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    config = build_config("DiffRec", "ml-100k", [], device_settings([3]))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    config = build_config("DiffRec", "ml-100k", [], device_settings([]))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and config["device"].type == "cpu"
    assert trial_index("a1b2c_00007") == 7
    assert parse_cli_value("1e-3") == 0.001 and parse_cli_value("[300]") == [300]
    assert parse_cli_value("linear-var") == "linear-var"
    assert parse_cli_value("__import__('os')") == "__import__('os')"  # never evaluated


@pytest.mark.slow
def test_ray_is_imported_only_for_searches(tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.argv = ["x", "--epochs=1", "--state=WARNING"]  # RecBole's Config reads these
        import recbole_diffrec, recbole_diffrec.tune.space
        assert "recbole" not in sys.modules, "reading a space file imported RecBole"
        import recbole_diffrec.tune as tune
        for name in tune.__all__:  # every public name loads without Ray
            getattr(tune, name)
        from recbole_diffrec.cli import main
        assert main(["--model=DiffRec", "--dataset=ml-100k"]) == 0
        open("bad.yaml", "w").write("space:\\n  steps: {choice: []}\\n")
        assert main(["--model=DiffRec", "--dataset=ml-100k", "--tune=bad.yaml"]) == 2
        assert "ray" not in sys.modules, "ray was imported"
        print("NO RAY")
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO RAY" in proc.stdout
    assert "choice needs a non-empty list" in proc.stderr


def test_only_the_command_line_imports_the_tune_package():
    # The tune package sits above the runner, config, trainer and registry: nothing below
    # it may import it (function-level imports count).
    from test_layering import import_graph

    users = {
        module
        for module, deps in import_graph().items()
        if not module.startswith("recbole_diffrec.tune")
        and any(d.split(".")[:2] == ["recbole_diffrec", "tune"] for d in deps)
    }
    assert users == {"recbole_diffrec.cli"}


def read_trials(exp_dir: Path):
    with open(exp_dir / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_trial_search_reports_every_evaluation_and_best_yaml_reruns(workdir):
    space = write(
        workdir / "space.yaml",
        """
        space:
          learning_rate: {grid: [0.001, 0.0001]}
        tune:
          num_samples: 1
          scheduler: asha
          grace_period: 3
          # one trial at a time, so ASHA's decision at the epoch-3 rung is deterministic
          max_concurrent_trials: 1
        """,
    )
    proc = subprocess.run(
        [
            sys.executable,
            RUNNER,
            "--model=DiffRec",
            "--dataset=ml-100k",
            f"--tune={space}",
        ]
        + TINY,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp_dir = workdir / "saved" / "tune" / "DiffRec-ml-100k-space"
    trials = sorted(read_trials(exp_dir), key=lambda t: t["trial"])
    assert len(trials) == 2
    assert {t["seed"] for t in trials} == {"2020", "2021"}  # a seed per trial
    metric = "best valid mrr@10"  # RecBole's default valid_metric for ml-100k
    rung_scores = []
    for trial in trials:
        progress = list(csv.DictReader(open(Path(trial["path"]) / "progress.csv")))
        evaluations = [r for r in progress if r.get("valid_recall@10")]
        # every evaluation reported, not just the last (a finished trial adds its final)
        epochs = [int(r["epoch"]) for r in evaluations]
        assert epochs[:3] == [1, 2, 3]
        if trial["status"] == "finished":
            assert epochs == [1, 2, 3, 3]
        rung_scores.append(float(evaluations[2]["valid_score"]))  # ASHA's epoch-3 rung
        # each trial ran in its own folder with its own checkpoints
        assert list((Path(trial["path"]) / "checkpoints").glob("*.pth"))
    # The first trial has the rung to itself and finishes; ASHA (reduction factor 2) stops
    # the second at the rung exactly when it scores below the first there.
    assert trials[0]["status"] == "finished"
    expected = "stopped by scheduler" if rung_scores[1] < rung_scores[0] else "finished"
    assert trials[1]["status"] == expected
    for trial in trials:
        if trial["status"] == "finished":
            # the test metrics of the trial's best checkpoint
            (checkpoint,) = (Path(trial["path"]) / "checkpoints").glob("*.pth")
            scores = evaluate_checkpoint_on_test(str(checkpoint))
            assert float(trial["test_recall@10"]) == pytest.approx(
                scores["test_recall@10"], abs=1e-4
            )

    best = json.loads((exp_dir / "best.json").read_text())
    (chosen,) = [t for t in trials if t["trial"] == best["trial"]]
    # recorded beside the best, even if stopped (the rerun below checks the numbers)
    assert best["test_recall@10"] == float(chosen["test_recall@10"])
    assert best[metric] == max(float(t[metric]) for t in trials)  # chosen on validation
    assert "rerun:" in (exp_dir / "best.yaml").read_text()
    assert "rerun the best: python run_recbole_diffrec.py" in proc.stdout
    assert (exp_dir / "trials.md").read_text().count("(chosen)") == 1

    # best.yaml runs through the runner as it is and reproduces the chosen trial.
    settings = yaml.safe_load((exp_dir / "best.yaml").read_text())
    assert settings["learning_rate"] == best["learning_rate"]
    assert settings["seed"] == best["seed"]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run(
            "DiffRec", "ml-100k", config_file_list=[str(exp_dir / "best.yaml")]
        )
    finally:
        torch.set_num_threads(threads)
    assert result["best_valid_result"]["mrr@10"] == pytest.approx(
        best[metric], abs=1e-4
    )
    assert result["test_result"]["recall@10"] == pytest.approx(
        best["test_recall@10"], abs=1e-4
    )


@pytest.fixture
def ray_cluster(tmp_path, monkeypatch):
    """An existing Ray cluster (a head node on this machine), as a user's cluster would be:
    secured by a token on Ray versions that have token authentication (Ray 2.6.3 ignores
    the two variables). The search processes inherit the variables, as a user exports
    them before joining such a cluster."""
    import secrets
    import socket

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_cli = str(Path(sys.executable).with_name("ray"))
    # A temp dir of its own (short: Ray's socket paths must fit 107 characters), so that
    # teardown stops this cluster only: `ray stop` would kill every Ray on the machine,
    # a search the user is running included.
    temp_dir = tempfile.mkdtemp(prefix="rdt", dir="/tmp")
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={port}",
            f"--temp-dir={temp_dir}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes_using(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_processes_using(temp_dir: str, port: int) -> None:
    """Kill the processes of the cluster started with ``temp_dir``: their command lines
    name the folder, or the head's port (the Ray client server); workers exit with their
    raylet. No other Ray on the machine is touched."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if temp_dir in " ".join(args) or any(
            a.startswith(("--address=", "--gcs-address=")) and a.endswith(f":{port}")
            for a in args
        ):
            mine.append(proc)
    for proc in mine:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(mine, timeout=30)


@pytest.mark.slow
def test_interrupted_search_on_a_cluster_resumes_without_losing_finished_trials(
    tmp_path, ray_cluster
):
    # One interrupted search resumed twice on the cluster: from its folder as Ray left
    # it, then, that folder lost, from the snapshot the tuned suite would have committed
    # (benchmarks/sections/tuned_folders.py). Neither resume runs the finished trial again.
    from benchmarks.sections.tuned_folders import unpack_snapshot, write_snapshot

    space = write(
        tmp_path / "space.yaml",
        """
        space:
          epochs: {grid: [2, 12]}
        tune:
          num_samples: 1
          scheduler: fifo
          max_concurrent_trials: 1
        """,
    )
    command = (
        [
            sys.executable,
            RUNNER,
            "--model=DiffRec",
            "--dataset=ml-100k",
            f"--tune={space}",
            f"--address={ray_cluster}",  # joins the running cluster instead of a local Ray
        ]
        + TINY
        + ["--stopping_step=100"]
    )
    exp_dir = tmp_path / "saved" / "tune" / "DiffRec-ml-100k-space"
    # One trial at a time (grid order: the short one first): Ctrl+C once the second
    # has started lands after the first has finished.
    returncode, output = interrupt_once_started(
        command, tmp_path, f"{exp_dir}/run_trial_*epochs=12_*"
    )
    assert "interrupted; run the same command again to resume" in output, output[-3000:]
    assert returncode == 130, output[-3000:]  # interrupted mid-search
    (finished,) = exp_dir.glob("run_trial_*epochs=2_*")
    assert '"finished": true' in (finished / "result.json").read_text()

    # What the suite commits while a search runs: finished trials without checkpoints.
    snapshot = write_snapshot(exp_dir)  # beside the Tune folders, not in this one
    with tarfile.open(snapshot) as tar:
        names = tar.getnames()
    assert any(finished.name in n for n in names)
    assert not any("epochs=12_" in n for n in names)  # the unfinished trial
    assert not any("/checkpoints/" in n for n in names)

    def resume_and_check():
        resumed = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        trials = read_trials(exp_dir)
        assert len(trials) == 2 and {t["status"] for t in trials} == {"finished"}
        best = json.loads((exp_dir / "best.json").read_text())
        assert best["trial"] in {t["trial"] for t in trials}
        assert "resuming the search" in resumed.stdout
        assert "Connecting to existing Ray cluster" in resumed.stderr + resumed.stdout
        # The trial finished before Ctrl+C was not run again.
        assert (finished / "starts.log").read_text().count("\n") == 1

    resume_and_check()  # from the folder as the interrupted search left it

    shutil.rmtree(exp_dir)  # the machine is lost with everything not committed
    unpack_snapshot(snapshot, exp_dir)
    resume_and_check()
    (other,) = [p for p in exp_dir.glob("run_trial_*") if "epochs=12_" in p.name]
    assert (other / "starts.log").read_text().count("\n") == 1  # afresh, once
    progress = (other / "result.json").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in progress if line.strip()]
    assert epochs[0] == 1 and max(epochs) <= 12  # from epoch 1, nothing from before


def test_stopped_trial_is_scored_on_test_from_its_checkpoint(workdir):
    # A trial ASHA stops never reaches its own test evaluation; if it is the chosen one,
    # its best checkpoint is evaluated afterwards, with the same numbers.
    from conftest import FAST

    result = run("DiffRec", "ml-100k", config_dict=dict(FAST), saved=True)
    scores = evaluate_checkpoint_on_test(result["model_file"])
    assert scores == {
        f"test_{k}": pytest.approx(v) for k, v in result["test_result"].items()
    }


def test_paths_are_made_absolute_for_trials(workdir, release):
    # Ray runs every trial in its own folder: relative paths must not reach the trials.
    from conftest import PAPER_PROTOCOL_YAML
    from recbole_diffrec.tune.search import _absolute_paths

    folder, _ = release
    os.symlink(folder, workdir / "rel")
    config = build_config(
        "LDiffRec",
        "ml-1m_clean",
        [PAPER_PROTOCOL_YAML],
        {"release_path": "rel", "data_path": "data/", "item_emb_path": "emb.npy"},
    )
    out = _absolute_paths(config, {})
    assert out["release_path"] == str(workdir / "rel")
    assert out["data_path"] == str(workdir / "data")
    assert out["item_emb_path"] == str(workdir / "emb.npy")
