"""Feature squeezing's 1-bit + median detector (Xu et al. 2018, MNIST setting) under L2 attacks of growing size.

    .venv-bench/bin/python bench/feature_squeezing_bench.py [--n 100] [--eps 1,2,3,4] [--out ...]

At L-inf 0.3 the 1-bit squeezer is hard to cross on nearly binary MNIST (docs/BENCHMARKS.md), so the known break of
this detector (He, Wei, Chen, Carlini & Song 2017) is looked for with larger L2 perturbations: bastion's ``fast``
suite (APGD-CE, APGD-T) at each L2 radius on (a) the bare model, (b) the detector as it is (naive: rejected examples
count as failures), (c) the detector with the probe's BPDA plan and (d) the detector through its detector-aware
surrogate (``JointSurrogate``: raw and squeezed predictions driven to the same wrong class, squeezers with an
identity backward pass). Every example is re-checked on the real detector. Single-threaded, same points throughout.
(A minimum-norm attack does not fit here: FMN stops just past the surrogate's boundary, where the detector's
squeezing gap is still large, so every example it returns is rejected.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import common
from bastion.data import load_dataset
from bastion.defenses.inference import build_defense
from bastion.defenses.inference.detectors import detector_aware_surrogate
from bastion.evaluation.adaptive import build_adaptation
from bastion.evaluation.runner import Adaptation
from bastion.evaluation.suite import run_suite
from bastion.threat import LpThreat
from bastion.zoo import load_model

common.setup()

EPS = (1.0, 2.0, 3.0, 4.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eps", default=",".join(f"{e:g}" for e in EPS), help="L2 radii")
    p.add_argument("--out", default="bench/results/feature_squeezing_l2.json")
    args = p.parse_args()
    model, _ = load_model("mnist-cnn")
    data = load_dataset("mnist")
    x, y = data.test.x[:args.n], data.test.y[:args.n]
    det = build_defense("feature-squeezing-detector", model, data=data.val, bits=1, median=2)
    settings = (("bare model", model, None), ("detector, naive", det, None),
                ("detector, BPDA (probe plan)", det, build_adaptation(det, {"bpda_modules": _bpda(det, x, y)})),
                ("detector, detector-aware", det, Adaptation(surrogate=detector_aware_surrogate(det))))
    rows = []
    for eps in (float(e) for e in args.eps.split(",")):
        threat = LpThreat("l2", eps)
        for label, target, adapt in settings:
            start = time.perf_counter()
            out = run_suite(target, x, y, threat, version="fast", adapt=adapt,
                            generator=torch.Generator().manual_seed(0))
            rows.append({"eps": eps, "setting": label, "points": args.n,
                         "clean_accuracy": float(out.clean_correct.float().mean()),
                         "robust_accuracy": float(out.robust.float().mean()),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {"args": vars(args), "machine": common.machine(), "versions": common.versions(), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


def _bpda(det: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    from bastion.evaluation.adaptive import probe

    return probe(det, x[:64], y[:64], LpThreat("l2", 2.0))[0]["bpda_modules"]


if __name__ == "__main__":
    main()
