"""Network intrusion detection: the field's attack tools (IBM ART, torchattacks) against bastion's constrained
attacks, on the same detector and the same attack flows, every returned flow checked against bastion's constraints.

    PYTHONPATH=$PWD/src /work/main/.venv-bench/bin/python bench/ids_peers.py --out bench/results/ids_peers.json
    PYTHONPATH=$PWD/src /work/main/.venv-bench/bin/python bench/ids_peers.py --table   # Markdown for BENCHMARKS

What is measured: how often each tool's adversarial flow gets past the detector (success), how often it could exist
on the wire (valid: every constraint of ``world.threat`` holds, ``TabularThreat.violations``), and both at once
(valid success, the only evasion that counts), with the seconds and the constraints that break most often.

Shared by both sides: the world and the detector of bastion's IDS evaluation (``bastion.ids.job``):
``parse_ids({"data": "snapshot", "detectors": [{"name": "mlp"}], "attacks": [{"name": "pgd"}], "eps": 0.01,
"per_class": 30, "training": {"epochs": 20}})`` (seed 0, binary labels), ``world_of`` (the 70/30 stratified split
and the threat: the CIC relations, the training split's box, L-inf eps 0.01 in the scaled space),
``train_entry`` (the ``mlp`` detector), ``attack_rows`` (up to 30 test flows per attack class), and of those the
flows the detector catches (``bastion.ids.evasion.detected``). Every row attacks exactly those flows.

The peers run as the field runs them: on the min-max scaled feature vector, every feature free, through the
detector wrapped as bastion's ``Scaled`` does (``z`` in [0, 1] is ``lower + z * span`` in raw units, ``lower`` and
``span`` the threat's box, a zero span read as 1); ART sees it through ``PyTorchClassifier`` (cross-entropy,
clip_values (0, 1)), torchattacks as the module itself. Rows:

- ART ``ProjectedGradientDescent`` (L-inf, eps 0.01, 40 steps of 2.5 eps / 40, one random start, targeted to
  benign): bastion's ``pgd`` defaults (Madry et al. 2018); for a binary detector targeted-to-benign and untargeted
  are the same sign step.
- torchattacks ``PGD`` (eps 0.01, alpha 2.5 eps / 40, 40 steps, random start, targeted to benign by label).
- ART ``DeepFool`` (its defaults: 100 iterations, overshoot 1e-6, untargeted: its only mode) and ART ``ZooAttack``
  (targeted to benign; ART disables resizing and importance sampling for feature vectors and then only takes
  ``batch_size=1``; ART's defaults: ``--zoo-iter`` 10 iterations x ``--zoo-search`` 1 binary-search step,
  initial constant ``--zoo-const`` 1e-3, learning rate 1e-2, ``variable_h`` 1e-4, abort early; ``nb_parallel`` =
  every feature (52; ART's default 128 is more than there are)). Both are
  minimum-distortion attacks with no budget: each is reported as returned and clipped into the same ball and
  [0, 1] box (``"... in ball"`` rows, no second run), the way a budget evaluation reads them.

bastion's side: ``bastion.ids.evasion.evade`` on the same detector and flows, seed 0: ``pgd`` (unconstrained, the
route above), ``cpgd``, ``capgd`` (paper defaults) and ``caa`` reduced as in ``bench/ids_bench.py``
(``generations`` 30, ``population`` 64, ``offspring`` 32; paper: 100, 203, 100).

Every flow, either side, is judged the same way: the detector (float64 raw rows) decides success; validity is
``world.threat.violations(x_adv_raw, x_raw)``; ``linf_free_max`` / ``linf_max`` are the largest change in the
scaled space over the free features (the budget's measure) and over every feature (derived ones included).
Timing: each attack call alone, single-threaded (``torch.set_num_threads(1)``), the rows in a fixed interleaved
order (bastion, peer, bastion, peer, ...); the machine is a 2-core CPU shared with other jobs, its load is recorded
at the start and the end, and timings are noisy.

Differences between the sides that stay:

(a) precision: bastion's unconstrained route passes float64 scaled rows; ART and torchattacks compute in float32
    (ART casts its numpy arrays to float32; torchattacks keeps the float32 input given to it, so both peers get the
    same float32 scaled rows). A float32 ``z`` is only good to ~6e-8 of a feature's range (up to a byte or more on
    byte totals), so a peer's flow is read back as ``x_raw + (z_adv - z) * span``: a feature the tool did not move
    is exactly the original, and the integer check is not failed by rounding alone.
(b) early stopping: bastion's ``pgd`` stops a flow once it is benign and keeps it; ART's PGD runs every step and
    keeps the last iterate of its one start (it keeps the best of several starts only); torchattacks' PGD returns
    the last iterate. The constrained attacks keep, per flow, the best valid candidate.
(c) random draws: bastion's from its seeded ``torch.Generator``; ART's random start from numpy's global RNG and
    ZOO's coordinate choice likewise, torchattacks' from torch's global RNG (both seeded with ``--seed`` here).
(d) the peers' targets: ART needs one-hot targets (benign), torchattacks targeted mode by label; DeepFool has no
    targeted mode (for two classes, crossing the boundary is reaching benign).
(e) ZOO and DeepFool have no budget; bastion's attacks and the PGDs are budget attacks (the ``in ball`` rows and
    the L-inf columns show what that does).
(f) the peers know no constraint (that is the point); bastion's constrained attacks repair every iterate into the
    threat and move only free features (immutable ones kept, derived ones recomputed, integers rounded).
(g) timing: bastion's seconds are ``Evasion.seconds`` (the attack call only); a peer's are its whole
    ``generate`` call plus building its ``PyTorchClassifier`` or attack object (milliseconds). Judging is outside
    both.
(h) a feature constant on the training split (span 0, read as 1 by ``Scaled`` on both sides) moves by up to eps
    *raw* units under an unconstrained attack: the peers' and bastion's ``pgd``'s ``box`` breaks come from those
    (the flag counts), the same convention on both sides.
(i) the bench venv lacks pandas (bastion's flow loader needs it): the script appends the main venv's
    site-packages after the bench venv's own (same Python 3.11 and numpy), so every other package is the bench
    venv's.

Besides the rates, each row records the largest scaled change over the free features and over all features, and
how many flows carry a derived feature (a rate, a mean: recomputed, so exempt from the box check) outside the
training split's range: a constraint-valid flow can still be one no network produces (e.g. a duration moved to ~0
inside the budget, so that a packets-per-second rate explodes), and the table shows how often.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars
os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy's BLAS (ART) on one thread too
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
try:  # the bench venv has no pandas (bastion's flow loader needs it): take it from the main venv, after our own
    import pandas  # noqa: F401
except ModuleNotFoundError:
    sys.path.append(str(Path(__file__).resolve().parent.parent / ".venv" / "lib"
                        / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"))

import numpy as np
import torch
from torch import Tensor, nn

from bastion.ids.config import parse_ids
from bastion.ids.evasion import Scaled, detected, evade
from bastion.ids.job import attack_rows, train_entry, world_of

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = {"data": "snapshot", "detectors": [{"name": "mlp"}], "attacks": [{"name": "pgd"}], "eps": 0.01,
          "per_class": 30, "training": {"epochs": 20}}
GENETIC = {"generations": 30, "population": 64, "offspring": 32}
PGD_STEPS = 40


class World:
    """The detector, the attacked flows (raw and scaled) and the threat shared by every row."""

    def __init__(self, seed: int) -> None:
        self.config = parse_ids({**CONFIG, "seed": seed})
        self.world = world_of(self.config)
        self.threat = self.world.threat
        started = time.perf_counter()
        self.model = train_entry(self.config, self.config.detectors[0], self.world).eval()
        self.train_seconds = time.perf_counter() - started
        index = attack_rows(self.config, self.world)
        rows, classes = self.world.rows(index), self.world.table.labels[index]
        caught = detected(self.model, rows, 0)
        self.sampled = len(index)
        self.rows_all, self.classes_all = rows, classes  # evade filters the caught ones itself
        self.x, self.classes = rows[caught], np.asarray(classes)[caught.numpy()]
        self.lower = self.threat.lower.to(self.x)
        span = (self.threat.upper - self.threat.lower).to(self.x)
        self.span = torch.where(span > 0, span, torch.ones_like(span))
        self.z64 = (self.x - self.lower) / self.span
        self.z32 = self.z64.float().numpy()
        self.scaled = Scaled(self.model, self.lower, self.span).eval()
        self.eps = float(self.config.eps)

    def raw_from_peer(self, z_adv: np.ndarray) -> Tensor:
        """A peer's scaled output read back in raw units (difference (a))."""
        delta = torch.as_tensor(z_adv, dtype=torch.float64) - torch.as_tensor(self.z32, dtype=torch.float64)
        return self.x + delta * self.span

    def judge(self, x_adv: Tensor) -> dict[str, Any]:
        evaded = ~detected(self.model, x_adv, 0)
        broken = self.threat.violations(x_adv, self.x)
        valid = ~torch.stack(list(broken.values())).any(0)
        change = (x_adv - self.x).abs() / self.span
        linf, linf_free = change.amax(1), change[:, self.threat.free].amax(1)
        outside = self.outside_box(x_adv)
        top = sorted(((k, int(b.sum())) for k, b in broken.items() if b.any()), key=lambda t: -t[1])
        return {"attacked": len(self.x), "success_rate": float(evaded.float().mean()),
                "valid_rate": float(valid.float().mean()), "valid_success_rate": float((evaded & valid).float().mean()),
                "success_on_invalid_flows": int((evaded & ~valid).sum()), "linf_free_max": float(linf_free.max()),
                "linf_max": float(linf.max()), "linf_median": float(linf.median()), **outside,
                "violated_top": top[:6], "constraints_broken": len(top),
                "per_class": {c: {"n": int((self.classes == c).sum()),
                                  "valid_success": int((evaded & valid)[torch.as_tensor(self.classes == c)].sum())}
                              for c in sorted(set(self.classes))}}


    def outside_box(self, x_adv: Tensor) -> dict[str, Any]:
        """Derived features (recomputed from the others, so exempt from the box check) outside the training
        split's range: how many flows, and the feature furthest out (in units of its range)."""
        derived = self.threat.derived
        lower, upper = self.threat.lower.to(x_adv), self.threat.upper.to(x_adv)
        out = ((lower - x_adv).clamp_min(0) + (x_adv - upper).clamp_min(0)) / self.span
        out = out[:, derived]
        names = [c for c, d in zip(self.threat.columns, derived.tolist(), strict=True) if d]
        worst = int(out.amax(0).argmax()) if out.numel() else 0
        return {"derived_outside_box_flows": int((out > 1e-6).any(1).sum()),
                "derived_outside_box_worst": {"feature": names[worst] if names else None,
                                              "ranges_out": float(out[:, worst].max()) if names else 0.0,
                                              "flows": int((out[:, worst] > 1e-6).sum()) if names else 0}}


def art_classifier(w: World) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(w.scaled, loss=nn.CrossEntropyLoss(), input_shape=(w.x.shape[1],), nb_classes=2,
                             clip_values=(0.0, 1.0))


def benign_onehot(n: int) -> np.ndarray:
    out = np.zeros((n, 2), dtype=np.float32)
    out[:, 0] = 1.0
    return out


def clip_ball(w: World, z_adv: np.ndarray) -> np.ndarray:
    return np.clip(np.clip(z_adv, w.z32 - w.eps, w.z32 + w.eps), 0.0, 1.0)


def run_art_pgd(w: World, args: argparse.Namespace) -> np.ndarray:
    from art.attacks.evasion import ProjectedGradientDescent

    attack = ProjectedGradientDescent(art_classifier(w), norm=np.inf, eps=w.eps, eps_step=2.5 * w.eps / PGD_STEPS,
                                      max_iter=PGD_STEPS, targeted=True, num_random_init=1, batch_size=256,
                                      verbose=False)
    return attack.generate(w.z32, y=benign_onehot(len(w.z32)))


def run_torchattacks_pgd(w: World, args: argparse.Namespace) -> np.ndarray:
    import torchattacks

    attack = torchattacks.PGD(w.scaled, eps=w.eps, alpha=2.5 * w.eps / PGD_STEPS, steps=PGD_STEPS, random_start=True)
    attack.set_mode_targeted_by_label(quiet=True)
    out = attack(torch.from_numpy(w.z32), torch.zeros(len(w.z32), dtype=torch.long))
    return out.detach().numpy()


def run_art_deepfool(w: World, args: argparse.Namespace) -> np.ndarray:
    from art.attacks.evasion import DeepFool

    return DeepFool(art_classifier(w), batch_size=256, verbose=False).generate(w.z32)


def run_art_zoo(w: World, args: argparse.Namespace) -> np.ndarray:
    from art.attacks.evasion import ZooAttack

    attack = ZooAttack(art_classifier(w), targeted=True, max_iter=args.zoo_iter, binary_search_steps=args.zoo_search,
                       initial_const=args.zoo_const, nb_parallel=w.x.shape[1], batch_size=1, use_resize=False,
                       use_importance=False, verbose=False)
    return attack.generate(w.z32, y=benign_onehot(len(w.z32)))


PEERS = {
    "ART ProjectedGradientDescent": (run_art_pgd, False),
    "torchattacks PGD": (run_torchattacks_pgd, False),
    "ART DeepFool": (run_art_deepfool, True),
    "ART ZooAttack": (run_art_zoo, True),
}
BASTION = {"pgd": {}, "cpgd": {}, "capgd": {}, "caa": GENETIC}
ORDER = [("bastion", "pgd"), ("peer", "ART ProjectedGradientDescent"), ("bastion", "cpgd"),
         ("peer", "torchattacks PGD"), ("bastion", "capgd"), ("peer", "ART DeepFool"), ("bastion", "caa"),
         ("peer", "ART ZooAttack")]


def pinned_gradient(w: World) -> dict[str, float]:
    """How much of the gradient towards benign (the logit gap's, on the scaled clean flows) falls on coordinates
    already at the [0, 1] box's edge in the direction it points, where a clipped step cannot follow (why DeepFool,
    a minimal L2 step along that gradient, stalls here)."""
    z = torch.from_numpy(w.z32).requires_grad_(True)
    out = w.scaled(z)
    (g,) = torch.autograd.grad((out[:, 0] - out[:, 1]).sum(), z)
    blocked = ((z <= 0) & (g < 0)) | ((z >= 1) & (g > 0))
    share = (g.square() * blocked).sum(1) / g.square().sum(1).clamp_min(1e-30)
    return {"median": float(share.median()), "p10": float(share.quantile(0.1)),
            "features_at_box_edge_median": float(((z <= 0) | (z >= 1)).sum(1).float().median())}


def peer_rows(w: World, name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    fn, unbounded = PEERS[name]
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    z_adv = fn(w, args)
    seconds = time.perf_counter() - started
    rows = [{"side": "peer", "row": name, "seconds": seconds, **w.judge(w.raw_from_peer(z_adv))}]
    if unbounded:
        rows.append({"side": "peer", "row": f"{name} in ball", "seconds": seconds,
                     **w.judge(w.raw_from_peer(clip_ball(w, z_adv)))})
    return rows


def bastion_row(w: World, name: str, args: argparse.Namespace) -> dict[str, Any]:
    result = evade(w.model, w.rows_all, w.classes_all, w.threat, name, dict(BASTION[name]), seed=args.seed)
    assert torch.equal(result.clean, w.x), "evade attacked other flows than the peers"
    label = f"bastion {name}" + (" (unconstrained)" if name == "pgd" else "")
    return {"side": "bastion", "row": label, "route": result.route, "seconds": result.seconds,
            "forward_passes": result.forward, "backward_passes": result.backward,
            **w.judge(result.adversarial), "evasion_rates": result.rates()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("bastion", "torch", "adversarial-robustness-toolbox", "torchattacks", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    load_start, started = os.getloadavg(), time.perf_counter()
    w = World(args.seed)
    print(f"detector trained in {w.train_seconds:.1f}s; {len(w.x)} of {w.sampled} flows caught", flush=True)
    rows = []
    for side, name in ORDER:
        if args.only and name not in args.only:
            continue
        new = peer_rows(w, name, args) if side == "peer" else [bastion_row(w, name, args)]
        for r in new:
            print(f"  {r['row']}: success {r['success_rate']:.3f} valid {r['valid_rate']:.3f} "
                  f"valid success {r['valid_success_rate']:.3f} ({r['seconds']:.1f}s)", flush=True)
        rows += new
    return {"command": " ".join(["python", *sys.argv]), "config": w.config.model_dump(mode="json"),
            "genetic": GENETIC, "zoo": {"max_iter": args.zoo_iter, "binary_search_steps": args.zoo_search,
                                        "initial_const": args.zoo_const, "nb_parallel": int(w.x.shape[1])},
            "sampled": w.sampled, "attacked": len(w.x), "features": int(w.x.shape[1]),
            "relations": len(w.threat.relations), "train_seconds": w.train_seconds, "rows": rows,
            "gradient_share_at_box_edge": pinned_gradient(w),
            "seconds": time.perf_counter() - started, "load_start": load_start, "load_end": os.getloadavg(),
            "versions": versions(), "machine": {"cpu": platform.processor() or platform.machine(),
                                                "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                                                "platform": platform.platform(),
                                                "note": "2-core CPU shared with other jobs; timings noisy"}}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['attacked']} detected attack flows (of {result['sampled']} sampled), L-inf eps "
             f"{result['config']['eps']} in the scaled space; load {result['load_start'][0]:.1f} -> "
             f"{result['load_end'][0]:.1f}", "",
             "| tool | success | valid | valid success | evaded with an impossible flow | max L-inf (free / all) | "
             "derived feature outside the data's range (flows) | seconds | constraints broken most (flows) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        top = "; ".join(f"`{k}` ({n})" for k, n in r["violated_top"][:3]) or "none"
        lines.append(f"| {r['row']} | {_pct(r['success_rate'])} | {_pct(r['valid_rate'])} | "
                     f"{_pct(r['valid_success_rate'])} | {r['success_on_invalid_flows']} | "
                     f"{r['linf_free_max']:.4f} / {r['linf_max']:.3g} | {r['derived_outside_box_flows']} | "
                     f"{r['seconds']:.1f} | {top} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "ids_peers.json")
    parser.add_argument("--table", nargs="?", const=RESULTS / "ids_peers.json", type=Path,
                        help="print the Markdown table of a results file and stop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoo-iter", type=int, default=10, help="ZOO's max_iter (ART's default)")
    parser.add_argument("--zoo-search", type=int, default=1, help="ZOO's binary_search_steps (ART's default)")
    parser.add_argument("--zoo-const", type=float, default=1e-3, help="ZOO's initial_const (ART's default)")
    parser.add_argument("--only", nargs="*", help="run only these rows (a trial; do not record)")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    result = run(args)
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(table(result))


if __name__ == "__main__":
    main()
