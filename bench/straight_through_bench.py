"""Operation-level BPDA (issue 29, case 1): a step operation inside ``forward`` that no module-level check can name.

The digits CNN (trained here, as the tests train it) behind ``round(4 x) / 4`` written inside its forward, the first
``--points`` test points, L-inf eps ``--eps``, the ``fast`` suite: the naive evaluation, the adaptive one without
operation-level BPDA (the probe as it was: ``step_operations`` returns nothing), the adaptive one as it is, and APGD-100
through a hand-written straight-through model (the best attack known for this defense).

    .venv/bin/python bench/straight_through_bench.py --out bench/results/straight_through.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

import bastion
import bastion.evaluation.adaptive as adaptive
from bastion.data import load_dataset
from bastion.evaluation.runner import Adaptation, run_attack
from bastion.zoo import load_model
from bastion.zoo.train import TrainConfig, train_and_save


class RoundsInForward(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class HandWrittenBPDA(RoundsInForward):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + (torch.round(x * 4) / 4 - x).detach())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.15)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / "digits-cnn"
        train_and_save("cnn", "digits", stem, TrainConfig(epochs=12, patience=3, lr=3e-3, seed=0))
        net, _ = load_model(str(stem))
    model = RoundsInForward(net).eval()
    test = load_dataset("digits").test
    x, y = test.x[:args.points], test.y[:args.points]
    threat = bastion.LpThreat("linf", args.eps)
    rows = {"naive": bastion.evaluate(model, x, y, threat, suite="fast", adaptive=False, progress=False)}
    real = adaptive.step_operations
    adaptive.step_operations = lambda model, x: []
    try:
        rows["adaptive without operation-level BPDA"] = bastion.evaluate(model, x, y, threat, suite="fast",
                                                                          progress=False)
    finally:
        adaptive.step_operations = real
    rows["adaptive"] = bastion.evaluate(model, x, y, threat, suite="fast", progress=False)
    hand = run_attack(model, x, y, threat, "apgd", adapt=Adaptation(surrogate=HandWrittenBPDA(net)), n_iter=100,
                      generator=torch.Generator().manual_seed(0))
    result = {
        "command": "python bench/straight_through_bench.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "machine": platform.platform(), "torch": torch.__version__,
        "clean_accuracy": rows["adaptive"].clean_accuracy,
        "robust_accuracy": {name: r.robust_accuracy for name, r in rows.items()}
        | {"APGD-100 through hand-written BPDA": hand.robust_accuracy},
        "flags": {name: [f["name"] for f in r.flags] for name, r in rows.items()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["robust_accuracy"], indent=2))


if __name__ == "__main__":
    main()
