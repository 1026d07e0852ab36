"""Diffusion quantities against closed forms computed by hand for small schedules."""

import math

import numpy as np
import pytest
import torch

from recbole_diffrec.diffusion import (
    FactoredDenoiser,
    GaussianDiffusion,
    MLPDenoiser,
    SpacedDiffusion,
    can_factor,
    get_betas,
    respace,
)
from recbole_diffrec.diffusion.respace import evenly_spaced_steps

T = 4
SCALE, LO, HI = 0.1, 0.01, 0.05


def test_linear_betas_by_hand():
    betas = get_betas("linear", T, SCALE, LO, HI)
    # linspace(0.001, 0.005, 4)
    np.testing.assert_allclose(
        betas, [0.001, 0.001 + 0.004 / 3, 0.001 + 0.008 / 3, 0.005]
    )


def test_linear_var_betas_by_hand():
    var = [0.001, 0.001 + 0.004 / 3, 0.001 + 0.008 / 3, 0.005]
    expected = [var[0]] + [1 - (1 - var[i]) / (1 - var[i - 1]) for i in range(1, T)]
    np.testing.assert_allclose(get_betas("linear-var", T, SCALE, LO, HI), expected)
    # The point of linear-var: 1 - alpha_bar_t is exactly the linear ramp.
    d = GaussianDiffusion("x0", "linear-var", SCALE, LO, HI, T, beta_fixed=False)
    np.testing.assert_allclose(1 - d.alphas_cumprod.numpy(), var, rtol=1e-12)


def test_cosine_betas_by_hand():
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = [min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)]
    np.testing.assert_allclose(get_betas("cosine", T, SCALE, LO, HI), expected)
    assert expected[-1] == 0.999  # the last step is capped


def test_binomial_betas_by_hand():
    np.testing.assert_allclose(
        get_betas("binomial", T, SCALE, LO, HI), [1 / 5, 1 / 4, 1 / 3, 1 / 2]
    )


@pytest.mark.parametrize("beta_fixed", [True, False])
def test_alphas_posterior_and_snr_weights_by_hand(beta_fixed):
    d = GaussianDiffusion("x0", "linear", SCALE, LO, HI, T, beta_fixed=beta_fixed)
    b = [0.001, 0.001 + 0.004 / 3, 0.001 + 0.008 / 3, 0.005]
    if beta_fixed:
        b[0] = 1e-5  # set before the cumulative products
    np.testing.assert_allclose(d.betas.numpy(), b)
    abar = [1 - b[0]]
    for i in range(1, T):
        abar.append(abar[-1] * (1 - b[i]))
    prev = [1.0] + abar[:-1]
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), abar)
    np.testing.assert_allclose(d.alphas_cumprod_prev.numpy(), prev)
    var = [b[i] * (1 - prev[i]) / (1 - abar[i]) for i in range(T)]
    np.testing.assert_allclose(d.posterior_variance.numpy(), var)
    assert var[0] == 0.0
    np.testing.assert_allclose(
        d.posterior_log_variance_clipped.numpy(), np.log([var[1]] + var[1:])
    )
    c1 = [b[i] * math.sqrt(prev[i]) / (1 - abar[i]) for i in range(T)]
    c2 = [(1 - prev[i]) * math.sqrt(1 - b[i]) / (1 - abar[i]) for i in range(T)]
    np.testing.assert_allclose(d.posterior_mean_coef1.numpy(), c1)
    np.testing.assert_allclose(d.posterior_mean_coef2.numpy(), c2)
    assert c1[0] == pytest.approx(1.0) and c2[0] == 0.0  # t = 0 returns the x0 estimate
    snr = [a / (1 - a) for a in abar]
    weights = [1.0] + [snr[i - 1] - snr[i] for i in range(1, T)]
    np.testing.assert_allclose(d.x0_loss_weight.numpy(), weights)
    eps_w = [1.0] + [
        (1 - abar[i]) / ((1 - prev[i]) ** 2 * (1 - b[i])) for i in range(1, T)
    ]
    np.testing.assert_allclose(d.eps_loss_weight.numpy(), eps_w)


def test_q_sample_and_posterior_closed_form():
    d = GaussianDiffusion("x0", "linear-var", SCALE, LO, HI, T)
    x0 = torch.tensor([[1.0, 0.0, 1.0]])
    noise = torch.tensor([[0.5, -1.0, 2.0]])
    t = torch.tensor([2])
    ab = d.alphas_cumprod[2].item()
    expected = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
    torch.testing.assert_close(d.q_sample(x0, t, noise), expected)
    xt = expected
    mean, var, _ = d.q_posterior_mean_variance(x0, xt, t)
    c1, c2 = d.posterior_mean_coef1[2].item(), d.posterior_mean_coef2[2].item()
    torch.testing.assert_close(mean, c1 * x0 + c2 * xt)
    assert var.item() == pytest.approx(d.posterior_variance[2].item())


class ConstantDenoiser(torch.nn.Module):
    """Predicts a fixed vector whatever the input."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t):
        return self.out.expand_as(x)


def test_p_sample_reverse_chain_by_hand():
    d = GaussianDiffusion("x0", "linear-var", SCALE, LO, HI, T)
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    c = torch.tensor([[0.2, 0.4, 0.6, 0.8]])
    got = d.reconstruct(ConstantDenoiser(c), x, sampling_steps=0)
    expected = x.double()
    for i in reversed(range(T)):
        expected = d.posterior_mean_coef1[i] * c + d.posterior_mean_coef2[i] * expected
    torch.testing.assert_close(got, expected.float())
    # With a posterior coefficient of 1 at t = 0 the last step returns the x0 estimate.
    torch.testing.assert_close(got, c, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mean_type", ["x0", "eps"])
@pytest.mark.parametrize("noise_scale", [0.05, 0.0])
def test_factored_chain_equals_reference_chain(mean_type, noise_scale):
    torch.manual_seed(0)
    d = GaussianDiffusion(mean_type, "linear-var", noise_scale, 0.005, 0.01, 10)
    m = MLPDenoiser.mirrored(50, [16, 24], 10).eval()
    x = (torch.rand(7, 50) < 0.2).float()
    reference = d.reconstruct(m, x, factored=False)
    fast = d.reconstruct(m, x)
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=1e-4)


def test_sampling_steps_noises_the_history():
    torch.manual_seed(0)
    d = GaussianDiffusion("x0", "linear-var", 0.5, 0.1, 0.5, 5)
    m = MLPDenoiser.mirrored(20, [8], 4).eval()
    x = (torch.rand(3, 20) < 0.3).float()
    clean = d.reconstruct(m, x, sampling_steps=0)
    torch.testing.assert_close(d.reconstruct(m, x, sampling_steps=0), clean)
    assert not torch.allclose(d.reconstruct(m, x, sampling_steps=3), clean)
    with pytest.raises(ValueError, match="sampling_steps"):
        d.reconstruct(m, x, sampling_steps=6)


def test_training_loss_applies_snr_weights_and_pt():
    d = GaussianDiffusion(
        "x0", "linear-var", SCALE, LO, HI, T, timestep_sampler="uniform"
    )
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 64)
    torch.manual_seed(0)
    model = ConstantDenoiser(torch.zeros(1, 4))
    losses = d.training_losses(model, x, reweight=True)["loss"]
    # Target x0 and a zero prediction: mse 0.5 for every row, times the step weight.
    allowed = 0.5 * d.x0_loss_weight.float()
    closest = (losses[:, None] - allowed[None]).abs().argmin(dim=1)
    torch.testing.assert_close(losses, allowed[closest], rtol=1e-5, atol=0)
    assert len(set(closest.tolist())) > 1
    plain = d.training_losses(model, x, reweight=False)["loss"]
    torch.testing.assert_close(plain, torch.full((64,), 0.5))


def test_training_loss_is_divided_by_the_sampled_step_probability():
    # The uniform sampler has p_t = 1 everywhere; a sampler that draws steps with unequal
    # probabilities must see each loss divided by its p_t (the importance-sampling weight).
    d = GaussianDiffusion(
        "x0", "linear-var", SCALE, LO, HI, T, timestep_sampler="uniform"
    )
    t = torch.tensor([0, 1, 2, 3, 3, 1])
    pt = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.4, 0.2])
    d.sampler.sample = lambda batch, device: (t, pt)
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * len(t))
    model = ConstantDenoiser(torch.zeros(1, 4))
    losses = d.training_losses(model, x, reweight=True)["loss"]
    expected = 0.5 * d.x0_loss_weight[t].float() / pt
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=0)


def test_eps_loss_uses_reconstruction_at_step_zero():
    d = GaussianDiffusion(
        "eps", "linear-var", SCALE, LO, HI, 1, timestep_sampler="uniform"
    )
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    model = ConstantDenoiser(torch.zeros(1, 4))
    # T = 1: t is always 0, the loss is |x0 - x0_hat(eps=0)|^2 / 2 with weight 1.
    torch.manual_seed(0)
    loss = d.training_losses(model, x, reweight=True)["loss"]
    torch.manual_seed(0)
    t = torch.zeros(1, dtype=torch.long)
    d2 = GaussianDiffusion(
        "eps", "linear-var", SCALE, LO, HI, 1, timestep_sampler="uniform"
    )
    torch.randint(0, 1, (1,))  # the sampler's draw
    noise = torch.randn_like(x)
    xt = d2.q_sample(x, t, noise)
    x0_hat = d2.predict_xstart_from_eps(xt, t, torch.zeros_like(x))
    torch.testing.assert_close(loss, ((x - x0_hat) ** 2).mean(dim=1) / 2)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"noise_schedule": "sigmoid"}, "noise_schedule"),
        ({"mean_type": "v"}, "mean_type"),
        ({"noise_min": 0.02, "noise_max": 0.01}, "noise_min"),
        ({"noise_min": 0.0}, "noise_min"),
        ({"noise_max": 1.5}, "noise_max"),
        ({"noise_scale": -0.1}, "noise_scale"),
        ({"steps": 0}, "steps"),
        ({"timestep_sampler": "lossaware"}, "timestep_sampler"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        GaussianDiffusion(**kwargs)


def test_respaced_chain_keeps_alpha_bar_at_the_kept_steps():
    assert evenly_spaced_steps(40, 1) == [0]
    assert evenly_spaced_steps(40, 2) == [0, 39]
    assert evenly_spaced_steps(40, 5) == [0, 10, 20, 29, 39]
    d = GaussianDiffusion("x0", "linear-var", 0.005, 0.005, 0.01, 40)
    spaced = respace(d, 5)
    assert spaced.steps == 5 and spaced.timestep_map.tolist() == [0, 10, 20, 29, 39]
    torch.testing.assert_close(
        spaced.alphas_cumprod, d.alphas_cumprod[[0, 10, 20, 29, 39]]
    )
    with pytest.raises(ValueError, match="inference_steps"):
        respace(d, 41)


def test_respaced_chain_with_all_steps_is_the_full_chain_and_feeds_original_steps():
    torch.manual_seed(0)
    d = GaussianDiffusion("x0", "linear-var", 0.05, 0.005, 0.01, 10)
    m = MLPDenoiser.mirrored(30, [8], 4).eval()
    x = (torch.rand(5, 30) < 0.2).float()
    torch.testing.assert_close(respace(d, 10).reconstruct(m, x), d.reconstruct(m, x))
    seen = []

    class Recorder(ConstantDenoiser):
        def forward(self, x, t):
            seen.append(int(t[0]))
            return super().forward(x, t)

    respace(d, 3).reconstruct(Recorder(torch.zeros(1, 30)), x)
    assert seen == [9, 4, 0] or seen == [9, 5, 0]
    # A one-step chain is the denoiser's x0 estimate at step 0.
    one = respace(d, 1).reconstruct(ConstantDenoiser(torch.full((1, 30), 0.3)), x)
    torch.testing.assert_close(one, torch.full((5, 30), 0.3), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- reverse step
@pytest.mark.parametrize("mean_type", ["x0", "eps"])
def test_p_sample_is_one_posterior_step(mean_type):
    d = GaussianDiffusion(mean_type, "linear-var", SCALE, LO, HI, T)
    x = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.3, 0.4], [0.9, 0.1, 0.0]])
    c = torch.tensor([[0.2, 0.4, 0.6]])
    t = torch.tensor([3, 1, 0])
    col = lambda a: a[t].unsqueeze(1)  # noqa: E731
    x0 = (
        c.double()
        if mean_type == "x0"
        else (
            col(d.sqrt_recip_alphas_cumprod) * x
            - col(d.sqrt_recipm1_alphas_cumprod) * c
        )
    )
    mean = col(d.posterior_mean_coef1) * x0 + col(d.posterior_mean_coef2) * x
    out = d.p_sample(ConstantDenoiser(c), x, t)
    torch.testing.assert_close(out["sample"], mean.float())
    torch.testing.assert_close(out["pred_xstart"], x0.float().expand(3, 3))
    noise = torch.tensor([[1.0, -2.0, 0.5]]).expand(3, 3)
    for variance, log_var in (
        ("small", d.posterior_log_variance_clipped),
        ("large", d.large_log_variance),
    ):
        noisy = d.p_sample(ConstantDenoiser(c), x, t, True, variance, noise)
        # No noise at t = 0: the last step returns the mean.
        scale = torch.exp(0.5 * col(log_var)) * (t > 0).double().unsqueeze(1)
        torch.testing.assert_close(noisy["sample"], (mean + scale * noise).float())


def test_p_sample_loop_is_repeated_p_sample_and_draws_no_noise_at_step_zero():
    torch.manual_seed(0)
    d = GaussianDiffusion("x0", "linear-var", 0.5, 0.1, 0.5, 5)
    m = MLPDenoiser.mirrored(20, [8], 4).eval()
    x = torch.rand(3, 20)
    for sampling_noise in (False, True):
        torch.manual_seed(1)
        chain = d.p_sample_loop(m, x, sampling_noise)
        after_chain = torch.rand(1)
        torch.manual_seed(1)
        steps = x
        for i in reversed(range(5)):
            t = torch.full((3,), i)
            steps = d.p_sample(m, steps, t, sampling_noise)["sample"]
        assert torch.equal(chain, steps)
        assert torch.equal(torch.rand(1), after_chain)
    torch.manual_seed(1)
    [torch.randn_like(x) for _ in range(4)]  # steps 4..1 draw, step 0 does not
    assert torch.equal(torch.rand(1), after_chain)


def test_without_noise_a_reverse_step_is_the_denoiser_output():
    d = GaussianDiffusion("x0", "linear-var", 0.0, LO, HI, T)
    c = torch.tensor([[0.2, 0.4, 0.6]])
    out = d.p_sample(ConstantDenoiser(c), torch.ones(2, 3), torch.tensor([3, 1]), True)
    assert torch.equal(out["sample"], c.expand(2, 3))


# ---------------------------------------------------------------------------- respacing
class Recorder(ConstantDenoiser):
    def __init__(self, out):
        super().__init__(out)
        self.seen = []

    def forward(self, x, t):
        self.seen.extend(t.tolist())
        return super().forward(x, t)


def test_spaced_diffusion_betas_and_original_steps():
    d = GaussianDiffusion("x0", "linear-var", 0.05, 0.005, 0.01, 10)
    keep = [0, 3, 7, 9]
    spaced = SpacedDiffusion(d, keep)
    abar = d.alphas_cumprod.tolist()
    expected = [1 - abar[0]] + [1 - abar[s] / abar[p] for p, s in zip(keep, keep[1:])]
    np.testing.assert_allclose(spaced.betas.numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(spaced.alphas_cumprod, d.alphas_cumprod[keep])
    assert not hasattr(d, "timestep_map") and not hasattr(d, "respaced")
    x = torch.rand(4, 6)
    model = Recorder(torch.zeros(1, 6))
    spaced.p_sample_loop(model, x)
    assert model.seen == [9] * 4 + [7] * 4 + [3] * 4 + [0] * 4
    model.seen.clear()
    spaced.training_losses(model, x)
    assert model.seen and set(model.seen) <= set(keep)
    # The factored chain also sees original steps.
    m = MLPDenoiser.mirrored(6, [5], 4).eval()
    seen = []
    original = m.hidden_from_projection
    m.hidden_from_projection = lambda z, t: seen.append(int(t[0])) or original(z, t)
    spaced.p_sample_loop_factored(m, x)
    assert seen == [9, 7, 3, 0]


# ---------------------------------------------------------------------------- factored chain
class CountingDenoiser(MLPDenoiser):
    calls = 0

    def forward(self, x, t):
        CountingDenoiser.calls += 1
        return super().forward(x, t)


@pytest.mark.parametrize("mean_type", ["x0", "eps"])
def test_factored_chain_is_used_and_equals_the_plain_chain_when_respaced(mean_type):
    torch.manual_seed(0)
    d = respace(GaussianDiffusion(mean_type, "linear-var", 0.05, 0.005, 0.01, 12), 4)
    m = CountingDenoiser(
        [50, 24, 16], [16, 24, 50], 10
    ).eval()  # x -> 24 -> 16 -> 24 -> x
    x = (torch.rand(7, 50) < 0.2).float()
    assert isinstance(m, FactoredDenoiser) and can_factor(m)
    CountingDenoiser.calls = 0
    fast = d.reconstruct(m, x)
    assert CountingDenoiser.calls == 0  # the factored chain never runs forward()
    plain = d.p_sample_loop(m, x)
    assert CountingDenoiser.calls == 4
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=1e-4)


def test_factored_chain_is_refused_unless_the_denoiser_can_factor():
    d = GaussianDiffusion("x0", "linear-var", 0.05, 0.005, 0.01, 5)
    x = torch.rand(2, 6)
    constant = ConstantDenoiser(torch.zeros(1, 6))
    assert not isinstance(constant, FactoredDenoiser)
    training = MLPDenoiser.mirrored(6, [4], 2)  # training mode: input dropout
    normed = MLPDenoiser.mirrored(6, [4], 2, norm=True).eval()  # not affine
    for model in (constant, training, normed):
        assert not can_factor(model)
        with pytest.raises(TypeError, match="FactoredDenoiser"):
            d.p_sample_loop_factored(model, x)
    # reconstruct falls back to the plain chain for them.
    torch.testing.assert_close(d.reconstruct(constant, x), torch.zeros(2, 6))


# ---------------------------------------------------------------------------- step loss
def test_step_losses_divide_by_pt_and_update_the_sampler():
    d = GaussianDiffusion("x0", "linear-var", SCALE, LO, HI, T, history_per_term=2)
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0]):  # warm up, unequal p_t
        d.sampler.update(torch.full((2,), step), torch.full((2,), value))
    pt_by_step = d.sampler.probabilities().float() * T
    x_start = torch.rand(64, 3)
    seen = {}

    def terms(x_t, t, noise):
        seen.update(t=t, x_t=x_t, noise=noise)
        return {"loss": (t + 1).float(), "extra": x_t}

    torch.manual_seed(0)
    out = d.step_losses(x_start, terms)
    t = seen["t"]
    assert len(set(t.tolist())) > 1 and not torch.allclose(pt_by_step, torch.ones(T))
    torch.testing.assert_close(out["loss"], (t + 1).float() / pt_by_step[t])
    assert out["extra"] is seen["x_t"]
    torch.testing.assert_close(seen["x_t"], d.q_sample(x_start, t, seen["noise"]))
    # The sampler recorded the undivided losses: the newest entry of a drawn step is t + 1.
    for step in set(t.tolist()):
        assert d.sampler.loss_history[step, -1] == step + 1
