"""Each output defense against what it is known to do: exact roundings, top-k's zeros, the reverse-sigmoid formula
on a hand-computed row, MAD's budget, argmax and gradient geometry, adaptive misinformation's two regimes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.errors import InvalidInputError
from bastion.stealing import OUTPUT_DEFENSES, DefenseContext, VictimSpec
from bastion.stealing.defenses.adaptive_misinformation import reverse_cross_entropy
from bastion.stealing.defenses.mad import (
    best_argmax_vertex_exact,
    best_argmax_vertex_greedy,
    best_vertex,
    gram_matrices,
    surrogate_objective,
)
from bastion.stealing.metrics import agreement, predict


class Echo(nn.Module):
    """A 'victim' that answers its input rows as its probabilities."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def build(name: str, victim: nn.Module, ctx: DefenseContext, **params) -> nn.Module:
    return OUTPUT_DEFENSES.get(name).fn(victim, ctx, **params)


def test_top1_answers_the_victims_label(victim, data, defense_context) -> None:
    out = build("top1", victim, defense_context)(data.test.x[:200])
    assert out.dtype == torch.int64 and torch.equal(out, predict(victim, data.test.x[:200]))


def test_rounding_exact_values(defense_context) -> None:
    probs = torch.tensor([[0.123, 0.877, 0.0], [0.004, 0.987, 0.009], [0.3333, 0.3333, 0.3334], [0.004, 0.992, 0.004]])
    out = build("rounding", Echo(), defense_context)(probs)
    # rows 1-2 round to sums of 1 and are answered as rounded; rows 3-4 round to 0.99 and are renormalised
    expected = torch.tensor([[0.12, 0.88, 0.0], [0.0, 0.99, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-7)
    three = build("rounding", Echo(), defense_context, decimals=3)(probs[:1])
    assert torch.allclose(three, probs[:1], atol=1e-7)
    with pytest.raises(InvalidInputError, match="decimals=0"):
        build("rounding", Echo(), defense_context, decimals=0)


def test_top_k_keeps_k_and_zeroes_the_rest(defense_context) -> None:
    probs = torch.tensor([[0.1, 0.4, 0.05, 0.25, 0.2]])
    out = build("top-k", Echo(), defense_context)(probs)
    assert torch.allclose(out, torch.tensor([[0.0, 0.4, 0.0, 0.25, 0.2]]) / 0.85)
    assert int((out == 0).sum()) == 2
    one = build("top-k", Echo(), defense_context, k=1)(probs)
    assert torch.equal(one, torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]))


def _reverse_sigmoid(y: float, beta: float, gamma: float) -> float:
    y_c = min(max(y, 1e-9), 1 - 1e-9)
    return y - beta * (1 / (1 + math.exp(-gamma * math.log(y_c / (1 - y_c)))) - 0.5)


def test_reverse_sigmoid_formula_on_a_hand_computed_row(defense_context) -> None:
    # y = (0.9, 0.1), beta 1, gamma 0.1: logit 0.9 = ln 9, s(0.1 ln 9) = 0.554711, so 0.9 - 0.054711 = 0.845289
    out = build("reverse-sigmoid", Echo(), defense_context)(torch.tensor([[0.9, 0.1]]))
    assert torch.allclose(out, torch.tensor([[0.845289, 0.154711]]), atol=1e-6)
    row = [0.7, 0.2, 0.1]
    raw = [_reverse_sigmoid(v, 0.5, 0.4) for v in row]
    out = build("reverse-sigmoid", Echo(), defense_context, beta=0.5, gamma=0.4)(torch.tensor([row]))
    assert torch.allclose(out.double(), torch.tensor([raw], dtype=torch.float64) / sum(raw), atol=1e-6)


def test_reverse_sigmoid_can_change_a_weak_top1(defense_context) -> None:
    # a class the victim gives 1e-9 is answered 0.388 before normalising; a top class at 0.34 only 0.357
    out = build("reverse-sigmoid", Echo(), defense_context)(torch.tensor([[0.34, 0.33, 0.33 - 1e-9, 1e-9]]))
    assert int(out.argmax(1)) == 3


def test_reverse_sigmoid_top1_on_mnist(victim, data, defense_context) -> None:
    x = data.test.x
    out = build("reverse-sigmoid", victim, defense_context)(x)
    assert agreement(out.argmax(1), predict(victim, x)) == 1.0  # confident victim: preserved on all 1,000


# MAD ------------------------------------------------------------------------------------------------------------
def _autograd_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = list(model.parameters())
    log_p = F.log_softmax(model(x.unsqueeze(0)), dim=1).squeeze(0)
    rows = []
    for k in range(log_p.shape[0]):
        grads = torch.autograd.grad(log_p[k], params, retain_graph=True)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows).double()


@pytest.fixture(scope="module")
def surrogate() -> nn.Module:
    from bastion.stealing.defenses._common import small_model

    ctx = DefenseContext(torch.zeros(1, 1, 28, 28), torch.zeros(1), VictimSpec((1, 28, 28), 10),
                         torch.Generator().manual_seed(3))
    return small_model(ctx).eval()


def test_mad_gram_matrices_match_autograd(surrogate, data) -> None:
    x = data.test.x[:3]
    m = gram_matrices(surrogate, x, chunk=2)
    for i in range(3):
        g = _autograd_jacobian(surrogate, x[i])
        assert torch.allclose(m[i], g @ g.T, rtol=1e-4, atol=1e-6)


def test_mad_vertex_oracles_match_brute_force(surrogate, data, victim) -> None:
    x = data.pool[:4]
    with torch.no_grad():
        y = F.softmax(victim(x), dim=1).double()
    m = gram_matrices(surrogate, x)
    vertex, subset = best_vertex(m, y), best_argmax_vertex_exact(m, y)
    for i in range(4):
        g = _autograd_jacobian(surrogate, x[i])
        score = lambda c, i=i, g=g: float(((c - y[i]) @ g.detach()).norm() ** 2)  # noqa: E731
        onehots = torch.eye(10, dtype=torch.float64)
        assert torch.equal(vertex[i], onehots[max(range(10), key=lambda k: score(onehots[k]))])
        top = int(y[i].argmax())
        subsets = [torch.tensor(bits, dtype=torch.float64) for bits in itertools.product((0.0, 1.0), repeat=10)
                   if bits[top] == 1.0]
        tilt = 1e-5 * torch.eye(10, dtype=torch.float64)[top]
        best = max(((s + tilt) / (s + tilt).sum() for s in subsets), key=score)
        assert torch.allclose(subset[i], best)


def test_mad_greedy_is_a_valid_argmax_candidate() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 14, 30, generator=g, dtype=torch.float64)
    m = a @ a.transpose(1, 2)
    y = torch.softmax(3 * torch.randn(5, 14, generator=g, dtype=torch.float64), dim=1)
    greedy = best_argmax_vertex_greedy(m, y)
    assert torch.equal(greedy.argmax(1), y.argmax(1))
    support = greedy > 0
    size = support.sum(1, keepdim=True).double()
    others = support & (greedy < greedy.max(1, keepdim=True).values)
    assert torch.allclose(greedy[others], (1.0 / (size + 1e-5)).expand_as(greedy)[others])  # uniform, top tilted
    alone = F.one_hot(y.argmax(1), 14).double().unsqueeze(1)
    assert bool((surrogate_objective(m, y, greedy.unsqueeze(1)) >= surrogate_objective(m, y, alone)).all())


@pytest.mark.parametrize("ydist, p", [("l1", 1), ("l2", 2)])
def test_mad_stays_within_its_budget(victim, data, defense_context, ydist, p) -> None:
    x = torch.cat([data.test.x[:60], data.pool[:60]])
    with torch.no_grad():
        y = F.softmax(victim(x), dim=1)
    out = build("mad", victim, defense_context, epsilon=0.5, ydist=ydist)(x)
    dist = (out - y).double().norm(p=p, dim=1)
    assert bool((dist <= 0.5 + 1e-5).all())
    assert float(dist.min()) > 0.5 - 1e-5  # a vertex is never within 0.5 of these answers: the budget is spent


def test_mad_argmax_kept_when_asked(victim, data, defense_context) -> None:
    x = torch.cat([data.test.x[:100], data.pool[:100]])
    truth = predict(victim, x)
    kept = build("mad", victim, defense_context, epsilon=1.5, keep_argmax=True)(x)
    assert torch.equal(kept.argmax(1), truth)
    free = build("mad", victim, defense_context, epsilon=1.5)(x)
    assert agreement(free.argmax(1), truth) < 0.5  # without the constraint the same budget moves most labels


def test_mad_rejects_unknown_distance(victim, defense_context) -> None:
    with pytest.raises(InvalidInputError, match="ydist='kl'"):
        build("mad", victim, defense_context, ydist="kl")


# adaptive misinformation --------------------------------------------------------------------------------------
def test_reverse_cross_entropy_is_minus_log_one_minus_p() -> None:
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    p = F.softmax(logits, dim=1)[torch.arange(6), y]
    assert torch.allclose(reverse_cross_entropy(logits, y), -(1 - p).log().mean())


# ``misinformed`` (the defense at its defaults, and its context) is a session fixture of tests/stealing/conftest.py
def test_adaptive_misinformation_calibrates_tau_on_the_defenders_data(misinformed, victim) -> None:
    module, ctx = misinformed
    with torch.no_grad():
        top = F.softmax(victim(ctx.data), dim=1).max(1).values
    below = float((top < module.tau).float().mean())
    assert below <= 0.01 + 1e-9 and below >= 0.01 - 2 / len(top)


def test_adaptive_misinformation_answers_in_distribution_like_the_victim(misinformed, victim, data) -> None:
    module, _ = misinformed
    x = data.test.x
    assert agreement(predict(module, x), predict(victim, x)) >= 0.98
    with torch.no_grad():
        wrong = F.softmax(module.misinformation(x), dim=1)[torch.arange(len(x)), data.test.y]
    assert float(wrong.mean()) < 0.05  # the misinformation model learned to avoid the true class


def _ood(data) -> dict[str, torch.Tensor]:
    noise = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    return {"fashion": data.pool[:1000], "noise": noise}


def test_adaptive_misinformation_answers_out_of_distribution_differently(misinformed, victim, data) -> None:
    # the victim (no Outlier Exposure) is confident on much of Fashion-MNIST and noise: at the default 1% of
    # in-distribution queries misinformed, 38% / 42% of these get misinformation (measured), and their labels move
    module, _ = misinformed
    for x in _ood(data).values():
        with torch.no_grad():
            truth = F.softmax(victim(x), dim=1)
            out = module(x)
        assert float(module.weight(truth).gt(0.5).float().mean()) >= 0.3
        assert agreement(out.argmax(1), truth.argmax(1)) <= 0.75


def test_adaptive_misinformation_trades_honest_accuracy_for_coverage(victim, data, misinformed) -> None:
    _, ctx = misinformed
    wide = build("adaptive-misinformation", victim, ctx, reject=0.05, steps=50)
    x = data.test.x
    assert agreement(predict(wide, x), predict(victim, x)) < 0.98  # 5% of in-distribution queries misinformed
    for ood in _ood(data).values():
        with torch.no_grad():
            truth = F.softmax(victim(ood), dim=1)
        assert float(wide.weight(truth).gt(0.5).float().mean()) >= 0.8
