"""White-box attack bench (issue 3): bastion's gradient attacks against torchattacks, ART, Foolbox and adv-lib.

    .venv-bench/bin/python bench/whitebox_bench.py [--models digits-std,digits-pgdat] [--points 500]
        [--attacks fgsm,pgd,apgd-ce,apgd-t,cw,deepfool,fmn,ddn] [--reps 3] [--reps-heavy 1] [--reps-quick 15]
        [--out bench/results/whitebox.json]

Same model, same points, same settings for every library; only points the model classifies correctly are
attacked (robust accuracy is over all points). Peers' outputs are re-checked like bastion's (projected onto
the threat, re-classified). Libraries alternate within one process, single-threaded; wall-time medians over
``--reps`` repetitions (``--reps-heavy`` for APGD-T, C&W, DeepFool and FMN; ``--reps-quick`` for FGSM, a call of
a few milliseconds whose median over 3 is at the mercy of one scheduler hiccup). bastion's speed ratio is its attack
time over
(passes it used x the measured time of one forward+backward pass of the attacked batch). Against each peer the row
also keeps the paired ratio: bastion's time over the peer's in the same rep, median over the reps with a 95%
bootstrap interval (``paired_vs_peer``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

import common
from bastion.evaluation.runner import Adaptation, run_attack
from bastion.threat import LpThreat

common.setup()
common.stub_adv_lib()

import adv_lib.attacks as al  # noqa: E402
import foolbox as fb  # noqa: E402
import torchattacks as ta  # noqa: E402
from art.attacks.evasion import (  # noqa: E402
    AutoProjectedGradientDescent,
    CarliniL2Method,
    DeepFool,
    FastGradientMethod,
    ProjectedGradientDescent,
)
from art.estimators.classification import PyTorchClassifier  # noqa: E402

MINIMAL = {"cw", "deepfool", "fmn", "ddn"}
HEAVY = {"apgd-t", "cw", "deepfool", "fmn", "ddn"}
QUICK = {"fgsm"}
PGD_STEPS = 40
CW = {"binary_search_steps": 5, "max_iterations": 100, "initial_const": 1e-2, "learning_rate": 0.01}
DF = {"max_iter": 50, "overshoot": 0.02}
FMN_STEPS = 100
DDN_STEPS = 100

# bastion name and hyper-parameters per bench attack
BASTION = {
    "fgsm": ("fgsm", {}),
    "pgd": ("pgd", {"steps": PGD_STEPS, "restarts": 1}),
    "apgd-ce": ("apgd", {"loss": "ce", "n_iter": 100, "restarts": 1}),
    "apgd-t": ("apgd-t", {"n_iter": 100, "n_target_classes": 9, "restarts": 1}),
    "cw": ("cw", dict(CW)),
    "deepfool": ("deepfool", {"max_iter": DF["max_iter"], "overshoot": DF["overshoot"], "candidates": 10}),
    "fmn": ("fmn", {"steps": FMN_STEPS}),
    "ddn": ("ddn", {"steps": DDN_STEPS}),
}
NORMS = {"fgsm": ("linf", "l2"), "pgd": ("linf", "l2"), "apgd-ce": ("linf", "l2"), "apgd-t": ("linf", "l2"),
         "cw": ("l2",), "deepfool": ("l2", "linf"), "fmn": ("linf", "l2"),
         "ddn": ("l2",)}
SETTINGS = {
    "fgsm": "one signed/normalized gradient step of size eps, no random start",
    "pgd": f"{PGD_STEPS} steps, step 2.5*eps/{PGD_STEPS}, random start, 1 restart, CE loss",
    "apgd-ce": "100 iterations, 1 restart, CE loss, rho 0.75, initial step 2*eps (paper)",
    "apgd-t": "100 iterations per target, 9 target classes, 1 restart, targeted DLR",
    "cw": "C&W L2: {binary_search_steps} binary-search steps x {max_iterations} Adam iterations, lr {learning_rate}, "
          "initial c {initial_const}, kappa 0, abort early".format(**CW),
    "deepfool": "50 iterations max, overshoot 0.02, 10 candidate classes",
    "fmn": f"{FMN_STEPS} steps, library defaults otherwise",
    "ddn": f"{DDN_STEPS} steps, initial norm 1, gamma 0.05, step 1 -> 0.01 cosine (paper); no quantization "
           "(adv-lib levels=None)",
}


def art_classifier(model: nn.Module, shape: tuple[int, ...]) -> PyTorchClassifier:
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def peers(attack: str, norm: str, eps: float, counter: common.RowCounter, x: Tensor, y: Tensor, seed: int = 0):
    """{library: fn() -> adversarial tensor} for the peers that have this attack at this norm. Peers draw their
    random starts from torch's global generator (seed it before each call) except torchattacks' APGD, which takes
    ``seed``."""
    n, shape = x.shape[0], tuple(x.shape[1:])
    npx, npy = x.numpy(), y.numpy()
    ordv = math.inf if norm == "linf" else 2
    tan = "Linf" if norm == "linf" else "L2"
    fmodel = fb.PyTorchModel(counter, bounds=(0, 1), device="cpu")
    out: dict[str, Any] = {}

    def art(make):
        def run():
            return torch.from_numpy(make(art_classifier(counter, shape)).generate(npx, npy))
        return run

    def fbx(att, epsilons):
        def run():
            _, clipped, _ = att(fmodel, x, y, epsilons=epsilons)
            return clipped
        return run

    alpha = 2.5 * eps / PGD_STEPS
    if attack == "fgsm":
        if norm == "linf":
            out["torchattacks"] = lambda: ta.FGSM(counter, eps=eps)(x, y)
            out["foolbox"] = fbx(fb.attacks.LinfFastGradientAttack(random_start=False), eps)
        else:
            out["foolbox"] = fbx(fb.attacks.L2FastGradientAttack(random_start=False), eps)
        out["art"] = art(lambda c: FastGradientMethod(c, norm=ordv, eps=eps, batch_size=n))
    elif attack == "pgd":
        if norm == "linf":
            out["torchattacks"] = lambda: ta.PGD(counter, eps=eps, alpha=alpha, steps=PGD_STEPS,
                                                 random_start=True)(x, y)
            out["foolbox"] = fbx(fb.attacks.LinfPGD(abs_stepsize=alpha, steps=PGD_STEPS, random_start=True), eps)
            out["adv-lib"] = lambda: al.pgd_linf(counter, x, y, ε=eps, steps=PGD_STEPS, random_init=True, restarts=1,
                                                 absolute_step_size=alpha)
        else:
            out["torchattacks"] = lambda: ta.PGDL2(counter, eps=eps, alpha=alpha, steps=PGD_STEPS,
                                                   random_start=True)(x, y)
            out["foolbox"] = fbx(fb.attacks.L2PGD(abs_stepsize=alpha, steps=PGD_STEPS, random_start=True), eps)
        out["art"] = art(lambda c: ProjectedGradientDescent(c, norm=ordv, eps=eps, eps_step=alpha, max_iter=PGD_STEPS,
                                                            num_random_init=1, batch_size=n, verbose=False))
    elif attack == "apgd-ce":
        out["torchattacks"] = lambda: ta.APGD(counter, norm=tan, eps=eps, steps=100, n_restarts=1, loss="ce",
                                              seed=seed)(x, y)
        out["art"] = art(lambda c: AutoProjectedGradientDescent(c, norm=ordv, eps=eps, eps_step=2 * eps, max_iter=100,
                                                                nb_random_init=1, batch_size=n,
                                                                loss_type="cross_entropy", verbose=False))
        out["adv-lib"] = lambda: al.apgd(counter, x, y, eps=eps, norm=ordv, n_iter=100, n_restarts=1,
                                         loss_function="ce")
    elif attack == "apgd-t":
        out["torchattacks"] = lambda: ta.APGDT(counter, norm=tan, eps=eps, steps=100, n_restarts=1, n_classes=10,
                                               seed=seed)(x, y)
        out["adv-lib"] = lambda: al.apgd_targeted(counter, x, y, eps=eps, norm=ordv, n_iter=100, n_restarts=1,
                                                  num_targets=9)
    elif attack == "cw":
        out["foolbox"] = fbx(fb.attacks.L2CarliniWagnerAttack(binary_search_steps=CW["binary_search_steps"],
                                                              steps=CW["max_iterations"], stepsize=CW["learning_rate"],
                                                              confidence=0, initial_const=CW["initial_const"],
                                                              abort_early=True), None)
        out["adv-lib"] = lambda: al.carlini_wagner_l2(counter, x, y, confidence=0, learning_rate=CW["learning_rate"],
                                                      initial_const=CW["initial_const"],
                                                      binary_search_steps=CW["binary_search_steps"],
                                                      max_iterations=CW["max_iterations"], abort_early=True)
        out["art"] = art(lambda c: CarliniL2Method(c, confidence=0.0, learning_rate=CW["learning_rate"],
                                                   binary_search_steps=CW["binary_search_steps"],
                                                   max_iter=CW["max_iterations"], initial_const=CW["initial_const"],
                                                   batch_size=n, verbose=False))
    elif attack == "deepfool":
        if norm == "l2":
            out["torchattacks"] = lambda: ta.DeepFool(counter, steps=DF["max_iter"], overshoot=DF["overshoot"])(x, y)
            out["art"] = art(lambda c: DeepFool(c, max_iter=DF["max_iter"], epsilon=DF["overshoot"], nb_grads=10,
                                                batch_size=n, verbose=False))
            out["foolbox"] = fbx(fb.attacks.L2DeepFoolAttack(steps=DF["max_iter"], candidates=10,
                                                             overshoot=DF["overshoot"]), None)
        else:
            out["foolbox"] = fbx(fb.attacks.LinfDeepFoolAttack(steps=DF["max_iter"], candidates=10,
                                                               overshoot=DF["overshoot"]), None)
        out["adv-lib"] = lambda: al.df(counter, x, y, steps=DF["max_iter"], overshoot=DF["overshoot"], norm=ordv)
    elif attack == "fmn":
        att = fb.attacks.LInfFMNAttack if norm == "linf" else fb.attacks.L2FMNAttack
        out["foolbox"] = fbx(att(steps=FMN_STEPS), None)
        out["adv-lib"] = lambda: al.fmn(counter, x, y, norm=ordv, steps=FMN_STEPS)
    elif attack == "ddn":
        out["adv-lib"] = lambda: al.ddn(counter, x, y, steps=DDN_STEPS, γ=0.05, init_norm=1.0, levels=None)
        out["foolbox"] = fbx(fb.attacks.DDNAttack(init_epsilon=1.0, steps=DDN_STEPS, gamma=0.05), None)
    return out


def bench_one(model: nn.Module, model_name: str, attack: str, norm: str, eps: float, x: Tensor, y: Tensor,
              n_total: int, reps: int, skip: set[str]) -> dict[str, Any]:
    threat = LpThreat(norm, eps)
    counter = common.RowCounter(model).eval()
    n = x.shape[0]
    minimal = attack in MINIMAL
    name, hyper = BASTION[attack]
    extra: dict[str, Any] = {}
    # One untimed bastion run records its forward calls (BatchLog's hook is kept out of the timed reps, where
    # bastion, like each peer under RowCounter, has exactly one Python hook per backward: its own pass counter)
    # and its outputs: the unit times are measured on those perturbed points, since a pass's time depends on the
    # data (clean MNIST images pass up to 11% faster on the max-pooling CNNs; bench/attack_overhead.py, replay).
    logs: list[common.BatchLog] = []

    def log(m: nn.Module) -> nn.Module:
        logs.append(common.BatchLog(m))
        return logs[-1]

    logged = run_attack(model, x, y, threat, name, generator=torch.Generator().manual_seed(0),
                        adapt=Adaptation(wrap=log), **hyper)
    calls, x_unit = (logs[0].calls if logs else []), logged.adversarial
    t_fb, t_f = common.unit_times(model, x_unit)

    def summarize(robust: Tensor | None, norms: Tensor | None) -> dict[str, Any]:
        if not minimal:
            return {"robust_accuracy": round(int(robust.sum()) / n_total, 4)}
        ok = torch.isfinite(norms)
        return {"success_rate": round(float(ok.float().mean()), 4),
                "median_norm": round(common.median_finite(norms), 4),
                "robust_accuracy_at_eps": round(int((norms > eps).sum()) / n_total, 4)}

    def run_bastion() -> dict[str, Any]:
        res = run_attack(model, x, y, threat, name, generator=torch.Generator().manual_seed(0), **hyper)
        fwd, bwd = res.counts.total_forward / n, res.counts.total_backward / n
        extra.setdefault("attack_seconds", []).append(res.seconds)
        extra.update(fwd=fwd, bwd=bwd, outside=res.outside_threat)
        return {**summarize(res.robust, res.norm), "fwd_per_point": round(fwd, 2), "bwd_per_point": round(bwd, 2),
                "attack_seconds": round(res.seconds, 3)}

    attack_times: dict[str, list[float]] = {}

    def wrap(fn, lib: str):
        def run() -> dict[str, Any]:
            counter.reset()
            torch.manual_seed(0)
            t0 = time.perf_counter()
            adv = fn()
            attack_times.setdefault(lib, []).append(time.perf_counter() - t0)
            adv = torch.as_tensor(adv).detach().float().reshape(x.shape)
            fwd, bwd = counter.fwd / n, counter.bwd / n
            if minimal:
                # Foolbox's C&W returns an all-zero image where it found nothing; that black image is misclassified
                # by most models, so it would count as a success at norm ||x||. It is the library's placeholder for
                # a failure, not an adversarial example its optimisation found: count it as a failure, and say so.
                norms = common.recheck_minimal(model, adv, x, y, norm)
                placeholder = common.zero_placeholders(adv, x)
                return {**summarize(None, torch.where(placeholder, torch.inf, norms)),
                        "fwd_per_point": round(fwd, 2), "bwd_per_point": round(bwd, 2),
                        "zero_image_placeholders": int(placeholder.sum()),
                        "success_rate_with_placeholders": round(float(torch.isfinite(norms).float().mean()), 4)}
            return {**summarize(common.recheck_budget(model, adv, x, y, threat), None), "fwd_per_point": round(fwd, 2),
                    "bwd_per_point": round(bwd, 2)}
        return run

    runners = {"bastion": run_bastion}
    for lib, fn in peers(attack, norm, eps, counter, x, y).items():
        if lib not in skip and f"{lib}:{attack}" not in skip:
            runners[lib] = wrap(fn, lib)
    print(f"  {model_name} {attack} {norm} eps={eps} (attacked {n}/{n_total}; "
          f"fb {t_fb * 1e3:.1f} ms, f {t_f * 1e3:.1f} ms)", flush=True)
    res = common.interleave(runners, reps)
    t_fb2, t_f2 = common.unit_times(model, x_unit)
    t_fb, t_f = statistics.median([t_fb, t_fb2]), statistics.median([t_f, t_f2])
    b = res["bastion"]
    # The ratio uses the median attack time over the reps (runner's own timer, without the re-check).
    if "error" in b:
        raise RuntimeError(f"bastion failed: {b['error']}")
    b["attack_seconds_median"] = round(statistics.median(extra["attack_seconds"]), 3)
    b["speed_ratio"] = round(common.speed_ratio(statistics.median(extra["attack_seconds"]), extra["fwd"], extra["bwd"],
                                                t_fb, t_f), 3)
    b["outside_threat"] = extra["outside"]
    # the same passes timed at the batch sizes the attack actually used (early stopping shrinks them)
    limit = common.batch_aware_limit(model, x_unit, calls)
    b["batch_aware_limit_seconds"] = round(limit, 3)
    b["speed_ratio_batch_aware"] = round(statistics.median(extra["attack_seconds"]) / limit, 3)
    # Like for like: the attack call alone on both sides (bastion: the runner's timer, without its clean pass,
    # input checks and re-check; peers: their attack call, without the bench's re-check). The end-to-end
    # times (seconds_median) are kept too.
    for lib, ts in attack_times.items():
        res[lib]["attack_seconds_median"] = round(statistics.median(ts), 4)
    peer_times = {k: v["attack_seconds_median"] for k, v in res.items()
                  if k != "bastion" and "error" not in v and "attack_seconds_median" in v}
    fastest = min(peer_times, key=peer_times.get) if peer_times else None
    # Paired: bastion's time in each rep over the peer's in the same rep (adjacent runs, so the machine's drift
    # over minutes cancels), the median over reps with a 95% bootstrap interval.
    paired = {}
    for lib in peer_times:
        ratios = [bt / pt for bt, pt in zip(extra["attack_seconds"], attack_times[lib], strict=True)]
        lo, hi = common.median_ci(ratios)
        paired[lib] = {"median": round(statistics.median(ratios), 3), "ci_low": round(lo, 3), "ci_high": round(hi, 3),
                       "reps": len(ratios)}
    end_to_end = {k: v["seconds_median"] for k, v in res.items() if k != "bastion" and "error" not in v}
    fastest_e2e = min(end_to_end, key=end_to_end.get) if end_to_end else None
    return {"model": model_name, "attack": attack, "norm": norm, "eps": eps, "settings": SETTINGS[attack],
            "points": n_total, "attacked": n, "unit_fb_seconds": t_fb, "unit_f_seconds": t_f, "results": res,
            "fastest_peer": fastest,
            "time_vs_fastest_peer": round(b["attack_seconds_median"] / peer_times[fastest], 3) if fastest else None,
            "paired_vs_peer": paired,
            "end_to_end_vs_fastest_peer": (round(b["seconds_median"] / end_to_end[fastest_e2e], 3)
                                           if fastest_e2e else None)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-std,digits-pgdat")
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--attacks", default="fgsm,pgd,apgd-ce,apgd-t,cw,deepfool,fmn")
    ap.add_argument("--norms", default="linf,l2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reps-heavy", type=int, default=1)
    ap.add_argument("--reps-quick", type=int, default=15)
    ap.add_argument("--skip", default="", help="libraries or lib:attack pairs to leave out, comma separated")
    ap.add_argument("--out", default=str(common.RESULTS / "whitebox.json"))
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    models = common.get_models(args.models.split(","))
    rows = []
    started = time.time()
    for model_name, model in models.items():
        ds = common.dataset_of(model_name)
        x, y = common.points(ds, args.points)
        correct = common.predict(model, x) == y
        xs, ys = x[correct], y[correct]
        print(f"{model_name}: clean accuracy {float(correct.float().mean()):.4f} on {len(y)} points", flush=True)
        for attack in args.attacks.split(","):
            for norm in NORMS[attack]:
                if norm not in args.norms.split(","):
                    continue
                reps = args.reps_heavy if attack in HEAVY else args.reps_quick if attack in QUICK else args.reps
                rows.append(bench_one(model, model_name, attack, norm, common.EPS[ds][norm], xs, ys, len(y), reps,
                                      skip))
                common.write_json(
                    __import__("pathlib").Path(args.out),
                    {"bench": "whitebox (issue 3)", "command": " ".join(__import__("sys").argv),
                     "versions": common.versions(), "machine": common.machine(),
                     "clean_accuracy": None, "rows": rows, "elapsed_seconds": round(time.time() - started, 1)})
    print(f"done in {time.time() - started:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
