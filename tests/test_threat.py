import math

import pytest
import torch

from bastion.errors import InvalidInputError
from bastion.threat import LpThreat, lp_norms, project_ball, sample_ball


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_random_start_and_projection_stay_inside(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g)
    eps = torch.linspace(0.05, 2.0, 32)
    threat = LpThreat(norm, eps)
    start = threat.random_start(x, g)
    assert threat.contains(start, x).all()
    far = x + 5 * torch.randn(x.shape, generator=g)
    proj = threat.project(far, x)
    assert threat.contains(proj, x).all()
    assert torch.allclose(threat.norm_of(project_ball(far - x, eps, norm)), eps, rtol=1e-4)


def test_l1_projection_matches_closed_form_and_is_nearest() -> None:
    # Projection of (3, 1, 0) onto the L1 ball of radius 2 soft-thresholds by theta = 1: (2, 0, 0).
    d = torch.tensor([[3.0, 1.0, 0.0]])
    assert torch.allclose(project_ball(d, torch.tensor([2.0]), "l1"), torch.tensor([[2.0, 0.0, 0.0]]))
    # Nearest point: no random point of the ball is closer than the projection.
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1, 20, generator=g) * 3
    p = project_ball(v, torch.tensor([1.5]), "l1")
    assert math.isclose(float(p.abs().sum()), 1.5, rel_tol=1e-5)
    cand = torch.randn(2000, 20, generator=g)
    cand = cand / cand.abs().sum(1, keepdim=True) * 1.5 * torch.rand(2000, 1, generator=g)
    assert float((v - p).norm()) <= float((v - cand).norm(dim=1).min()) + 1e-6


def test_mask_freezes_features() -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    threat = LpThreat("linf", 0.3, mask=mask)
    x = torch.full((4, 1, 8, 8), 0.5)
    p = threat.project(x + 0.2, x)
    assert torch.all(p[:, :, 4:] == 0.5) and torch.allclose(p[:, :, :4], torch.tensor(0.7))
    assert threat.contains(p, x).all()
    assert not threat.contains(x + 0.1, x).any()


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps_is_rejected(eps: float) -> None:
    with pytest.raises(InvalidInputError, match="eps must be finite and non-negative"):
        LpThreat("linf", eps)


def test_bad_norm_and_per_sample_mismatch() -> None:
    with pytest.raises(InvalidInputError, match="Unknown norm"):
        LpThreat("l3", 0.1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="one radius per input"):
        LpThreat("l2", torch.ones(3)).eps_for(torch.zeros(4, 2))


def test_l2_random_start_radius_is_uniform_and_volume_sampling_sits_near_the_sphere() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.full((4000, 1, 8, 8), 0.5)  # far enough from the box that clipping never acts at eps 0.4
    threat = LpThreat("l2", 0.4)
    r = threat.norm_of(threat.random_start(x, g) - x)
    assert abs(float(r.mean()) - 0.2) < 0.01  # E[U(0, eps)] = eps / 2
    assert abs(float((r < 0.1).float().mean()) - 0.25) < 0.03
    v = sample_ball(x.shape, torch.full((4000,), 0.4), "l2", g, x.device, x.dtype).flatten(1).norm(dim=1)
    assert abs(float(v.mean()) - 0.4 * 64 / 65) < 0.01  # E[eps * U^(1/d)] = eps * d / (d + 1)


def test_fused_l2_projection_is_ball_then_box() -> None:
    """The fused L2 path of ``project_radius`` equals ``project_ball`` followed by the box clip, per-sample eps."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 4, 4, generator=g)
    eps = torch.tensor([0.0, 0.05, 0.3, 1.0, 2.0, 50.0])
    far = x + 3 * torch.randn(x.shape, generator=g)
    far[1] = x[1]  # a zero perturbation stays zero (the norm clamp, not a division by zero)
    threat = LpThreat("l2", eps)
    got = threat.project_radius(far, x, eps)
    want = (x + project_ball(far - x, eps, "l2")).clamp(0.0, 1.0)
    assert torch.allclose(got, want, atol=1e-6) and torch.equal(got[1], x[1])
    assert bool(threat.contains(got, x).all())


def test_linf_bounds_clamp_is_the_projection() -> None:
    """One clamp to ``linf_bounds`` lands where ball projection, box clip and mask put a point (per-sample eps)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 4, 4, generator=g)
    mask = torch.rand(1, 1, 4, 4, generator=g) > 0.3
    eps = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.5, 2.0])
    threat = LpThreat("linf", eps, mask=mask)
    far = x + 3 * (torch.rand(x.shape, generator=g) - 0.5)
    lo, hi = threat.linf_bounds(x, eps)
    assert torch.allclose(far.clamp(lo, hi), threat.project_radius(far, x, eps), atol=1e-6)
    assert torch.equal(lo[~mask.expand_as(x)], x[~mask.expand_as(x)])
    with pytest.raises(ValueError, match="L-inf"):
        LpThreat("l2", 1.0).linf_bounds(x, eps)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_lp_norms_match_vector_norm(p: float) -> None:
    """The fast L1 / L-inf reductions give ``torch.linalg.vector_norm``'s values, on any dim and with NaN rows."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(5, 3, 7, generator=g)
    t[2, 1, 3] = float("nan")
    for dim in (1, 2):
        want = torch.linalg.vector_norm(t, p, dim=dim)
        assert torch.allclose(lp_norms(t, p, dim=dim), want, rtol=1e-6, equal_nan=True)
    assert torch.isnan(lp_norms(t.flatten(1), p)[2])


def test_per_feature_bounds_project_contain_and_start() -> None:
    lower = torch.tensor([[-2.0, 0.0, 10.0]])
    upper = torch.tensor([[2.0, 1.0, 10.0]])  # the third feature is constant
    threat = LpThreat("linf", 0.5, lower=lower, upper=upper)
    x = torch.tensor([[1.9, 0.1, 10.0], [-1.9, 0.9, 10.0]])
    far = x + torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    p = threat.project(far, x)
    assert torch.allclose(p, torch.tensor([[2.0, 0.0, 10.0], [-2.0, 1.0, 10.0]]))
    assert threat.contains(p, x).all() and not threat.contains(far, x).any()
    start = threat.random_start(x, torch.Generator().manual_seed(0))
    assert (start >= lower).all() and (start <= upper).all() and threat.contains(start, x).all()
    lo, hi = threat.linf_bounds(x, threat.eps_for(x))
    assert torch.equal(lo[:, 2], x[:, 2]) and torch.equal(hi[:, 2], x[:, 2])
    for norm in ("l2", "l1"):
        t = LpThreat(norm, 0.5, lower=lower, upper=upper)
        q = t.project(far, x)
        assert t.contains(q, x).all() and (q >= lower).all() and (q <= upper).all()


@pytest.mark.parametrize(("lower", "upper", "fix"), [
    (torch.zeros(3), torch.zeros(3), "room to move"),
    (torch.ones(3), torch.zeros(3), "lower above upper"),
    (torch.zeros(3), torch.ones(4), "do not broadcast"),
    (torch.zeros(3), torch.tensor([1.0, float("inf"), 1.0]), "finite"),
])
def test_bad_per_feature_bounds_say_what_to_fix(lower: torch.Tensor, upper: torch.Tensor, fix: str) -> None:
    with pytest.raises(InvalidInputError, match=fix):
        LpThreat("linf", 0.1, lower=lower, upper=upper)


def test_inputs_outside_per_feature_bounds_are_named() -> None:
    from bastion.validate import check_inputs

    threat = LpThreat("linf", 0.1, lower=torch.tensor([0.0, -5.0]), upper=torch.tensor([1.0, 5.0]))
    check_inputs(torch.tensor([[0.5, -4.0]]), threat)  # fine: the second feature has its own range
    with pytest.raises(InvalidInputError, match="1 features out of range"):
        check_inputs(torch.tensor([[0.5, 6.0]]), threat)
