"""The importance sampler against a straightforward per-example reference."""

import numpy as np
import torch

from recbole_diffrec.diffusion import LossSecondMomentSampler


class ReferenceSampler:
    """The DiffRec reference semantics, one example at a time."""

    def __init__(self, steps, n=10, uniform_prob=0.001):
        self.history = np.zeros((steps, n))
        self.count = np.zeros(steps, dtype=int)
        self.n, self.uniform_prob = n, uniform_prob

    def update(self, ts, losses):
        for t, loss in zip(ts, losses):
            if self.count[t] == self.n:
                self.history[t, :-1] = self.history[t, 1:].copy()
                self.history[t, -1] = loss
            else:
                self.history[t, self.count[t]] = loss
                self.count[t] += 1

    def probabilities(self):
        if not (self.count == self.n).all():
            return None
        rms = np.sqrt(np.mean(self.history**2, axis=-1))
        p = rms / rms.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / len(p)


def test_vectorised_update_matches_reference_on_recorded_losses():
    rng = np.random.default_rng(0)
    steps = 6
    ours, ref = LossSecondMomentSampler(steps, 10), ReferenceSampler(steps, 10)
    for batch in range(40):
        size = int(rng.integers(1, 30))
        # Skewed steps so some steps overflow their window within one batch.
        ts = rng.choice(steps, size=size, p=[0.4, 0.3, 0.1, 0.1, 0.05, 0.05])
        losses = rng.exponential(size=size) * (1 + ts)
        ours.update(torch.from_numpy(ts), torch.from_numpy(losses))
        ref.update(ts, losses)
        np.testing.assert_array_equal(ours.loss_counts.numpy(), ref.count)
        np.testing.assert_allclose(ours.loss_history.numpy(), ref.history)
        expected = ref.probabilities()
        assert ours.warmed_up() == (expected is not None)
        if expected is not None:
            np.testing.assert_allclose(ours.probabilities().numpy(), expected)


def test_uniform_until_warm_then_importance_distribution():
    steps = 4
    s = LossSecondMomentSampler(steps, history_per_term=10)
    t, pt = s.sample(1000, torch.device("cpu"))
    assert torch.all(pt == 1.0)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        s.update(torch.full((10,), step), torch.full((10,), value))
    probs = s.probabilities().numpy()
    expected = np.array([1, 2, 3, 4]) / 10 * 0.999 + 0.001 / 4
    np.testing.assert_allclose(probs, expected)
    torch.manual_seed(0)
    t, pt = s.sample(200_000, torch.device("cpu"))
    freq = np.bincount(t.numpy(), minlength=steps) / len(t)
    np.testing.assert_allclose(freq, expected, atol=0.005)
    # pt = p_t * T, so uniform sampling would give 1 everywhere.
    np.testing.assert_allclose(pt.numpy(), expected[t.numpy()] * steps, rtol=1e-6)


def test_history_is_saved_and_restored_with_the_module():
    s = LossSecondMomentSampler(3, 10)
    s.update(torch.tensor([0, 1, 1, 2]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    state = s.state_dict()
    assert set(state) == {"loss_history", "loss_counts"}
    fresh = LossSecondMomentSampler(3, 10)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.loss_history, s.loss_history)
    assert fresh.loss_counts.tolist() == [1, 2, 1]
