"""Certification bench (issue 8): certified accuracy on MNIST, training and certification time on a CPU, and a
side-by-side run of bastion's randomized smoothing against ART's on the same model, points, n0, n and alpha.

Run with the bench venv (ART is imported here only):

    .venv-bench/bin/python bench/certify_bench.py [--points 100] [--out bench/results/certify.json]

Everything runs single-threaded (``torch.set_num_threads(1)``). Models are trained from scratch (checkpoints
go to ``--models``, reused when present and ``--reuse`` is given), certified with ``bastion.certification.job``
(certified accuracy next to the empirical robust accuracy of an APGD attack on the same points), and the
results are written as JSON; ``--markdown`` prints the table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.certification import smoothing
from bastion.certification.job import CertifyConfig, certify_run
from bastion.certification.train import CertTrainConfig, train_certified
from bastion.data import load_dataset
from bastion.evaluation.store import Store
from bastion.zoo import load_model

SIGMAS = (0.25, 0.5, 1.0)
L2_RADII = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
LINF_RADII = [0.1, 0.2, 0.3]


def _gauss(sigma: float) -> str:
    """Checkpoint name of the sigma model, without a dot (a dot would read as a file suffix)."""
    return f"gauss-{round(100 * sigma):03d}"


def train_all(models: Path, reuse: bool, epochs: dict[str, int]) -> dict[str, dict[str, Any]]:
    recipes = {
        **{_gauss(s): CertTrainConfig(method="gaussian", sigma=s, epochs=epochs["gaussian"]) for s in SIGMAS},
        "ibp": CertTrainConfig(method="ibp", eps=0.4, epochs=epochs["ibp"], warmup_epochs=0.5,
                               ramp_epochs=epochs["ibp"] / 2),
        "crown-ibp": CertTrainConfig(method="crown-ibp", eps=0.4, epochs=epochs["ibp"], warmup_epochs=0.5,
                                     ramp_epochs=epochs["ibp"] / 2),
        "lipschitz": CertTrainConfig(method="lipschitz", eps=0.5, epochs=epochs["lipschitz"]),
    }
    out = {}
    for name, cfg in recipes.items():
        path = models / name
        if not (reuse and path.with_suffix(".json").exists()):
            print(f"training {name} ...", flush=True)
            train_certified(cfg, dataset="mnist", out=path)
        _, meta = load_model(str(path))
        out[name] = {"path": str(path), "recipe": meta.recipe, "test_accuracy": meta.metrics["test_accuracy"],
                     "train_seconds": meta.metrics["train_seconds"]}
        print(f"  {name}: test accuracy {meta.metrics['test_accuracy']:.4f}, {meta.metrics['train_seconds']} s",
              flush=True)
    return out


def certify(store: Store, **kwargs: Any) -> dict[str, Any]:
    config = CertifyConfig(dataset="mnist", **kwargs)
    t0 = time.perf_counter()
    outcome = certify_run(config, store, fresh=True)
    s = outcome.summary
    print(f"  {kwargs['method']} {Path(kwargs['model']).name}: certified {s['certified_accuracy']} "
          f"empirical {s['empirical_robust_accuracy']} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return {"config": {k: v for k, v in kwargs.items() if k != "model"} | {"model": Path(kwargs["model"]).name},
            "summary": s}


def art_side_by_side(model_path: str, points: int, sigma: float, n0: int, n: int, alpha: float,
                     repeats: int, mc_batch: int) -> dict[str, Any]:
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    model, _ = load_model(model_path)
    test = load_dataset("mnist", seed=0).test
    x, y = test.x[:points], test.y[:points]
    art = PyTorchRandomizedSmoothing(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                     nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu",
                                     sample_size=n0, scale=sigma, alpha=alpha)
    xs = x.numpy()
    times: dict[str, list[float]] = {"bastion": [], "art": []}
    first: dict[str, Any] = {}
    for rep in range(repeats):  # alternate, so both see the same machine load
        t0 = time.perf_counter()
        cert = smoothing.certify(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=mc_batch,
                                 generator=torch.Generator().manual_seed(rep))
        times["bastion"].append(time.perf_counter() - t0)
        np.random.seed(rep)
        t0 = time.perf_counter()
        art_pred, art_radius = art.certify(xs, n=n, batch_size=mc_batch)
        times["art"].append(time.perf_counter() - t0)
        if rep == 0:
            first = {"bastion": (cert.prediction.numpy(), cert.radius.numpy()), "art": (art_pred, art_radius)}
        print(f"  rep {rep}: bastion {times['bastion'][-1]:.1f} s, ART {times['art'][-1]:.1f} s", flush=True)
    (bp, br), (ap, ar) = first["bastion"], first["art"]
    yn = y.numpy()
    both = (bp >= 0) & (ap >= 0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "points": points, "sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "mc_batch": mc_batch, "repeats": repeats,
        "abstain_bastion": int((bp < 0).sum()), "abstain_art": int((ap < 0).sum()),
        "abstain_disagreements": int(((bp < 0) != (ap < 0)).sum()),
        "prediction_disagreements_when_both_certify": int((bp[both] != ap[both]).sum()),
        "certified_correct_bastion": int((bp == yn).sum()), "certified_correct_art": int((ap == yn).sum()),
        "mean_abs_radius_difference_when_both_certify": (
            float(np.abs(br[both] - ar[both]).mean()) if both.any() else None),
        "mean_radius_bastion": float(br.mean()), "mean_radius_art": float(ar.mean()),
        "seconds": times, "median_seconds": med, "speedup_bastion_over_art": med["art"] / med["bastion"],
    }


def markdown(result: dict[str, Any]) -> str:
    def pct(v: float) -> str:
        return f"{100 * v:.1f}"

    s = result["settings"]
    lines = [
        "## Certification (issue 8)",
        "",
        f"Command: `{result['command']}` ({result['seconds_total']:.0f} s in all).",
        f"Machine: {result['machine']}; {result['versions']}. One thread (`torch.set_num_threads(1)`).",
        "",
        f"MNIST test split, first {s['points']} points (smoothing and the ART comparison: first "
        f"{s['smoothing_points']}; full CROWN: first {s['crown_points']}). Models trained here from scratch on the "
        "MNIST training split with `bastion.certification.train` (Adam 1e-3, batch 128): `crown-cnn` "
        "(conv16-conv32-fc100, "
        f"no max-pooling) for Gaussian noise ({s['epochs']['gaussian']} epochs per sigma), IBP and CROWN-IBP "
        f"({s['epochs']['ibp']} epochs: half an epoch of warm-up, {s['epochs']['ibp'] / 2:g} of linear ramp of eps "
        f"to 0.4, then 0.4), and `lipschitz-mlp` "
        f"({s['epochs']['lipschitz']} epochs, margin eps 0.5). Empirical robust accuracy: APGD-CE on the same points "
        f"({s['apgd_iters']} iterations per radius; for smoothing on the smoothed classifier's surrogate with "
        f"{s['attack_noise']} noise draws, each candidate re-judged with 500 fresh draws).",
        "",
        "| model (training) | certifier | train s | clean | radius: certified / empirical | certify s | attack s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        summ, cfg = row["summary"], row["config"]
        model = result["models"][cfg["model"]]
        pairs = ", ".join(f"{r}: {pct(summ['certified_accuracy'][r])} / {pct(summ['empirical_robust_accuracy'][r])}"
                          for r in summ["certified_accuracy"] if r != "0")
        certifier = cfg["method"] if cfg["method"] != "crown" else cfg.get("bound", "crown")
        if cfg["method"] == "smoothing":
            certifier += f" σ={cfg['sigma']}, n={cfg['samples']}"
        lines.append(f"| {cfg['model']} | {certifier} ({summ['n']} pts) | {model['train_seconds']:.0f} | "
                     f"{pct(summ['certified_accuracy']['0'])} | {pairs} | {summ['certify_seconds']:.1f} | "
                     f"{summ['attack_seconds']:.1f} |")
    a = result["art"]
    lines += [
        "",
        "Clean = certified accuracy at radius 0 (smoothing: correct and not abstaining). Percentages; L2 radii for "
        "smoothing and lipschitz, L-inf for IBP/CROWN. Certified accuracy is a lower bound on robust accuracy, "
        "the attack's an upper bound.",
        "",
        f"**Randomized smoothing vs ART {result['art_version']}** (`PyTorchRandomizedSmoothing.certify`, same "
        f"model {_gauss(a['sigma'])}, same {a['points']} points, n0={a['n0']}, n={a['n']}, alpha={a['alpha']}, "
        f"noise batch {a['mc_batch']}; {a['repeats']} alternating repetitions, median):",
        "",
        "| | bastion | ART |",
        "|---|---|---|",
        f"| abstentions | {a['abstain_bastion']} | {a['abstain_art']} |",
        f"| certified and correct | {a['certified_correct_bastion']} | {a['certified_correct_art']} |",
        f"| mean certified radius | {a['mean_radius_bastion']:.3f} | {a['mean_radius_art']:.3f} |",
        f"| median wall time (s) | {a['median_seconds']['bastion']:.1f} | {a['median_seconds']['art']:.1f} |",
        "",
        f"Points where exactly one of the two abstains: {a['abstain_disagreements']}; different certified classes: "
        f"{a['prediction_disagreements_when_both_certify']}; mean |radius difference| where both certify: "
        f"{a['mean_abs_radius_difference_when_both_certify']:.4f} (independent noise draws). bastion is "
        f"{a['speedup_bastion_over_art']:.2f}x ART's speed.",
        "",
        "Published for reference (larger models, GPU, full training): IBP 8.05% and CROWN-IBP 6.68-7.02% verified "
        "error at MNIST L-inf 0.3. The short CPU training here is far from those numbers.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300, help="test points for IBP/CROWN-IBP/lipschitz")
    parser.add_argument("--smoothing-points", type=int, default=100)
    parser.add_argument("--crown-points", type=int, default=20, help="test points for full CROWN (slow)")
    parser.add_argument("--samples", type=int, default=5_000, help="smoothing n")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions of the ART comparison")
    parser.add_argument("--epochs-gaussian", type=int, default=2)
    parser.add_argument("--epochs-ibp", type=int, default=3)
    parser.add_argument("--epochs-lipschitz", type=int, default=1)
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "bastion-certify-bench")
    parser.add_argument("--reuse", action="store_true", help="reuse trained checkpoints found in --models")
    parser.add_argument("--out", type=Path, default=Path("bench/results/certify.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the Markdown section here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    epochs = {"gaussian": args.epochs_gaussian, "ibp": args.epochs_ibp, "lipschitz": args.epochs_lipschitz}
    models = train_all(args.models, args.reuse, epochs)
    store = Store(args.models / "bench.sqlite")
    apgd_iters, noise = 30, 8
    linf = {"radii": LINF_RADII, "eps": 0.3, "attack": "apgd", "attack_params": {"n_iter": apgd_iters}}
    runs = []
    for name in ("ibp", "crown-ibp"):
        path = models[name]["path"]
        runs.append(certify(store, method="ibp", model=path, n=args.points, batch_size=250, **linf))
        runs.append(certify(store, method="crown", bound="crown-ibp", model=path, n=args.points, batch_size=250,
                            **linf))
    runs.append(certify(store, method="crown", bound="crown", model=models["crown-ibp"]["path"],
                        n=args.crown_points, batch_size=args.crown_points, **linf))
    runs.append(certify(store, method="lipschitz", model=models["lipschitz"]["path"], n=args.points, batch_size=250,
                        radii=[0.25, 0.5, 0.75, 1.0, 1.5], eps=1.0, attack="apgd",
                        attack_params={"n_iter": apgd_iters}))
    for sigma in SIGMAS:
        runs.append(certify(store, method="smoothing", model=models[_gauss(sigma)]["path"], sigma=sigma,
                            n=args.smoothing_points, batch_size=50, n0=100, samples=args.samples, alpha=0.001,
                            radii=L2_RADII, eps=1.0, attack="apgd", attack_params={"n_iter": apgd_iters},
                            attack_noise=noise))
    print("ART side by side ...", flush=True)
    art = art_side_by_side(models[_gauss(0.25)]["path"], args.smoothing_points, 0.25, 100, args.samples, 0.001,
                           args.repeats, 1000)
    import art as art_pkg

    result = {
        "command": "OMP_NUM_THREADS=1 .venv-bench/bin/python bench/certify_bench.py --reuse",
        "machine": f"2-core CPU shared with other jobs ({platform.machine()}, {platform.processor() or 'cpu'})",
        "versions": f"bastion {__import__('bastion').__version__}, torch {torch.__version__}, "
                    f"Python {platform.python_version()}",
        "art_version": art_pkg.__version__,
        "settings": {"points": args.points, "smoothing_points": args.smoothing_points,
                     "crown_points": args.crown_points, "samples": args.samples, "epochs": epochs,
                     "apgd_iters": apgd_iters, "attack_noise": noise, "threads": torch.get_num_threads()},
        "models": {k: v | {"path": Path(v["path"]).name} for k, v in models.items()},
        "runs": runs,
        "art": art,
        "seconds_total": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    md = markdown(result)
    if args.markdown:
        args.markdown.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
