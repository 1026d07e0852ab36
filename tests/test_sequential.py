"""Sequential diffusion recommenders (DiffuRec, SeqDiffRec): schedule, shapes, learning,
evaluation protocols, the sequence converter and bad input."""

import json

import numpy as np
import pytest
import torch
from recbole.data import create_dataset
from recbole.utils import init_seed

from conftest import SEQ_TINY as TINY
from benchmarks.bench_sequential_steps import per_user
from conftest import SEQUENCE_YAML
from recbole_diffrec import get_trainer, load_model, run
from recbole_diffrec.config import Config
from recbole_diffrec.convert import convert_sequences, ensure_release_converted
from recbole_diffrec.data import MaskedHistoryEvalDataLoader, data_preparation
from recbole_diffrec.diffusion import GaussianDiffusion
from recbole_diffrec.diffusion.schedules import get_betas
from recbole_diffrec.models.sequential import TransformerStack, check_sequence_lengths
from recbole_diffrec.synthetic import generate_sequences, write_sequences

MODELS = ("DiffuRec", "SeqDiffRec")


@pytest.fixture
def sequences(workdir):
    """A generated sequence file whose items mostly follow a fixed successor."""
    path = write_sequences(
        generate_sequences(80, 30, 6, 12, follow=0.9, seed=0), workdir / "gen.jsonl"
    )
    return {"sequence_file": str(path), "data_path": str(workdir / "data")}


def build(model, settings, dataset="gen-seq"):
    config = Config(model, dataset, [SEQUENCE_YAML], {**TINY, **settings})
    init_seed(0, True)
    ensure_release_converted(config)
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    return config, config.model_class(config, train.dataset), train, valid, test


# ---------------------------------------------------------------------------- schedule
def test_truncated_linear_schedule_closed_form():
    betas = get_betas("trunc-linear", 32, 0.0, 0.0, 0.0)
    assert betas[0] == pytest.approx(1000 / 32 * 1e-4 + 0.01)  # 0.013125
    assert betas[-1] == pytest.approx(1000 / 32 * 0.02 + 0.01)  # 0.635
    assert np.allclose(np.diff(betas), (betas[-1] - betas[0]) / 31)
    diffusion = GaussianDiffusion(
        "x0", "trunc-linear", 0.1, 0.001, 0.02, 32, beta_fixed=False
    )
    expected = np.cumprod(1 - betas)
    assert np.allclose(diffusion.alphas_cumprod.numpy(), expected)
    # DDPM's "large" reverse variance: beta_t, with the posterior variance at t = 1.
    large = diffusion.large_log_variance.exp().numpy()
    assert large[0] == pytest.approx(float(diffusion.posterior_variance[1]))
    assert np.allclose(large[1:], betas[1:])
    # Below 21 steps the ramp would pass 1; the reference then ends it at scale x 0.001 + 0.01.
    assert get_betas("trunc-linear", 21, 0, 0, 0)[-1] == pytest.approx(
        1000 / 21 * 0.02 + 0.01
    )
    short = get_betas("trunc-linear", 20, 0, 0, 0)
    assert short[0] == pytest.approx(50 * 1e-4 + 0.01)
    assert short[-1] == pytest.approx(50 * 0.001 + 0.01)
    # A one-step chain is its first beta.
    assert get_betas("trunc-linear", 1, 0, 0, 0).tolist() == pytest.approx([0.11])


@pytest.mark.parametrize("variance", ["small", "large"])
def test_reverse_chain_variance_matches_closed_form(variance):
    """With x0 predicted as 0 every reverse step is x <- coef2_t x + sigma_t eps (no noise at
    t = 0), so from x_T = 0 the final variance has a closed form."""
    diffusion = GaussianDiffusion(
        "x0", "trunc-linear", 0.1, 0.001, 0.02, 24, beta_fixed=False
    )
    coef2 = diffusion.posterior_mean_coef2.double()
    sigma2 = (
        diffusion.large_log_variance.double().exp()
        if variance == "large"
        else diffusion.posterior_variance.double()
    )
    expected = 0.0
    for t in reversed(range(diffusion.steps)):
        expected = float(coef2[t]) ** 2 * expected + (float(sigma2[t]) if t else 0.0)
    torch.manual_seed(0)
    samples = diffusion.p_sample_loop(
        lambda x, t: torch.zeros_like(x),
        torch.zeros(50000, 4),
        sampling_noise=True,
        variance=variance,
    )
    assert float(samples.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(samples.var()) == pytest.approx(expected, rel=0.03)
    with pytest.raises(
        ValueError, match="variance: got 'medium'; allowed: small, large"
    ):
        diffusion.p_sample_loop(lambda x, t: x, torch.zeros(2, 4), variance="medium")


# ---------------------------------------------------------------------------- models
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_shapes_and_loss_decreases_on_generated_sequences(sequences, model):
    config, net, train, valid, _ = build(model, {**sequences, "learning_rate": 0.01})
    batch = next(iter(train))
    loss = net.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    net.eval()
    interaction = next(iter(valid))[0]
    scores = net.full_sort_predict(interaction)
    assert scores.shape == (len(interaction), net.n_items)
    assert net.predict(interaction).shape == (len(interaction),)

    def mean_loss():
        torch.manual_seed(1)
        with torch.no_grad():
            return float(np.mean([float(net.calculate_loss(b)) for b in train]))

    net.train()
    before = mean_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        for b in train:
            optimizer.zero_grad()
            net.calculate_loss(b).backward()
            optimizer.step()
    after = mean_loss()
    assert after < 0.7 * before, (before, after)

    # It learnt the order: the target is in the top 10 far more often than chance (10 of
    # 30 items; 90% of targets are the last item's fixed successor).
    net.eval()
    hits = []
    for interaction, _, _, positive in valid:
        torch.manual_seed(0)
        top = net.full_sort_predict(interaction).topk(10).indices
        hits.append((top == positive.unsqueeze(1)).any(1).float())
    assert float(torch.cat(hits).mean()) > 0.6


@pytest.mark.parametrize("model", MODELS)
def test_training_goes_through_the_shared_step_loss(sequences, model, monkeypatch):
    _, net, train, _, _ = build(model, sequences)
    calls = []
    shared = net.diffusion.step_losses

    def recording(x_start, terms):
        calls.append(shared(x_start, terms))
        return calls[-1]

    monkeypatch.setattr(net.diffusion, "step_losses", recording)
    loss = net.calculate_loss(next(iter(train)))
    assert len(calls) == 1 and torch.equal(loss, calls[0]["loss"].mean())


def test_seqdiffrec_ignores_padding_and_sees_the_noised_target(sequences):
    _, net, train, _, _ = build("SeqDiffRec", sequences)
    net.eval()
    batch = next(iter(train))
    seq, length = batch[net.ITEM_SEQ], batch[net.ITEM_SEQ_LEN]
    x_t = torch.randn(len(seq), net.hidden_size)
    t = torch.full((len(seq),), 5)
    out = net.denoise(seq, length, x_t, t)
    # Items after each history are masked out: garbage there changes nothing.
    after = torch.arange(seq.shape[1]).unsqueeze(0) >= length.unsqueeze(1)
    garbage = seq.masked_fill(after, 3)
    assert torch.allclose(net.denoise(garbage, length, x_t, t), out, atol=1e-5)
    # The prediction depends on the noised target placed after the history.
    assert not torch.allclose(net.denoise(seq, length, x_t + 1.0, t), out)


# ---------------------------------------------------------------------------- Transformer
def reference_block(block, x, padded):
    """DiffuRec's reference block written out (eval mode): padded query rows get one
    constant score everywhere (uniform attention), keys are never masked."""
    hidden, heads = x.shape[-1], block.attention.n_heads
    q, k, v = block.attention.qkv(block.attention_norm(x)).split(hidden, dim=-1)
    q, k, v = (
        p.unflatten(-1, (heads, hidden // heads)).transpose(1, 2) for p in (q, k, v)
    )
    scores = q @ k.transpose(-2, -1) / (hidden // heads) ** 0.5
    scores = scores.masked_fill(padded[:, None, :, None], -1e9)
    attended = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
    x = x + block.attention.out(attended)
    inner = block.feed_forward_in(block.feed_forward_norm(x))
    inner = (
        0.5
        * inner
        * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (inner + 0.044715 * inner**3)))
    )
    return x + block.feed_forward_out(inner)


def test_transformer_matches_the_reference_attention_written_out():
    torch.manual_seed(0)
    stack = TransformerStack(16, 2, 4, 0.1, activation="gelu-tanh", block_dropout=True)
    stack.eval()
    x, lengths = torch.randn(5, 7, 16), torch.tensor([1, 3, 7, 5, 2])
    padded = torch.arange(7).unsqueeze(0) >= lengths.unsqueeze(1)
    expected = x
    for block in stack.layers:
        expected = reference_block(block, expected, padded)
    rows = torch.arange(5)
    full = stack(x, uniform_rows=padded)
    assert torch.allclose(full, expected, atol=1e-5)
    # Asking for one position per sequence gives the same values there.
    last = stack(x, uniform_rows=padded, output_index=lengths - 1)
    assert last.shape == (5, 16)
    assert torch.allclose(last, expected[rows, lengths - 1], atol=1e-5)
    # Padded keys stay visible: what sits at a padded position changes the output. (Not a
    # constant shift: the pre-LN blocks normalise each position, so one would vanish.)
    changed = x.clone()
    changed[padded] += torch.randn(int(padded.sum()), 16)
    assert not torch.allclose(
        stack(changed, uniform_rows=padded)[rows, lengths - 1], last
    )


def test_transformer_masks_and_output_index_agree_with_full_output():
    torch.manual_seed(0)
    stack = TransformerStack(16, 2, 2, 0.0).eval()
    x, lengths = torch.randn(4, 6, 16), torch.tensor([0, 2, 5, 3])
    padded = torch.arange(6).unsqueeze(0) > lengths.unsqueeze(1)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    rows = torch.arange(4)
    for attn_mask in (None, causal):
        full = stack(x, attn_mask, padded)
        picked = stack(x, attn_mask, padded, output_index=lengths)
        assert torch.allclose(picked, full[rows, lengths], atol=1e-5)
        # Masked keys are ignored.
        changed = x.masked_fill(padded.unsqueeze(-1), 5.0)
        assert torch.allclose(
            stack(changed, attn_mask, padded, output_index=lengths), picked, atol=1e-5
        )
    # Causal: a position does not see later ones.
    later = x.clone()
    later[:, 3:] += 1.0
    assert torch.allclose(
        stack(later, causal)[:, :3], stack(x, causal)[:, :3], atol=1e-5
    )


def test_block_output_dropout_as_the_reference():
    torch.manual_seed(0)
    x = torch.randn(64, 10, 16)
    with_block = TransformerStack(16, 1, 2, 0.5, block_dropout=True).train()
    without = TransformerStack(16, 1, 2, 0.5).train()
    # Only a dropout on the block output zeroes whole elements of the residual stream.
    assert float((with_block(x) == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    assert float((without(x) == 0).float().mean()) == 0.0


def test_diffurec_initialisation_as_the_reference(sequences):
    _, net, _, _, _ = build("DiffuRec", {**sequences, "hidden_size": 64})
    assert float(net.item_embedding.weight.std()) == pytest.approx(1.0, abs=0.05)
    block = net.transformer.layers[0]
    # PyTorch's default linear init on the projections: uniform within 1/sqrt(fan_in).
    assert float(block.attention.qkv.weight.abs().max()) <= 64**-0.5
    assert float(block.attention.qkv.bias.abs().max()) > 0
    # Xavier-normal feed-forward: std sqrt(2 / (fan_in + fan_out)).
    std = float(block.feed_forward_in.weight.std())
    assert std == pytest.approx((2 / (64 + 256)) ** 0.5, rel=0.05)


def recomputed_metrics(model, test_data, seed: int = 0) -> dict:
    """Hit@10 and NDCG@10 computed here from the model's full-ranking scores (one target
    per sample), drawing the same inference noise as an evaluation seeded alike."""
    init_seed(seed, True)
    found = per_user(model, test_data)
    return {
        "hit@10": float(found["hit"].mean()),
        "ndcg@10": float(found["ndcg"].mean()),
    }


def evaluated_metrics(model, config, test_data, seed: int = 0) -> dict:
    init_seed(seed, True)
    trainer = get_trainer(type(model))(config, model)
    result = trainer.evaluate(test_data, load_best_model=False)
    return {k: result[k] for k in ("hit@10", "ndcg@10")}


def test_empty_history_is_refused():
    with pytest.raises(ValueError, match="empty history"):
        check_sequence_lengths(torch.tensor([3, 0, 2]))


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_end_to_end_on_ml100k_with_checkpoint(workdir, model):
    settings = {
        **TINY,
        "epochs": 1,
        "train_batch_size": 512,
        "train_neg_sample_args": None,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
    }
    result = run(model, "ml-100k", config_dict=settings, saved=True)
    test = result["test_result"]
    assert test["hit@10"] > 10 / 1682  # better than ranking at random
    config, net, _, _, _, test_data = load_model(result["model_file"])
    assert type(net).__name__ == model and not net.training
    # RecBole's evaluation of the reloaded model equals the metrics recomputed from its
    # scores (an evaluation that mis-ranked or mis-counted would differ).
    evaluated = evaluated_metrics(net, config, test_data)
    assert evaluated == pytest.approx(recomputed_metrics(net, test_data), abs=1e-4)
    assert evaluated["hit@10"] > 10 / 1682
    interaction = next(iter(test_data))[0]
    assert net.full_sort_predict(interaction).shape == (len(interaction), net.n_items)


# ---------------------------------------------------------------------------- protocols
def test_masked_protocol_hides_earlier_items_but_never_the_target(workdir):
    path = workdir / "repeat.jsonl"
    path.write_text(
        json.dumps({"user": 1, "items": [1, 2, 3, 2, 4]})
        + "\n"
        + json.dumps({"user": 2, "items": [5, 6, 7, 5]})
        + "\n"
    )
    settings = {"sequence_file": str(path), "data_path": str(workdir / "data")}
    _, _, _, valid, test = build("DiffuRec", {**settings, "eval_history": "masked"})
    assert isinstance(valid, MaskedHistoryEvalDataLoader)
    dataset = valid._dataset
    token = lambda i: int(dataset.token2id(dataset.iid_field, str(i)))  # noqa: E731

    def masked(loader):
        out = {}
        for interaction, (rows, items), _, positive in loader:
            users = interaction[dataset.uid_field]
            for r in range(len(users)):
                user = dataset.id2token(dataset.uid_field, int(users[r]))
                out[user] = (
                    int(positive[r]),
                    sorted(items[rows == r].tolist()),
                )
        return out

    # user 1: valid target 2 (history 1 2 3), test target 4 (history 1 2 3 2);
    # user 2: valid target 7 (history 5 6), test target 5 (history 5 6 7): 5 stays rankable.
    assert masked(valid) == {
        "1": (token(2), sorted([token(1), token(3)])),
        "2": (token(7), sorted([token(5), token(6)])),
    }
    assert masked(test) == {
        "1": (token(4), sorted([token(1), token(2), token(2), token(3)])),
        "2": (token(5), sorted([token(6), token(7)])),
    }
    # Unmasked (DiffuRec's protocol, RecBole's default for sequential models): nothing.
    _, _, _, valid, _ = build("DiffuRec", settings)
    assert next(iter(valid))[1] is None

    with pytest.raises(ValueError, match="eval_history: got 'partial'"):
        build("DiffuRec", {**settings, "eval_history": "partial"})


def test_step_decay_trainer_sets_the_rate_per_epoch(sequences):
    config, net, train, _, _ = build(
        "DiffuRec",
        {**sequences, "learning_rate": 0.01, "lr_decay_step": 2, "lr_decay_gamma": 0.5},
    )
    trainer = get_trainer(type(net))(config, net)
    for epoch in (
        0,
        1,
        2,
        3,
        4,
        0,
    ):  # the last: a resumed run recomputes from the epoch
        trainer._train_epoch(train, epoch)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
            0.01 * 0.5 ** (epoch // 2)
        )
    config["lr_decay_step"] = 0
    with pytest.raises(ValueError, match="lr_decay_step: got 0"):
        get_trainer(type(net))(config, net)


# ---------------------------------------------------------------------------- converter
def test_sequence_converter_keeps_order_per_user(tmp_path):
    path = write_sequences([[3, 1, 2], [2, 5]], tmp_path / "s.jsonl")
    out = convert_sequences(path, tmp_path / "out", "s")
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["user_id:token", "item_id:token", "timestamp:float"]
    assert [tuple(map(int, r)) for r in rows[1:]] == [
        (1, 3, 0),
        (1, 1, 1),
        (1, 2, 2),
        (2, 2, 3),
        (2, 5, 4),
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"user": 1, "items": [4]}', r"s\.jsonl:2: user 1 has a sequence of length 1"),
        ('{"user": 1, "items": [0, 3]}', r"s\.jsonl:2: item ids start at 1"),
        ('{"user": 1, "items": [1.5, 3]}', r"s\.jsonl:2: items must be a list"),
        ('{"user": 7, "items": [1, 3]}', r"s\.jsonl:2: user 7 appears on more than"),
        ('{"usr": 1, "items": [1, 3]}', r"s\.jsonl:2: expected"),
        ("not json", r"s\.jsonl:2: expected"),
    ],
)
def test_sequence_converter_bad_lines(tmp_path, line, message):
    path = tmp_path / "s.jsonl"
    path.write_text('{"user": 7, "items": [1, 2]}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        convert_sequences(path, tmp_path / "out")
    assert not (tmp_path / "out" / "out.inter").exists()


def test_missing_sequence_file_is_named(workdir):
    with pytest.raises(FileNotFoundError, match="sequence_file: .*nope.jsonl"):
        build("DiffuRec", {"sequence_file": str(workdir / "nope.jsonl")})


# ---------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "model, settings, key",
    [
        ("DiffuRec", {"MAX_ITEM_LIST_LENGTH": 0}, "MAX_ITEM_LIST_LENGTH"),
        ("SeqDiffRec", {"MAX_ITEM_LIST_LENGTH": 0}, "MAX_ITEM_LIST_LENGTH"),
        ("DiffuRec", {"steps": 0}, "steps"),
        ("SeqDiffRec", {"steps": 0}, "steps"),
        ("DiffuRec", {"hidden_size": 128, "n_heads": 3}, "n_heads"),
        ("DiffuRec", {"emb_dropout": 1.0}, "emb_dropout"),
        ("DiffuRec", {"attention_mask": "causal"}, "attention_mask"),
        ("DiffuRec", {"lambda_uncertainty": -1}, "lambda_uncertainty"),
        (
            "DiffuRec",
            {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
            "train_neg_sample_args",
        ),
        ("SeqDiffRec", {"inference_step": 2000}, "inference_step"),
        ("SeqDiffRec", {"inference_draws": 0}, "inference_draws"),
        ("SeqDiffRec", {"step_embedding_at": "first"}, "step_embedding_at"),
        ("SeqDiffRec", {"mse_weight": -0.5}, "mse_weight"),
        # Used to pass the checks and crash on the first batch (AttributeError).
        ("DiffuRec", {"noise_scale": 0}, "noise_scale"),
        ("SeqDiffRec", {"noise_scale": 0.0}, "noise_scale"),
    ],
)
def test_bad_sequential_settings_fail_before_loading_data(
    workdir, model, settings, key
):
    with pytest.raises(ValueError, match=key) as err:
        run(model, "no-such-dataset", config_dict=settings)
    assert "allowed" in str(err.value)


def test_dropin_recbole_style_script(workdir):
    """A RecBole script with the plugin's Config / data_preparation / get_trainer, on atomic
    files the user already has."""
    from recbole_diffrec import Config, DiffuRec, data_preparation, get_trainer
    from recbole_diffrec.trainer import StepDecayTrainer

    data = workdir / "atomic"
    convert_sequences(
        write_sequences(generate_sequences(60, 25, 5, 9), workdir / "s.jsonl"),
        data / "mine",
    )
    settings = {**TINY, "data_path": str(data), "epochs": 2, "eval_step": 1}
    config = Config(
        model=DiffuRec,
        dataset="mine",
        config_file_list=[SEQUENCE_YAML],
        config_dict={**settings, "sequence_file": None},
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = DiffuRec(config, train_data.dataset)
    trainer = get_trainer(DiffuRec)(config, model)
    assert isinstance(trainer, StepDecayTrainer)
    trainer.fit(train_data, valid_data, saved=True)
    trainer.evaluate(test_data, load_best_model=True)
    evaluated = evaluated_metrics(model, config, test_data)
    assert evaluated == pytest.approx(recomputed_metrics(model, test_data), abs=1e-4)
