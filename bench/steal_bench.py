"""Model stealing: bastion's extraction attacks, output defenses and PRADA side by side with IBM ART's extraction
attacks and output postprocessors, on the same victim, the same thief's pool, budget, architecture and training, in
one run.

    PYTHONPATH=$PWD/src /work/main/.venv-bench/bin/python bench/steal_bench.py --out bench/results/steal_art.json
    PYTHONPATH=$PWD/src /work/main/.venv-bench/bin/python bench/steal_bench.py --table   # Markdown for BENCHMARKS

Shared by both sides: the victim is the zoo's ``mnist-cnn`` (``bastion.zoo.load_model``); ART sees it through its
``PyTorchClassifier`` with a softmax appended (ART's ``predict`` returns the module's output as it is, and its
``use_probability=True`` trains on whatever ``predict`` returns: without the softmax, on logits). The thief's pool
is the Fashion-MNIST training images (``load_dataset("fashion-mnist").train``, 54,000, a natural pool of another
domain). The copy (thief) is ``build_model("cnn", (1, 28, 28), 10)`` built by ``CopyRecipe.build`` (seed
``--seed``): the same initial weights on both sides (checked and recorded). Training: Adam lr 1e-3, batches of 128,
E epochs: bastion ``CopyRecipe(epochs=E, min_steps=0)``, ART ``nb_epochs=E, batch_size_fit=128`` with an Adam
optimizer on the copy's parameters and ``nn.CrossEntropyLoss``. E depends on the budget (``--epochs``, default
20 at 1k queries, 6 at 5k, 3 at 20k: about 160, 240 and 470 optimizer steps, so that the small budgets' copies are
not scored after a few dozen steps while the run stays near 20 minutes on 2 cores); it is the same on both sides.
Both sides query in batches of 500.
Scores: accuracy on the first 2,000 MNIST test points and fidelity (agreement with the plain victim's labels on
them). Timing: each side's whole extraction (queries + training the copy; building the copy included; turning the
pool into a numpy array for ART is done once, outside), one run per cell, the two sides alternated (bastion first
in even cells, ART first in odd ones), single-threaded (``torch.set_num_threads(1)``) on both sides. The machine
is a 2-core CPU shared with other jobs: its load is recorded at the start and the end, and timings are noisy.

Rows and every difference between the sides:

1. KnockoffNets, random strategy (Orekondy et al. 2019): bastion ``knockoff-random`` vs ART
   ``KnockoffNets(sampling_strategy="random", use_probability=True)``; Copycat CNN (Correia-Silva et al. 2018):
   bastion ``copycat`` vs ART ``CopycatCNN(use_probability=False)``; at each of ``--budgets`` (1k, 5k, 20k).
   Differences that stay: (a) which pool images are asked: bastion draws them with ``torch.randperm`` from its
   own seeded generator, ART with ``np.random.choice(replace=False)`` from numpy's global RNG (seeded here), so the
   two sides ask different random subsets of the same pool; (b) minibatch order: bastion's own seeded permutation,
   ART's ``DataLoader(shuffle=True)`` from torch's global RNG (seeded here); (c) the loss is the same on both
   sides, ``torch``'s cross-entropy against the victim's probabilities (ART keeps probability targets for
   ``CrossEntropyLoss``: its ``reduce_labels`` passes non-integer rows through) or against hard labels (copycat;
   ART reduces its one-hot rows to indices); (d) bastion's queries pass its ``QueryAPI`` (budget check, a sha256
   digest of every batch for its replayable transcript), ART's its ``predict`` (numpy round trip).
   KnockoffNets, adaptive strategy at the smallest budget: bastion ``knockoff-adaptive`` (the pool's Fashion-MNIST
   labels as its actions) vs ART ``KnockoffNets(sampling_strategy="adaptive", reward="all")`` with the same labels
   as its required ``y``: whether ART's runs (or its exception) is recorded with its scores. Differences: ART
   queries one image per bandit step, draws each action's image *with* replacement, trains the copy online one
   image per step and then ``nb_epochs`` more on everything, always on the argmax labels (its adaptive path ignores
   ``use_probability``); bastion asks 8 images per step without replacement, keeps an online copy for the loss
   reward only, and trains the final copy afresh on the probabilities.
2. Output defenses: every registered bastion output defense at its defaults, deployed in front of the victim:
   honest users' accuracy (the 2,000 test points through the defense) and its loss against the plain victim; the
   ``knockoff-random`` copy at ``--defense-budget`` (5k) queries against the defended victim, its fidelity to the
   *plain* victim and the loss of fidelity against the undefended copy (row 1's). ART's counterpart, where ART has
   the same defense, as a ``postprocessing_defences`` entry of the victim's classifier with bastion's parameters,
   attacked by ART's random KnockoffNets (``use_probability=True``) at the same budget: ``ReverseSigmoid`` (beta,
   gamma) for ``reverse-sigmoid``, ``Rounded`` (decimals) for ``rounding``, ``ClassLabels`` for ``top1``. Both
   sides' outputs on the same probabilities (the victim's, on the 2,000 test points) are compared (max absolute
   difference, argmax agreement), and again with each known cause removed. Known differences: bastion's rounding
   renormalises a row whose rounded entries do not sum to 1 (ART's does not); ART's reverse sigmoid clips the
   probabilities to [1e-9, 1 - 1e-9] in their own dtype, and in float32 1 - 1e-9 is 1.0, so a probability of
   exactly 1 meets log(0) and gets the perturbation's limit beta/2 (bastion computes in float64); ART's
   ``ClassLabels`` sets ``class_labels[:, argmax_of_every_row] = 1``, i.e. every row of a batch gets a 1 at the
   argmax of *every* row of that batch (ART applies postprocessors to the whole ``predict`` output), which the
   output check shows on the full batch and one row at a time. ART's
   ``HighConfidence`` (zero entries under a cutoff, no renormalisation) and ``GaussianNoise`` have no bastion
   counterpart, and bastion's ``top-k``, ``mad`` and ``adaptive-misinformation`` none in ART: those are one-sided.
3. PRADA (Juuti et al. 2019): bastion's ``prada`` detector at its defaults on the query streams of bastion's
   ``jbda`` and ``jbda-trnd`` (150 seed images, the MNIST training split's first, the attacks' paper defaults,
   budget ``--prada-budget``; their substitutes trained with ``--prada-epochs`` epochs, min_steps 0), stopped at
   the first flag (queries until detection), on ``knockoff-random``'s natural Fashion-MNIST stream, and on
   ``--honest-clients`` honest clients sending ``--honest-queries`` MNIST test images each (seeded random order,
   a fresh detector per client): after how many queries each is flagged (never, ideally). ART 1.20.1 has no PRADA
   (no extraction detector at all): bastion's side only, next to what the paper reports (see ``PAPER_PRADA``).

A row whose bastion algorithm is not on this branch yet is recorded as "not run: not merged yet".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars

import numpy as np
import torch
from torch import Tensor, nn

from bastion.data import load_dataset
from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, STEAL_ATTACKS, load_algorithms
from bastion.stealing.base import DefenseContext, QueryAPI, ThiefView, VictimSpec, as_probabilities
from bastion.stealing.copy import CopyRecipe
from bastion.stealing.metrics import agreement, predict
from bastion.zoo import load_model
from common import RESULTS, fmt, machine, setup, versions, write_json

LOG: list[str] = []
NOT_MERGED = "not run: not merged yet"
ART_NAMES = {"knockoff": "KnockoffNets random", "copycat": "CopycatCNN"}
ART_POSTPROCESSORS = {"reverse-sigmoid": "ReverseSigmoid", "rounding": "Rounded", "top1": "ClassLabels"}

# What the PRADA paper reports, as far as the stored copies reachable through the `search` tool show it.
PAPER_PRADA = {
    "paper": "Juuti, Szyller, Marchal & Asokan 2019, PRADA: Protecting against DNN Model Stealing Attacks, "
             "IEEE EuroS&P (arXiv 1805.02628 v5)",
    "reported": "abstract (v5): 'PRADA can detect all prior model extraction attacks with no false positives'; "
                "abstract (v1, 2018): 'PRADA can detect all known model extraction attacks with a 100% success "
                "rate and no false positives'",
    "per_attack_queries_and_delta": "not retrieved: the stored copies of the paper reachable here give its "
                                    "abstract only, not its detection table or its per-model delta; no figure "
                                    "is quoted from memory",
    "reference_code": "SSGAalto/prada-protecting-against-dnn-model-stealing-attacks: src/main.py serves a model "
                      "with delta=0.9 (an example value; the delta is an argument there)",
    "attack_setting": "Papernot et al. 2017 on MNIST: 150 seed images, 6 substitute epochs, lambda=0.1 (bastion's "
                      "jbda defaults); T-RND: the same loop with targeted steps towards random classes",
}


def log(msg: str) -> None:
    LOG.append(msg)
    print(msg, flush=True)


def ratio(a: Any, b: Any) -> float | None:
    ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and b not in (0, 0.0)
    return a / b if ok else None


def other_jobs() -> list[str]:
    """Other heavy processes on the machine (a concurrent bastion/pytest run), for the record."""
    try:
        out = subprocess.run(["pgrep", "-af", "bastion|pytest"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [line for line in out.splitlines() if str(os.getpid()) not in line.split()[0] and "pgrep" not in line]


# --------------------------------------------------------------------------------------------------- the world


class Ctx:
    """Victim, data, pool and recipe shared by every row."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        mnist = load_dataset("mnist", seed=args.seed)
        self.spec = VictimSpec(tuple(mnist.spec.shape), mnist.spec.num_classes, float(mnist.spec.lower),
                               float(mnist.spec.upper))
        self.test = mnist.test.take(args.test)
        self.val = mnist.val.take(args.val)
        self.benign = mnist.test.x
        self.seed = mnist.train.x[:args.seed_size]
        fashion = load_dataset("fashion-mnist", seed=args.seed)
        self.pool, self.pool_labels = fashion.train.x, fashion.train.y
        self.pool_np = self.pool.numpy().astype(np.float32)
        self.victim = load_model("mnist-cnn")[0].eval()
        self.victim_labels = predict(self.victim, self.test.x)

    def recipe(self, budget: int) -> CopyRecipe:
        """The copy's training at ``budget`` queries: the same on both sides."""
        return CopyRecipe(arch="cnn", epochs=epochs_for(self.args.epochs, budget), min_steps=0, batch_size=128,
                          lr=1e-3, seed=self.args.seed)

    def score(self, model: nn.Module | Callable[[Tensor], Tensor]) -> dict[str, float]:
        pred = predict(model, self.test.x)
        return {"accuracy": agreement(pred, self.test.y), "fidelity": agreement(pred, self.victim_labels)}

    def context(self) -> DefenseContext:
        return DefenseContext(self.val.x, self.val.y, self.spec, torch.Generator().manual_seed(self.args.seed + 1),
                              victim=self.victim)


def missing(*names: str) -> str | None:
    absent = [n for n in names if n not in STEAL_ATTACKS]
    return f"{NOT_MERGED} ({', '.join(absent)})" if absent else None


# ------------------------------------------------------------------------------------------------ the two sides


def bastion_extract(ctx: Ctx, attack: str, backend: nn.Module, budget: int, *, pool_labels: Tensor | None = None,
                    recipe: CopyRecipe | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Run a registered attack at its paper defaults through a ``QueryAPI`` and train its final copy."""
    recipe = recipe or ctx.recipe(budget)
    api = QueryAPI(backend, budget=budget)
    view = ThiefView(api, ctx.pool, ctx.seed, ctx.spec, lambda x, a: recipe.fit(x, a, ctx.spec),
                     torch.Generator().manual_seed(ctx.args.seed + 11), pool_labels=pool_labels)
    STEAL_ATTACKS.get(attack).fn(view)
    make = getattr(view, "copy", None) or view.fit  # the attack's own solver when it proposed one (copycat)
    copy = make(*view.answered())
    return copy.eval(), {"queries": api.used, "answers": api.answers}


class Counter(nn.Module):
    """Counts the rows the victim is asked (ART's side)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.rows = module, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += int(x.shape[0])
        return self.module(x)


def art_victim(ctx: Ctx, postprocessor: Any = None) -> tuple[Any, Counter]:
    from art.estimators.classification import PyTorchClassifier

    counter = Counter(nn.Sequential(ctx.victim, nn.Softmax(dim=1)))
    clf = PyTorchClassifier(counter, loss=nn.CrossEntropyLoss(), input_shape=ctx.spec.shape,
                            nb_classes=ctx.spec.num_classes, clip_values=(ctx.spec.lower, ctx.spec.upper),
                            postprocessing_defences=[postprocessor] if postprocessor is not None else None)
    return clf, counter


def art_thief(ctx: Ctx, recipe: CopyRecipe) -> tuple[Any, nn.Module]:
    from art.estimators.classification import PyTorchClassifier

    model = recipe.build(ctx.spec)
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(),
                                                                                           lr=recipe.lr),
                            input_shape=ctx.spec.shape, nb_classes=ctx.spec.num_classes,
                            clip_values=(ctx.spec.lower, ctx.spec.upper))
    return clf, model


def art_extract(ctx: Ctx, kind: str, budget: int, postprocessor: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """ART's ``kind`` ("knockoff", "copycat", "knockoff-adaptive") against the (post-processed) victim."""
    from art.attacks.extraction import CopycatCNN, KnockoffNets

    recipe = ctx.recipe(budget)
    victim, counter = art_victim(ctx, postprocessor)
    thief, model = art_thief(ctx, recipe)
    np.random.seed(ctx.args.seed)
    torch.manual_seed(ctx.args.seed)
    common = {"batch_size_fit": recipe.batch_size, "nb_epochs": recipe.epochs, "nb_stolen": budget}
    if kind == "copycat":
        attack = CopycatCNN(victim, batch_size_query=500, use_probability=False, **common)
        attack.extract(ctx.pool_np, thieved_classifier=thief)
    elif kind == "knockoff":
        attack = KnockoffNets(victim, batch_size_query=500, sampling_strategy="random", use_probability=True,
                              verbose=False, **common)
        attack.extract(ctx.pool_np, thieved_classifier=thief)
    else:
        attack = KnockoffNets(victim, batch_size_query=1, sampling_strategy="adaptive", reward="all",
                              use_probability=True, verbose=False, **common)
        attack.extract(ctx.pool_np, ctx.pool_labels.numpy(), thieved_classifier=thief)
    return model.eval(), {"queries": counter.rows}


def art_targets(ctx: Ctx) -> dict[str, Any]:
    """What ART's thief trains on: probability rows kept as soft targets, one-hot rows reduced to indices (so its
    ``nn.CrossEntropyLoss`` is bastion's ``F.cross_entropy`` on the same targets)."""
    clf, _ = art_thief(ctx, ctx.recipe(min(ctx.args.budgets)))
    with torch.no_grad():
        p = as_probabilities(ctx.victim(ctx.pool[:256])).numpy()
    hard = np.eye(ctx.spec.num_classes, dtype=np.float32)[p.argmax(1)]
    soft_kept = np.array_equal(np.asarray(clf.reduce_labels(p)), p)
    reduced = np.asarray(clf.reduce_labels(hard))
    return {"soft_targets_kept": bool(soft_kept),
            "one_hot_reduced_to_indices": bool(reduced.ndim == 1 and np.array_equal(reduced, p.argmax(1)))}


def timed(fn: Callable[[], tuple[nn.Module, dict[str, Any]]], ctx: Ctx) -> dict[str, Any]:
    start = time.perf_counter()
    model, info = fn()
    seconds = time.perf_counter() - start
    return {**ctx.score(model), **info, "seconds": round(seconds, 2)}


def side_by_side(ctx: Ctx, runners: dict[str, Callable[[], dict[str, Any]]], cell: int) -> dict[str, Any]:
    order = list(runners.items())
    out: dict[str, Any] = {"order": [name for name, _ in (order if cell % 2 == 0 else order[::-1])]}
    for name, fn in order if cell % 2 == 0 else order[::-1]:
        out[name] = fn()
    b, a = out["bastion"], out["art"]
    out["ratio"] = {k: ratio(b.get(k), a.get(k)) for k in ("accuracy", "fidelity", "seconds")}
    log(f"    bastion acc {b['accuracy']:.4f} fid {b['fidelity']:.4f} {b['seconds']:7.1f} s | ART acc "
        f"{a['accuracy']:.4f} fid {a['fidelity']:.4f} {a['seconds']:7.1f} s | time ratio "
        f"{fmt(out['ratio']['seconds'], 2)}")
    return out


# ------------------------------------------------------------------------------------------ row 1: extraction


PAIRS = (("knockoff-random", "knockoff"), ("copycat", "copycat"))


def row_extraction(ctx: Ctx) -> list[dict[str, Any]]:
    log("row 1: extraction (KnockoffNets random, Copycat CNN)")
    cells: list[dict[str, Any]] = []
    for bastion_name, art_kind in PAIRS:
        for budget in ctx.args.budgets:
            log(f"  {bastion_name} vs ART {art_kind}, {budget} queries")
            cell: dict[str, Any] = {"attack": bastion_name, "art_attack": art_kind, "budget": budget,
                                    "epochs": ctx.recipe(budget).epochs}
            reason = missing(bastion_name)
            if reason:
                cells.append({**cell, "status": reason})
                log(f"    {reason}")
                continue
            runners = {
                "bastion": lambda n=bastion_name, b=budget: timed(lambda: bastion_extract(ctx, n, ctx.victim, b), ctx),
                "art": lambda k=art_kind, b=budget: timed(lambda: art_extract(ctx, k, b), ctx)}
            cells.append({**cell, "status": "run", **side_by_side(ctx, runners, len(cells))})
    return cells


def row_adaptive(ctx: Ctx) -> dict[str, Any]:
    budget = min(ctx.args.budgets)
    log(f"row 1b: KnockoffNets adaptive, {budget} queries")
    out: dict[str, Any] = {"budget": budget, "epochs": ctx.recipe(budget).epochs}
    reason = missing("knockoff-adaptive")
    out["bastion"] = {"status": reason} if reason else {"status": "run", **timed(
        lambda: bastion_extract(ctx, "knockoff-adaptive", ctx.victim, budget, pool_labels=ctx.pool_labels), ctx)}
    try:
        out["art"] = {"status": "works", **timed(lambda: art_extract(ctx, "knockoff-adaptive", budget), ctx)}
    except Exception as err:  # what ART raises is the measurement
        out["art"] = {"status": f"raised {type(err).__name__}: {err}",
                      "traceback_tail": traceback.format_exc().strip().splitlines()[-6:]}
    log(f"    bastion: {out['bastion']}\n    ART: {out['art']}")
    return out


# --------------------------------------------------------------------------------------- row 2: output defenses


def art_postprocessor(name: str, params: dict[str, Any]) -> Any:
    from art.defences.postprocessor import ClassLabels, ReverseSigmoid, Rounded

    if name == "reverse-sigmoid":
        return ReverseSigmoid(beta=float(params["beta"]), gamma=float(params["gamma"]))
    if name == "rounding":
        return Rounded(decimals=int(params["decimals"]))
    return ClassLabels()


def as_rows(out: Tensor, num_classes: int) -> np.ndarray:
    """Answers as ``(N, C)`` float rows: labels one-hot."""
    if out.dim() == 1:
        out = torch.nn.functional.one_hot(out.long(), num_classes)
    return out.double().numpy()


def same_outputs(ctx: Ctx, module: nn.Module, pp: Any) -> dict[str, Any]:
    """bastion's and ART's answers to the same probabilities (the victim's on the test points)."""
    with torch.no_grad():
        probs = as_probabilities(ctx.victim(ctx.test.x))
        ours = as_rows(module.perturb(ctx.test.x, probs), ctx.spec.num_classes)
    p = probs.numpy().astype(np.float32)
    full = np.asarray(pp(p), dtype=np.float64)
    single = np.concatenate([np.asarray(pp(p[i:i + 1]), dtype=np.float64) for i in range(p.shape[0])])
    out = {"max_abs_diff": float(np.abs(full - ours).max()),
           "argmax_agreement": float((full.argmax(1) == ours.argmax(1)).mean()),
           "rows_differing_over_1e-6": int((np.abs(full - ours).max(1) > 1e-6).sum())}
    if not np.array_equal(single, full):
        out["max_abs_diff_one_row_at_a_time"] = float(np.abs(single - ours).max())
        out["mean_ones_per_row_full_batch"] = float((full == 1).sum(1).mean())
    out.update(explained(pp, p, full, ours))
    return out


def explained(pp: Any, p: np.ndarray, full: np.ndarray, ours: np.ndarray) -> dict[str, Any]:
    """Where the outputs differ, the difference once its known cause is removed."""
    name = type(pp).__name__
    if name == "ReverseSigmoid":  # ART clips to 1 - 1e-9 in float32, where that is 1.0: log(0) at p = 1
        p64 = np.asarray(pp(p.astype(np.float64)), dtype=np.float64)
        return {"rows_with_p_equal_1_in_float32": int((p == 1.0).any(1).sum()),
                "max_abs_diff_art_fed_float64": float(np.abs(p64 - ours).max())}
    if name == "Rounded":  # bastion renormalises rows whose rounded entries do not sum to 1
        total = full.sum(1, keepdims=True)
        off = np.abs(total - 1.0) > 1e-9
        renorm = np.where(off, full / total, full)
        return {"art_rows_not_summing_to_1": int(off.sum()),
                "max_abs_diff_art_renormalised": float(np.abs(renorm - ours).max())}
    return {}


def honest(ctx: Ctx, answers: Tensor) -> dict[str, float]:
    labels = answers.long() if answers.dim() == 1 else answers.argmax(1)
    acc = agreement(labels, ctx.test.y)
    plain = agreement(ctx.victim_labels, ctx.test.y)
    return {"honest_accuracy": acc, "accuracy_loss": plain - acc,
            "label_changes": 1 - agreement(labels, ctx.victim_labels)}


def row_defenses(ctx: Ctx, extraction: list[dict[str, Any]]) -> dict[str, Any]:
    budget = ctx.args.defense_budget
    log(f"row 2: output defenses, knockoff-random at {budget} queries")
    base = next((c for c in extraction if c["attack"] == "knockoff-random" and c["budget"] == budget
                 and c.get("status") == "run"), None)
    if base is None:
        base = {"bastion": timed(lambda: bastion_extract(ctx, "knockoff-random", ctx.victim, budget), ctx),
                "art": timed(lambda: art_extract(ctx, "knockoff", budget), ctx)}
    undefended = {"bastion": base["bastion"]["fidelity"], "art": base["art"]["fidelity"]}
    log(f"  undefended fidelity: bastion {undefended['bastion']:.4f}, ART {undefended['art']:.4f}")
    if not OUTPUT_DEFENSES.names():
        log(f"  {NOT_MERGED} (no output defense registered)")
    rows = []
    for name in OUTPUT_DEFENSES.names():
        rows.append(defense_row(ctx, name, budget, undefended, len(rows)))
    one_sided_art = ["HighConfidence (cutoff; no renormalisation)", "GaussianNoise"]
    return {"budget": budget, "epochs": ctx.recipe(budget).epochs, "undefended_fidelity": undefended, "defenses": rows,
            "bastion_defenses": OUTPUT_DEFENSES.names(), "art_only": one_sided_art}


def defense_row(ctx: Ctx, name: str, budget: int, undefended: dict[str, float], cell: int) -> dict[str, Any]:
    spec = OUTPUT_DEFENSES.get(name)
    params = dict(spec.defaults)
    log(f"  {name} {params}")
    start = time.perf_counter()
    module = spec.fn(ctx.victim, ctx.context(), **params).eval()
    built = time.perf_counter() - start
    with torch.no_grad():
        answers = torch.cat([module(ctx.test.x[i:i + 500]) for i in range(0, len(ctx.test), 500)])
    row: dict[str, Any] = {"defense": name, "params": params, "answers": spec.answers,
                           "build_seconds": round(built, 2), **honest(ctx, answers)}

    def ours() -> dict[str, Any]:
        return timed(lambda: bastion_extract(ctx, "knockoff-random", module, budget), ctx)

    if name not in ART_POSTPROCESSORS:
        row["bastion"] = ours()
        row["art"] = {"status": "ART has no such postprocessor"}
    else:
        pp = art_postprocessor(name, params)
        row["art_postprocessor"] = f"{ART_POSTPROCESSORS[name]}({', '.join(f'{k}={v}' for k, v in params.items())})"
        row["same_outputs"] = same_outputs(ctx, module, pp)
        clf, _ = art_victim(ctx, pp)
        art_answers = torch.from_numpy(clf.predict(ctx.test.x.numpy().astype(np.float32), batch_size=500))
        art_side = {"status": "run", **honest(ctx, art_answers.argmax(1))}
        row.update(side_by_side(ctx, {"bastion": ours, "art": lambda: timed(
            lambda: art_extract(ctx, "knockoff", budget, pp), ctx)}, cell))
        row["art"].update(art_side)
        row["art"]["fidelity_loss"] = undefended["art"] - row["art"]["fidelity"]
    row["bastion"]["fidelity_loss"] = undefended["bastion"] - row["bastion"]["fidelity"]
    log(f"    honest accuracy loss {row['accuracy_loss']:.4f}, thief fidelity {row['bastion']['fidelity']:.4f} "
        f"(loss {row['bastion']['fidelity_loss']:.4f}); outputs vs ART: {row.get('same_outputs')}")
    return row


# -------------------------------------------------------------------------------------------------- row 3: PRADA


class Flagged(Exception):
    def __init__(self, queries: int) -> None:
        super().__init__(f"flagged after {queries} queries")
        self.queries = queries


class Watched(nn.Module):
    """The victim behind a detector: every query is observed; the first flag stops the client."""

    def __init__(self, victim: nn.Module, detector: Any) -> None:
        super().__init__()
        self.victim, self.detector, self.seen = victim, detector, 0

    def forward(self, x: Tensor) -> Tensor:
        flags = self.detector.observe(x)
        hit = torch.nonzero(flags)
        if hit.numel():
            raise Flagged(self.seen + int(hit[0]) + 1)
        self.seen += int(x.shape[0])
        return self.victim(x)


def first_flag(detector: Any, stream: Tensor, batch: int = 100) -> int | None:
    seen = 0
    for i in range(0, stream.shape[0], batch):
        hit = torch.nonzero(detector.observe(stream[i:i + batch]))
        if hit.numel():
            return seen + int(hit[0]) + 1
        seen += min(batch, stream.shape[0] - i)
    return None


def row_prada(ctx: Ctx) -> dict[str, Any]:
    log("row 3: PRADA")
    if "prada" not in DETECTORS:
        return {"status": f"{NOT_MERGED} (prada)", "paper": PAPER_PRADA, "art": "ART has no PRADA"}
    spec = DETECTORS.get("prada")
    out: dict[str, Any] = {"status": "run", "params": dict(spec.defaults), "paper": PAPER_PRADA,
                           "art": "ART 1.20.1 has no PRADA (and no extraction detector at all)", "streams": {}}
    recipe = CopyRecipe(arch="cnn", epochs=ctx.args.prada_epochs, min_steps=0, batch_size=128, lr=1e-3,
                        seed=ctx.args.seed)
    for attack in ("jbda", "jbda-trnd"):
        reason = missing(attack)
        if reason:
            out["streams"][attack] = {"status": reason}
            continue
        watched = Watched(ctx.victim, spec.fn(ctx.context()))
        start = time.perf_counter()
        try:
            bastion_extract(ctx, attack, watched, ctx.args.prada_budget, recipe=recipe)
            flagged = None
        except Flagged as hit:
            flagged = hit.queries
        out["streams"][attack] = {"status": "run", "budget": ctx.args.prada_budget, "queries_to_detection": flagged,
                                  "seconds": round(time.perf_counter() - start, 1)}
        log(f"  {attack}: flagged after {flagged} queries (budget {ctx.args.prada_budget})")
    order = torch.randperm(ctx.pool.shape[0], generator=torch.Generator().manual_seed(ctx.args.seed + 11))
    stream = ctx.pool[order[:ctx.args.defense_budget]]
    start = time.perf_counter()
    flagged = first_flag(spec.fn(ctx.context()), stream)
    out["streams"]["knockoff-random"] = {"status": "run", "budget": stream.shape[0], "queries_to_detection": flagged,
                                         "seconds": round(time.perf_counter() - start, 1)}
    log(f"  knockoff-random (Fashion-MNIST pool): flagged after {flagged} queries")
    out["honest"] = honest_clients(ctx, spec)
    return out


def honest_clients(ctx: Ctx, spec: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(ctx.args.seed + 3)
    n, q = ctx.benign.shape[0], ctx.args.honest_queries
    start = time.perf_counter()
    flags = [first_flag(spec.fn(ctx.context()), ctx.benign[torch.randperm(n, generator=g)[:q]])
             for _ in range(ctx.args.honest_clients)]
    rate = sum(f is not None for f in flags) / len(flags) if flags else None
    log(f"  {len(flags)} honest clients x {q} MNIST test images: flags {flags} (false-alarm rate {fmt(rate, 2)})")
    return {"clients": len(flags), "queries_each": q, "first_flags": flags, "false_alarm_rate": rate,
            "seconds": round(time.perf_counter() - start, 1)}


# ------------------------------------------------------------------------------------------------------- table


def pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) else "-"


def md_extraction(doc: dict[str, Any]) -> list[str]:
    lines = [f"Extraction (the copy: Adam 1e-3, batch 128, the epochs shown, the same on both sides; accuracy and "
             f"fidelity in % on {doc['settings']['test']} MNIST test points; seconds: the whole extraction, "
             "single-threaded)", "",
             "| attack (bastion / ART) | queries | epochs | accuracy b / ART | fidelity b / ART | s b / ART "
             "| time b/ART |", "|---|---|---|---|---|---|---|"]
    for c in doc["rows"].get("extraction", []):
        label = f"{c['attack']} / {ART_NAMES[c['art_attack']]}"
        if c["status"] != "run":
            lines.append(f"| {label} | {c['budget']} | {c['epochs']} | {c['status']} | | | |")
            continue
        b, a = c["bastion"], c["art"]
        lines.append(f"| {label} | {c['budget']} | {c['epochs']} | {pct(b['accuracy'])} / {pct(a['accuracy'])} | "
                     f"{pct(b['fidelity'])} / {pct(a['fidelity'])} | {b['seconds']:.1f} / {a['seconds']:.1f} | "
                     f"{fmt(c['ratio']['seconds'], 2)} |")
    ad = doc["rows"].get("adaptive")
    if ad:
        b, a = ad["bastion"], ad["art"]
        bs = (f"{pct(b['accuracy'])} / {pct(b['fidelity'])} / {b['seconds']:.1f} s" if b["status"] == "run"
              else b["status"])
        as_ = (f"{pct(a['accuracy'])} / {pct(a['fidelity'])} / {a['seconds']:.1f} s" if a["status"] == "works"
               else a["status"])
        lines += ["", f"KnockoffNets adaptive at {ad['budget']} queries, {ad['epochs']} epochs (accuracy / fidelity / "
                      "seconds): "
                      f"bastion knockoff-adaptive {bs}; ART adaptive: {as_}"]
    return lines


def md_defenses(doc: dict[str, Any]) -> list[str]:
    d = doc["rows"].get("defenses")
    if not d:
        return []
    u = d["undefended_fidelity"]
    if not d["defenses"]:
        return [f"Output defenses: {NOT_MERGED} (no output defense registered; undefended knockoff-random copy's "
                f"fidelity at {d['budget']} queries: bastion {pct(u['bastion'])}%, ART {pct(u['art'])}%)"]
    lines = [f"Output defenses (knockoff-random thief at {d['budget']} queries, {d['epochs']} epochs; undefended "
             f"copy's fidelity: bastion {pct(u['bastion'])}%, ART {pct(u['art'])}%; losses in percentage points)", "",
             "| defense (bastion / ART) | honest acc. loss b / ART | thief fidelity b / ART | fidelity loss b / ART "
             "| outputs: max abs diff, argmax agree |", "|---|---|---|---|---|"]
    for r in d["defenses"]:
        b, a = r["bastion"], r.get("art", {})
        art_name = r.get("art_postprocessor", "none in ART")
        same = r.get("same_outputs")
        same_s = f"{same['max_abs_diff']:.2g}, {pct(same['argmax_agreement'])}%" if same else "-"
        a_run = a.get("status") == "run"
        lines.append(f"| {r['defense']}{params_s(r['params'])} / {art_name} | {pct(r['accuracy_loss'])} / "
                     f"{pct(a['accuracy_loss']) if a_run else '-'} | {pct(b['fidelity'])} / "
                     f"{pct(a['fidelity']) if a_run else '-'} | {pct(b['fidelity_loss'])} / "
                     f"{pct(a['fidelity_loss']) if a_run else '-'} | {same_s} |")
    return lines


def params_s(params: dict[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""


def md_prada(doc: dict[str, Any]) -> list[str]:
    p = doc["rows"].get("prada")
    if not p:
        return []
    if p.get("status") != "run":
        return [f"PRADA: {p['status']}"]
    lines = [f"PRADA{params_s(p['params'])} (bastion only: {p['art']})", "",
             "| client | queries sent (budget) | flagged after |", "|---|---|---|"]
    for name, s in p["streams"].items():
        if s["status"] != "run":
            lines.append(f"| {name} | - | {s['status']} |")
            continue
        lines.append(f"| {name} | {s['budget']} | {s['queries_to_detection'] or 'never'} |")
    h = p["honest"]
    flags = ", ".join(str(f) if f is not None else "never" for f in h["first_flags"])
    lines.append(f"| {h['clients']} honest clients (MNIST test) | {h['queries_each']} each | {flags} |")
    lines += ["", f"Paper: {p['paper']['reported']}; per-attack figures: {p['paper']['per_attack_queries_and_delta']}."]
    return lines


def markdown(doc: dict[str, Any]) -> str:
    parts = [md_extraction(doc), md_defenses(doc), md_prada(doc)]
    return "\n\n".join("\n".join(p) for p in parts if p)


# -------------------------------------------------------------------------------------------------------- main


ROWS = ("extraction", "adaptive", "defenses", "prada")


EPOCHS = "1000:20,5000:6,20000:3"


def parse_epochs(text: str) -> dict[int, int] | int:
    if ":" not in text:
        return int(text)
    return {int(b): int(e) for b, e in (pair.split(":") for pair in text.split(","))}


def epochs_for(epochs: dict[int, int] | int, budget: int) -> int:
    """The epochs at ``budget``: the given number, or the pair of the largest listed budget not above it."""
    if isinstance(epochs, int):
        return epochs
    listed = [b for b in sorted(epochs) if b <= budget] or [min(epochs)]
    return epochs[listed[-1]]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", type=lambda s: [int(v) for v in s.split(",")], default=[1000, 5000, 20000])
    ap.add_argument("--epochs", type=parse_epochs, default=parse_epochs(EPOCHS),
                    help="the copy's training epochs, the same on both sides: one number for every budget, or "
                         f"BUDGET:EPOCHS pairs (default {EPOCHS}: about 160, 240 and 470 Adam steps)")
    ap.add_argument("--defense-budget", type=int, default=5000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--val", type=int, default=1000, help="the defender's data (MNIST validation split)")
    ap.add_argument("--seed-size", type=int, default=150, help="JBDA's seed set (Papernot et al.: 150)")
    ap.add_argument("--prada-budget", type=int, default=9600, help="150 * 2**6: JBDA's 6 rounds")
    ap.add_argument("--prada-epochs", type=int, default=10, help="JBDA substitute epochs per round (Papernot: 10)")
    ap.add_argument("--honest-clients", type=int, default=10)
    ap.add_argument("--honest-queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--out", type=Path, default=RESULTS / "steal_art.json")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    return ap.parse_args()


def main() -> None:
    args = parse()
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return
    setup()
    warnings.filterwarnings("ignore", category=UserWarning)
    load_algorithms()
    start, load_start, jobs_start = time.perf_counter(), os.getloadavg(), other_jobs()
    wanted = set(args.rows.split(","))
    ctx = Ctx(args)
    recipe = ctx.recipe(min(args.budgets))
    same_init = all(torch.equal(a, b) for a, b in zip(recipe.build(ctx.spec).state_dict().values(),
                                                       art_thief(ctx, recipe)[1].state_dict().values(), strict=True))
    log(f"attacks: {', '.join(STEAL_ATTACKS.names())}; defenses: {', '.join(OUTPUT_DEFENSES.names()) or 'none'}; "
        f"detectors: {', '.join(DETECTORS.names()) or 'none'}; same initial copy on both sides: {same_init}")
    rows: dict[str, Any] = {}
    if "extraction" in wanted:
        rows["extraction"] = row_extraction(ctx)
    if "adaptive" in wanted:
        rows["adaptive"] = row_adaptive(ctx)
    if "defenses" in wanted:
        rows["defenses"] = row_defenses(ctx, rows.get("extraction", []))
    if "prada" in wanted:
        rows["prada"] = row_prada(ctx)
    doc = {"bench": "steal_bench", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "command": " ".join(sys.argv), "versions": versions(),
           "machine": {**machine(), "load_avg_at_end": os.getloadavg(), "load_avg_at_start": load_start,
                       "other_jobs_at_start": jobs_start, "other_jobs_at_end": other_jobs()},
           "git": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "settings": {"victim": "mnist-cnn", "pool": "fashion-mnist train", "pool_size": int(ctx.pool.shape[0]),
                        "test": len(ctx.test), "epochs": {str(b): epochs_for(args.epochs, b) for b in
                                                                 sorted({*args.budgets, args.defense_budget})},
                        "thief": "cnn (bastion default)",
                        "optimizer": "Adam lr 1e-3", "batch": 128, "same_initial_copy": same_init,
                        "victim_accuracy": agreement(ctx.victim_labels, ctx.test.y),
                        "art_training_targets": art_targets(ctx),
                        "registered": {"attacks": STEAL_ATTACKS.names(), "defenses": OUTPUT_DEFENSES.names(),
                                       "detectors": DETECTORS.names()}},
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "rows": rows, "total_seconds": round(time.perf_counter() - start, 1), "log": LOG}
    write_json(args.out, doc)
    print()
    print(markdown(doc))
    print(f"\nwrote {args.out} ({doc['total_seconds']} s)")


if __name__ == "__main__":
    main()
