"""Respaced (fast) inference for the sequential models (``inference_steps``): the full
chain comes back exactly, the spaced chain keeps the right steps and alpha_bar, the
denoiser is called once per kept step with the original step index, bad values fail."""

import pytest
import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from conftest import SEQ_TINY as TINY
from conftest import SEQUENCE_YAML
from recbole_diffrec import run
from recbole_diffrec.config import Config
from recbole_diffrec.convert import ensure_release_converted
from recbole_diffrec.data import data_preparation
from recbole_diffrec.diffusion import GaussianDiffusion, SpacedDiffusion
from recbole_diffrec.models.sequential import chain_steps, respaced_chain
from recbole_diffrec.synthetic import generate_sequences, write_sequences

STEPS = TINY["steps"]  # 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One generated dataset and its test batch, shared by the module's models."""
    folder = tmp_path_factory.mktemp("respace")
    path = write_sequences(
        generate_sequences(60, 30, 6, 12, follow=0.9, seed=0), folder / "gen.jsonl"
    )
    settings = {"sequence_file": str(path), "data_path": str(folder / "data")}
    built = {}

    def build(model, **extra):
        config = Config(
            model, "gen-seq", [SEQUENCE_YAML], {**TINY, **settings, **extra}
        )
        init_seed(0, True)
        if model not in built:
            ensure_release_converted(config)
            train, _, test = data_preparation(config, create_dataset(config))
            built[model] = (train.dataset, next(iter(test))[0])
        dataset, interaction = built[model]
        init_seed(0, True)
        net = config.model_class(config, dataset)
        net.eval()
        return net, interaction

    return build


def scores(net, interaction, seed=1):
    torch.manual_seed(seed)
    return net.full_sort_predict(interaction)


def count_calls(net, method, monkeypatch):
    """Record the step indices of every call to ``net.<method>(..., x_t, t)``."""
    seen = []
    original = getattr(net, method)

    def counted(*args):
        seen.append(args[-1].unique().tolist())
        return original(*args)

    monkeypatch.setattr(net, method, counted)
    return seen


# ---------------------------------------------------------------------------- the chain
def test_chain_steps_and_spaced_schedule_closed_form():
    assert chain_steps(32, 32) == list(range(32))
    assert chain_steps(32, 8) == [0, 4, 9, 13, 18, 22, 27, 31]
    assert chain_steps(32, 2) == [0, 31]
    assert chain_steps(32, 1) == [31]  # a one-step chain starts where the noise is
    assert chain_steps(10, 3) == [0, 4, 9]

    base = GaussianDiffusion(
        "x0", "trunc-linear", 1.0, 1e-4, 0.02, 32, False, "uniform"
    )
    assert respaced_chain(base, None) is None
    assert respaced_chain(base, 32) is None  # the full chain itself: bit-identical
    for count, start in ((8, None), (1, None), (5, 20), (20, 20)):
        chain = respaced_chain(base, count, start)
        kept = chain_steps(start or 32, count)
        assert chain.steps == count and chain.timestep_map.tolist() == kept
        abar = base.alphas_cumprod[kept]
        # Improved DDPM: the kept steps keep their alpha_bar...
        assert torch.allclose(chain.alphas_cumprod, abar, rtol=1e-9, atol=1e-15)
        # ...so beta_i = 1 - abar_i / abar_(i-1 kept).
        prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        assert torch.allclose(chain.betas, 1 - abar / prev, rtol=1e-12, atol=0)
        # DiffuRec's "large" variance is the spaced beta.
        if count > 1:
            assert torch.allclose(
                chain.large_log_variance[1:].exp(), chain.betas[1:], rtol=1e-12
            )


# ---------------------------------------------------------------------------- DiffuRec
def test_diffurec_full_chain_is_returned_exactly(data, monkeypatch):
    net, interaction = data("DiffuRec")
    assert net.inference_steps is None and net.inference_chain is None
    full = scores(net, interaction)
    assert torch.equal(full, scores(net, interaction))  # seeded: repeatable

    # inference_steps = steps, from the config or set on the trained model: identical.
    same, _ = data("DiffuRec", inference_steps=STEPS)
    same.load_state_dict(net.state_dict())
    assert torch.equal(scores(same, interaction), full)
    net.set_inference_steps(STEPS)
    assert net.inference_chain is None
    assert torch.equal(scores(net, interaction), full)

    # The respacing machinery over every step is the same chain up to float rounding.
    net.inference_chain = SpacedDiffusion(net.diffusion, range(STEPS))
    assert torch.allclose(scores(net, interaction), full, rtol=1e-4, atol=1e-4)

    # Fewer steps: one approximator call per kept step, at the original step index
    # (the step embedding still sees t x 1000 / 24).
    seen = count_calls(net, "approximate_x0", monkeypatch)
    net.set_inference_steps(4)
    fast = scores(net, interaction)
    assert seen == [[23], [15], [8], [0]]
    assert fast.shape == full.shape and torch.isfinite(fast).all()
    assert not torch.allclose(fast, full)
    seen.clear()
    net.set_inference_steps(None)
    assert torch.equal(scores(net, interaction), full)
    assert len(seen) == STEPS
    # Nothing is added to the checkpoint: a model saved with either setting loads in both.
    net.set_inference_steps(8)
    assert net.state_dict().keys() == same.state_dict().keys()


def test_diffurec_respaced_chain_written_out(data):
    """Without sampling noise, the 3-step chain is x <- c1 x0(x, t) + c2 x at the kept
    steps, with the posterior coefficients of the kept alpha_bar (float64)."""
    net, interaction = data("DiffuRec", sampling_noise=False, inference_steps=3)
    kept = chain_steps(STEPS, 3)
    assert net.inference_chain.timestep_map.tolist() == kept == [0, 12, 23]
    abar = net.diffusion.alphas_cumprod[kept]
    prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    beta = 1 - abar / prev
    c1 = beta * prev.sqrt() / (1 - abar)
    c2 = (1 - prev) * (1 - beta).sqrt() / (1 - abar)

    torch.manual_seed(1)
    item_seq, item_seq_len = net.history(interaction)
    history, masks = net.encode_history(item_seq), net._masks(item_seq)
    x = torch.randn(len(item_seq), net.hidden_size)
    for i in reversed(range(3)):
        t = torch.full((len(x),), kept[i])
        x0 = net.approximate_x0(history, masks, item_seq_len, x, t)
        x = float(c1[i]) * x0 + float(c2[i]) * x
    by_hand = x @ net.item_embedding.weight.T
    assert torch.allclose(scores(net, interaction), by_hand, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- SeqDiffRec
def test_seqdiffrec_one_call_default_and_chain(data, monkeypatch):
    net, interaction = data("SeqDiffRec", inference_step=10)
    assert net.inference_steps is None and net.inference_chain is None
    seen = count_calls(net, "denoise", monkeypatch)
    one_call = scores(net, interaction)
    assert seen == [[9]]  # ~: x0 in one denoiser call at inference_step

    # ~ is exactly what it was: the draws' x0 predicted from noise at step 10, averaged.
    draws, batch = net.inference_draws, len(interaction)
    torch.manual_seed(1)
    item_seq, item_seq_len = net.history(interaction)
    start = float(net.diffusion.sqrt_one_minus_alphas_cumprod[9]) * torch.randn(
        batch * draws, net.hidden_size
    )
    t = torch.full((batch * draws,), 9)
    x0 = net.denoise(item_seq.repeat(draws, 1), item_seq_len.repeat(draws), start, t)
    by_hand = net.round_logits(x0.view(draws, batch, -1).mean(0))
    assert torch.equal(one_call, by_hand)

    # A one-step chain from inference_step is that same call (up to float rounding).
    net.set_inference_steps(1)
    seen.clear()
    assert torch.allclose(scores(net, interaction), one_call, rtol=1e-5, atol=1e-5)
    assert seen == [[9]]

    # n steps from inference_step down to 0: n denoiser calls at the kept steps.
    net.set_inference_steps(3)
    seen.clear()
    chain = scores(net, interaction)
    assert seen == [[9], [4], [0]]
    assert torch.isfinite(chain).all() and not torch.allclose(chain, one_call)
    # Every step (inference_steps = inference_step) is a real chain too.
    net.set_inference_steps(10)
    seen.clear()
    scores(net, interaction)
    assert seen == [[s] for s in reversed(range(10))]
    net.set_inference_steps(None)
    assert torch.equal(scores(net, interaction), one_call)


def test_seqdiffrec_chain_from_the_last_step_without_noise(data, monkeypatch):
    net, interaction = data("SeqDiffRec", inference_steps=4, sampling_noise=False)
    assert net.inference_step == STEPS
    seen = count_calls(net, "denoise", monkeypatch)
    first = scores(net, interaction)
    assert seen == [[23], [15], [8], [0]]
    assert torch.equal(scores(net, interaction), first)


# ---------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "model, settings, message",
    [
        (
            "DiffuRec",
            {"steps": 24, "inference_steps": 25},
            "inference_steps: got 25; allowed: null (the full chain) or an integer "
            "in [1, steps=24]",
        ),
        ("DiffuRec", {"inference_steps": 0}, "inference_steps: got 0"),
        ("DiffuRec", {"inference_steps": 2.5}, "inference_steps: got 2.5"),
        (
            "SeqDiffRec",
            {"steps": 100, "inference_step": 10, "inference_steps": 11},
            "inference_steps: got 11; allowed: null (one denoiser call at "
            "inference_step) or an integer in [1, inference_step=10]",
        ),
        (
            "SeqDiffRec",
            {"steps": 100, "inference_steps": 101},
            "inference_steps: got 101; allowed: null (one denoiser call at "
            "inference_step) or an integer in [1, steps=100]",
        ),
    ],
)
def test_bad_inference_steps_fail_before_loading_data(
    workdir, model, settings, message
):
    with pytest.raises(ValueError) as err:
        run(model, "no-such-dataset", config_dict=settings)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("model", ["DiffuRec", "SeqDiffRec"])
def test_set_inference_steps_is_checked(data, model):
    net, _ = data(model, inference_step=None)
    for bad in (0, STEPS + 1, True, "8"):
        with pytest.raises(ValueError, match="inference_steps: got"):
            net.set_inference_steps(bad)
    assert net.inference_steps is None  # unchanged


# ---------------------------------------------------------------------------- benchmark
def test_steps_benchmark_summary_on_fake_evaluations(tmp_path):
    """The report part of benchmarks/bench_sequential_steps.py on made-up per-user
    results: paired differences, CI, speed-up and the target verdict."""
    import json

    import numpy as np

    from benchmarks import bench_sequential_steps as bench

    out = tmp_path / "out"
    (out / "eval").mkdir(parents=True)
    train = {
        "settings": {**bench.SHRUNK, "steps": 32},
        "parameters": 1,
        "epochs": 3.0,
        "wall_seconds": 60.0,
        "best_valid": {"ndcg@10": 0.05},
        "recbole_test_full_chain": {"ndcg@10": 0.05},
        "validations": [{"epoch": 1, "ndcg@10": 0.05}],
        "model_file": "none",
    }
    (out / "train.json").write_text(json.dumps(train))
    rng = np.random.default_rng(0)
    users = 400
    for s in range(3):
        full = (rng.random(users) < 0.3) * rng.random(users)
        for steps, seconds in ((32, 32.0), (8, 8.0), (1, 1.0)):
            ndcg = full.copy()
            if steps == 1:  # a big loss on a tenth of the users
                ndcg[: users // 10] = 0.0
            np.savez(
                out / "eval" / f"steps{steps}_seed{s}.npz",
                wall=seconds,
                cpu=seconds,
                ndcg=ndcg,
                hit=(ndcg > 0).astype(float),
            )
    report = tmp_path / "report.md"
    bench.main(
        ["--report-only", "--no-popularity", "--out", str(out), "--report", str(report)]
    )
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["steps"]: r for r in summary["rows"]}
    assert summary["seeds"] == 3 and summary["users"] == users
    assert rows[8]["ndcg_diff"] == 0 and rows[8]["speedup"] == 4.0
    assert rows[1]["ndcg_rel_diff"] < -0.02 and rows[1]["ndcg_diff_ci95"] > 0
    assert summary["target_met_by"] == [8]
    assert "**met** by inference_steps 8" in report.read_text()


def test_steps_benchmark_training_resumes_until_it_ends(tmp_path):
    """The benchmark's training spans invocations: a budget that ends the first one in
    its second epoch leaves train-progress.json and no train.json; the next continues
    from the state file to the last epoch and matches an uninterrupted run exactly."""
    import argparse
    import itertools
    import json

    from benchmarks import bench_sequential_steps as bench

    path = write_sequences(
        generate_sequences(40, 20, 6, 10, follow=0.9, seed=0), tmp_path / "gen.jsonl"
    )
    fields = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id"}
    columns = {
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    }
    data = {"sequence_file": str(path), "data_path": str(tmp_path / "data")}

    def invoke(name, over_budget=None):
        args = argparse.Namespace(
            minutes=60.0, max_epochs=3, out=tmp_path / name, evaluate_unfinished=False
        )
        args.out.mkdir(exist_ok=True)
        extra = {**TINY, **fields, **columns, **data}
        extra["checkpoint_dir"] = str(tmp_path / name / "saved")
        return bench.train(args, "gen-seq", extra, over_budget), args.out

    calls = itertools.count()
    first, out = invoke("cut", lambda: next(calls) >= 6)  # 4 batches per epoch
    progress = json.loads((out / "train-progress.json").read_text())
    assert first is None and not (out / "train.json").exists()
    assert progress["budget_spent"] and progress["epochs"] == 1
    assert [v["epoch"] for v in progress["validations"]] == [1]

    resumed, out = invoke("cut")
    assert json.loads((out / "train.json").read_text()) == json.loads(
        json.dumps(resumed)
    )
    assert not resumed["budget_spent"] and resumed["sessions"] == 2
    assert resumed["epochs"] == 3
    assert resumed["wall_seconds"] > progress["wall_seconds"]

    whole, _ = invoke("whole")
    assert whole["sessions"] == 1 and whole["epochs"] == 3

    def metrics(record):
        return [
            {k: v for k, v in row.items() if k != "seconds"}
            for row in record["validations"]
        ]

    assert metrics(resumed) == metrics(whole)
    assert resumed["recbole_test_full_chain"] == whole["recbole_test_full_chain"]
