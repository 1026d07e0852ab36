import math

import torch

from recbole_diffrec.diffusion import MLPDenoiser, timestep_embedding


def test_mirrored_layer_sizes_and_parameter_count():
    n, emb = 2810, 10
    m = MLPDenoiser.mirrored(n, [200, 600], emb)
    shapes = [tuple(l.weight.shape) for l in [*m.in_layers, *m.out_layers]]
    assert shapes == [(600, n + emb), (200, 600), (600, 200), (n, 600)]
    expected = (
        (emb * emb + emb)
        + ((n + emb) * 600 + 600)
        + (600 * 200 + 200)
        + (200 * 600 + 600)
        + (600 * n + n)
    )
    assert sum(p.numel() for p in m.parameters()) == expected


def test_reference_initialisation_statistics():
    torch.manual_seed(0)
    m = MLPDenoiser.mirrored(3000, [500], 10)
    w = m.in_layers[0].weight
    fan_out, fan_in = w.shape
    assert abs(w.std().item() - math.sqrt(2 / (fan_in + fan_out))) < 1e-3
    assert abs(m.in_layers[0].bias.std().item() - 0.001) < 2e-4


def test_timestep_embedding_values():
    e = timestep_embedding(torch.tensor([0, 3]), 6)
    freqs = [10000 ** (-i / 3) for i in range(3)]
    expected = [
        [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]
        for t in (0, 3)
    ]
    torch.testing.assert_close(e, torch.tensor(expected))
    assert timestep_embedding(torch.tensor([1]), 5).shape == (1, 5)


def test_dropout_only_in_training_and_keeps_scale():
    torch.manual_seed(0)
    m = MLPDenoiser.mirrored(10, [4], 2)
    x = torch.ones(2000, 10)
    dropped = m._dropout(x)
    assert abs((dropped == 0).float().mean().item() - 0.5) < 0.02
    assert abs(dropped.mean().item() - 1.0) < 0.03
    m.eval()
    assert torch.equal(m._dropout(x), x)


def test_loss_decreases_on_small_data():
    from recbole_diffrec.diffusion import GaussianDiffusion

    torch.manual_seed(0)
    users, items = 64, 40
    # Two user groups with distinct tastes, so there is structure to learn.
    x = torch.zeros(users, items)
    x[: users // 2, : items // 2] = (torch.rand(users // 2, items // 2) < 0.6).float()
    x[users // 2 :, items // 2 :] = (torch.rand(users // 2, items // 2) < 0.6).float()
    d = GaussianDiffusion("x0", "linear-var", 0.1, 0.01, 0.05, 10)
    m = MLPDenoiser.mirrored(items, [32], 8)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)

    def epoch_loss():
        total = 0.0
        for _ in range(10):
            opt.zero_grad()
            loss = d.training_losses(m, x, reweight=False)["loss"].mean()
            loss.backward()
            opt.step()
            total += loss.item()
        return total / 10

    first = epoch_loss()
    for _ in range(8):
        last = epoch_loss()
    assert last < 0.5 * first
