"""Data-parallel training (CPU, gloo): 2 processes equal 1 process on the same global batch.

Spawning processes is slow, so every two-process run of the module happens in one launched
job (:func:`_jobs`), compared with the same jobs run in this process. The equality checks
use SGD and no dropout: Adam divides by the square root of tiny second moments and turns
the ~1e-7 float differences of a sum split over two ranks into ~1e-4.
"""

import time

import pytest
import torch

from conftest import (
    FAST,
    PAPER_PROTOCOL_YAML,
    SEQ_TINY,
    SEQUENCE_YAML,
    SVD,
    make_release,
    release_settings,
)
from dist_helpers import fails_on_rank_1
from recbole_diffrec import distributed
from recbole_diffrec.config import config_from_settings
from recbole_diffrec.diffusion.resample import (
    BatchShard,
    LossSecondMomentSampler,
    batch_shard,
    draw_rows,
)
from recbole_diffrec.distributed import DistributedRunError
from recbole_diffrec.errors import BadInputError
from recbole_diffrec.quick_start import run, run_config

# Under pytest-xdist these tests stay on one worker: most share the module's `runs`, which
# trains every model once in one process and once in two.
pytestmark = pytest.mark.xdist_group("distributed-runs")
EXACT = {"learner": "sgd", "learning_rate": 0.001, "dropout": 0.0}


def _job_list(workdir):
    from recbole_diffrec.synthetic import generate_sequences, write_sequences

    folder = workdir / "release"
    # 193 users in batches of 64: the last batch has one row, so rank 1 gets none.
    make_release(folder, users=193, items=120)
    toy = release_settings(folder, workdir, **FAST)
    seqs = write_sequences(
        generate_sequences(60, 30, 6, 12, follow=0.9, seed=0), workdir / "gen.jsonl"
    )
    seq = {
        **SEQ_TINY,
        "epochs": 2,
        "sequence_file": str(seqs),
        "data_path": str(workdir / "data"),
        "learner": "sgd",
        "learning_rate": 0.01,
    }
    toy_files = [PAPER_PROTOCOL_YAML]
    jobs = {
        "DiffRec": ("DiffRec", "toy", toy_files, {**toy, **EXACT}),
        "LDiffRec": (
            "LDiffRec",
            "toy",
            toy_files,
            {**toy, **EXACT, **SVD, "ae_dropout": 0.0},
        ),
        "DiffuRec": ("DiffuRec", "gen-seq", [SEQUENCE_YAML], seq),
        "SeqDiffRec": ("SeqDiffRec", "gen-seq", [SEQUENCE_YAML], dict(seq)),
        "BPR": ("BPR", "toy", toy_files, {**toy, **EXACT}),
        # Defaults (Adam, dropout): within seed noise, not equal.
        "DiffRec-default": ("DiffRec", "toy", toy_files, dict(toy)),
        # One epoch, then a second run resumed from its training state.
        "DiffRec-1epoch": ("DiffRec", "toy", toy_files, {**toy, **EXACT, "epochs": 1}),
        "DiffRec-resumed": (
            "DiffRec",
            "toy",
            toy_files,
            {**toy, **EXACT, "resume": "auto"},
        ),
    }
    for name, (_, _, _, settings) in jobs.items():
        folder = "resume" if name in ("DiffRec-1epoch", "DiffRec-resumed") else name
        settings["checkpoint_dir"] = str(workdir / "saved" / folder)
    return jobs


def _run_job(job, nproc_dir):
    model, dataset, files, settings = job
    nproc = int(nproc_dir[1:])
    settings = dict(
        settings, checkpoint_dir=settings["checkpoint_dir"] + nproc_dir, nproc=nproc
    )
    result = run_config(config_from_settings(model, dataset, settings, files))
    state = torch.load(result["state_file"], weights_only=True)["state_dict"]
    return {
        "valid_curve": result["valid_curve"],
        "test_result": dict(result["test_result"]),
        "params": {k: v for k, v in state.items() if v.is_floating_point()},
    }


def _jobs(local_rank, jobs):
    """Every job in turn in one launched process; rank 0's results."""
    return {name: _run_job(job, "-2") for name, job in jobs.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os
    import sys

    workdir = tmp_path_factory.mktemp("dist")
    saved_cwd, saved_argv = os.getcwd(), sys.argv
    os.chdir(workdir)
    sys.argv = ["pytest"]
    try:
        jobs = _job_list(workdir)
        start = time.perf_counter()
        one = {
            name: _run_job(job, "-1")
            for name, job in jobs.items()
            if name not in ("DiffRec-1epoch", "DiffRec-resumed")
        }
        print(f"one-process jobs: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        two = distributed.launch(_jobs, (jobs,), 2)
        print(f"two-process jobs: {time.perf_counter() - start:.1f} s")
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
    return one, two


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    "model", ["DiffRec", "LDiffRec", "DiffuRec", "SeqDiffRec", "BPR"]
)
def test_two_processes_equal_one(runs, model):
    one, two = runs
    params = {k: v for k, v in one[model]["params"].items() if "loss_history" not in k}
    other = {k: two[model]["params"][k] for k in params}
    diff = _max_diff(params, other)
    print(f"{model}: largest parameter difference {diff:.1e}")
    assert diff < 1e-5
    assert two[model]["valid_curve"] == one[model]["valid_curve"]
    assert two[model]["test_result"] == one[model]["test_result"]


def test_default_settings_within_seed_noise(runs):
    one, two = runs
    a, b = one["DiffRec-default"], two["DiffRec-default"]
    for key, value in a["test_result"].items():
        assert abs(b["test_result"][key] - value) <= 0.02, key


def test_a_distributed_run_resumes_from_its_training_state(runs):
    _, two = runs
    whole, resumed = two["DiffRec"], two["DiffRec-resumed"]
    assert len(resumed["valid_curve"]) == 2
    assert resumed["valid_curve"] == whole["valid_curve"]
    assert resumed["test_result"] == whole["test_result"]
    assert _max_diff(whole["params"], resumed["params"]) == 0


def test_a_failing_rank_stops_the_job_with_one_error():
    start = time.perf_counter()
    with pytest.raises(DistributedRunError) as caught:
        distributed.launch(fails_on_rank_1, (distributed.free_port(),), 2)
    assert caught.value.rank == 1
    assert str(caught.value) == "rank 1 failed: ValueError: boom on purpose"
    assert time.perf_counter() - start < 100  # the collective's timeout is 120 s


@pytest.mark.slow
def test_two_launchers_join_one_job_like_two_nodes(tmp_path):
    """RecBole's multi-node flags through the command line: two launchers on this machine
    (one process each, world_size 2, group_offset 0 and 1, the same ip and port) train
    one job together, report one process's test result, and only rank 0 writes files."""
    import ast
    import os
    import subprocess
    import sys

    from conftest import ROOT

    common = [
        sys.executable,
        str(ROOT / "run_recbole_diffrec.py"),
        "--model=DiffRec",
        "--dataset=ml-100k",
        "--epochs=1",
        "--learner=sgd",
        "--dropout=0.0",
        "--state=WARNING",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = f"--world_size=2 --ip=127.0.0.1 --port={distributed.free_port()} --nproc=1"

    def start(*extra, folder):
        args = [*common, *extra, f"--checkpoint_dir={tmp_path / folder}"]
        return subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
        )

    def test_result(process):
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        line = next(x for x in out.splitlines() if x.startswith("test result"))
        return ast.literal_eval(line.split(": ", 1)[1])

    launched = [
        start(*nodes.split(), f"--group_offset={g}", folder=f"node{g}") for g in (0, 1)
    ]
    node0, node1 = (test_result(p) for p in launched)
    alone = test_result(start(folder="alone"))
    assert node0 == node1 == alone
    assert 0 < alone["ndcg@10"] < 1
    assert list((tmp_path / "node0").glob("DiffRec-*.pth"))
    assert not (tmp_path / "node1").exists() or not any((tmp_path / "node1").iterdir())


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"nproc": 0}, "nproc"),
        ({"nproc": "two"}, "nproc"),
        ({"nproc": 2, "world_size": 1}, "world_size"),
        (
            {"nproc": 2, "world_size": 3, "port": 29500, "group_offset": 2},
            "group_offset",
        ),
        ({"nproc": 1, "world_size": 2}, "port"),
        ({"nproc": 2, "port": 70000}, "port"),
        ({"nproc": 2, "dist_backend": "mpi"}, "dist_backend"),
        ({"nproc": 2, "dist_backend": "nccl", "gpu_id": ""}, "dist_backend"),
        ({"nproc": 2, "dist_timeout": 0}, "dist_timeout"),
    ],
)
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(BadInputError, match=f"^{key}: got .*; allowed: "):
        distributed.settings(settings)


def test_bad_settings_fail_before_any_process_starts(workdir):
    with pytest.raises(BadInputError, match="^nproc: got 0"):
        run("DiffRec", "ml-100k", config_dict={"nproc": 0, "state": "WARNING"})
    with pytest.raises(BadInputError, match="^train_batch_size: got 1 for world"):
        run(
            "DiffRec",
            "ml-100k",
            config_dict={"nproc": 2, "train_batch_size": 1, "state": "WARNING"},
        )


def test_the_command_line_names_the_failing_rank(monkeypatch, capsys):
    from recbole_diffrec import cli

    def failing(*args, **kwargs):
        raise DistributedRunError(1, "ValueError", "bad input on rank 1")

    monkeypatch.setattr(cli, "run", failing)
    assert cli.main(["--model=DiffRec", "--nproc=2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: rank 1 failed: ValueError: bad input on rank 1"
    )


def test_draws_keep_the_shards_rows_of_the_global_draw():
    torch.manual_seed(3)
    whole = torch.randn(7, 4)
    parts = []
    for rank in range(2):
        torch.manual_seed(3)
        shard = BatchShard(rank, 2, 7)
        with batch_shard(shard):
            parts.append(draw_rows(lambda n: torch.randn(n, 4), shard.size))
    assert [len(p) for p in parts] == [4, 3]
    assert torch.equal(torch.cat(parts), whole)
    torch.manual_seed(3)
    assert torch.equal(draw_rows(lambda n: torch.randn(n, 4), 7), whole)


def test_one_process_sampler_update_is_unchanged():
    sampler = LossSecondMomentSampler(4, history_per_term=2)
    t = torch.tensor([0, 1, 1, 3])
    with batch_shard(BatchShard(0, 1, 4)):
        sampler.update(t, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert sampler.loss_counts.tolist() == [1, 2, 0, 1]
