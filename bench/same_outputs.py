"""Same outputs before and after a change: fingerprints of every bastion white-box attack the bench runs.

    # record one tree (its bastion first on PYTHONPATH), single core, one torch thread
    PYTHONPATH=<tree>/src taskset -c 1 .venv/bin/python bench/same_outputs.py --out bench/results/same_outputs_X.json
        [--models digits-std,digits-pgdat,mnist-std,mnist-pgdat] [--digits-points 500] [--mnist-points 64]
        [--no-extra] [--cache /tmp/bastion-same-outputs]
    # compare two recordings: a table, exit status 1 if anything differs
    .venv/bin/python bench/same_outputs.py --compare A.json B.json

Configurations: every (attack, norm) that ``whitebox_bench.py`` runs for bastion, with its hyper-parameters
(read from that file, so the two cannot drift apart), on each bench model, at the bench's eps, generator seed 0,
through the runner exactly as ``whitebox_bench.run_bastion`` calls it: only the points the model classifies
correctly are attacked, robust accuracy is over all points. ``--extra`` (default on) adds what the bench does not
run but the attacks implement: APGD-DLR (linf, l2, l1) and L1 for PGD, APGD-CE and APGD-T (eps ``EPS_L1``).

Per configuration: sha256 of the re-checked adversarial examples' bytes, sha256 of the per-sample forward and
backward pass counts (and their totals), the robust count and accuracy, sha256 of the per-sample norms (minimal
attacks report them) and the runner's outside-threat count. Per model: sha256 of its weights and of its logits
on the points, so a changed model or data set is told apart from a changed attack.

Points: the bench's point choice (``common.points``), the first ``--digits-points`` (default 500: all the bench's
digits points) and ``--mnist-points`` (default 64; the bench's 500 would take most of an hour per tree on one
core). Models: trained (digits, with the first run's tree) or loaded (the zoo's MNIST weights) once and pinned
under ``--cache`` as state dicts; every later run, whatever its tree, loads those same weights.

Imports from bastion only what exists before and after the evaluate -> evaluation rename: ``bastion.threat``,
``bastion.zoo``, ``bastion.data`` (through ``common``) and the runner from ``bastion.evaluation.runner``, else
``bastion.evaluate.runner``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import bastion
import common
from bastion.attacks import get_attack
from bastion.threat import LpThreat

try:
    from bastion.evaluation.runner import run_attack

    RUNNER = "bastion.evaluation.runner"
except ImportError:  # the tree before the rename
    from bastion.evaluate.runner import run_attack

    RUNNER = "bastion.evaluate.runner"

BENCH = Path(__file__).resolve().parent / "whitebox_bench.py"
EPS_L1 = {"digits": 2.0, "mnist": 10.0}  # extras only: the bench has no L1 rows
COMPARED = {"examples": ("adversarial_sha256",), "counts": ("forward_sha256", "backward_sha256"),
            "robust_acc": ("robust", "robust_accuracy"), "other": ("norm_sha256", "success_sha256", "outside_threat")}


def bench_tables() -> dict[str, Any]:
    """``BASTION`` and ``NORMS`` as ``whitebox_bench.py`` defines them, without importing it (it imports the peer
    libraries and one runner path): its module-level UPPER_CASE assignments are evaluated in order, and those
    that need anything else (imports, functions) are left out."""
    tree = ast.parse(BENCH.read_text())
    ns: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
            with contextlib.suppress(Exception):
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(BENCH), "exec"), ns)  # literal tables
    return {"BASTION": ns["BASTION"], "NORMS": ns["NORMS"]}


def configs(extra: bool) -> list[tuple[str, str, str, dict[str, Any], bool]]:
    """(bench attack, norm, bastion attack name, hyper-parameters, extra) in the bench's order."""
    t = bench_tables()
    out = [(a, norm, *t["BASTION"][a], False) for a in t["BASTION"] for norm in t["NORMS"][a]]
    if extra:
        pgd, apgd, apgdt = t["BASTION"]["pgd"], t["BASTION"]["apgd-ce"], t["BASTION"]["apgd-t"]
        dlr = (apgd[0], {**apgd[1], "loss": "dlr"})
        out += [("apgd-dlr", norm, *dlr, True) for norm in ("linf", "l2", "l1")]
        out += [(a, "l1", *spec, True) for a, spec in (("pgd", pgd), ("apgd-ce", apgd), ("apgd-t", apgdt))]
    return out


def sha(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def weights_sha(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tree_info() -> dict[str, Any]:
    root = Path(bastion.__file__).resolve().parents[2]

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, check=False)
        return r.stdout.rstrip()

    dirty = git("status", "--porcelain", "--", "src")
    return {"bastion_file": bastion.__file__, "tree": str(root), "commit": git("rev-parse", "HEAD"),
            "src_uncommitted": dirty.splitlines(),
            "src_uncommitted_diff_sha256": hashlib.sha256(git("diff", "HEAD", "--", "src").encode()).hexdigest()
            if dirty else None, "runner": RUNNER}


def cached_models(names: list[str], cache: Path) -> dict[str, nn.Module]:
    """The bench's models (``common.get_models``), with every state dict pinned in ``cache``: the first run trains
    the digits models (or loads the zoo's) and saves them; later runs load exactly those weights."""
    cache.mkdir(parents=True, exist_ok=True)
    common.CACHE = cache  # digits_model trains into / loads from common.CACHE
    models = common.get_models(names, log=lambda m: print(m, flush=True))
    for name, m in models.items():
        path = cache / f"{name}.pt"
        if path.exists():
            m.load_state_dict(torch.load(path, weights_only=True))
        else:
            torch.save(m.state_dict(), path)
        m.eval()
    return models


def record(args: argparse.Namespace) -> None:
    common.setup()
    started = time.perf_counter()
    names = args.models.split(",")
    models = cached_models(names, Path(args.cache))
    todo = configs(args.extra)
    n_points = {"digits": args.digits_points, "mnist": args.mnist_points}
    out: dict[str, Any] = {"meta": {**tree_info(), "torch": torch.__version__, "python": platform.python_version(),
                                    "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
                                    "points": n_points, "models": {}}, "configs": {}}
    for model_name, model in models.items():
        ds = common.dataset_of(model_name)
        x, y = common.points(ds, n_points[ds])
        with torch.no_grad():
            logits = model(x)
        correct = logits.argmax(1) == y
        xs, ys = x[correct], y[correct]
        out["meta"]["models"][model_name] = {"weights_sha256": weights_sha(model), "points_sha256": sha(x),
                                             "labels_sha256": sha(y), "logits_sha256": sha(logits),
                                             "clean_correct": int(correct.sum()), "points": len(y)}
        print(f"{model_name}: {int(correct.sum())}/{len(y)} correct", flush=True)
        for attack, norm, name, hyper, extra in todo:
            eps = EPS_L1[ds] if norm == "l1" else common.EPS[ds][norm]
            key = f"{model_name}/{attack}/{norm}"
            try:
                get_attack(name)
            except Exception:  # an attack this tree does not have (added later): recorded as absent
                out["configs"][key] = {"model": model_name, "attack": attack, "bastion_attack": name, "norm": norm,
                                       "absent": True}
                print(f"  {key:<32} absent in this tree", flush=True)
                continue
            torch.manual_seed(0)  # nothing should draw from it; if something does, it draws the same in both trees
            t0 = time.perf_counter()
            res = run_attack(model, xs, ys, LpThreat(norm, eps), name, generator=torch.Generator().manual_seed(0),
                             **hyper)
            dt = time.perf_counter() - t0
            robust = int(res.robust.sum())
            out["configs"][key] = {
                "model": model_name, "attack": attack, "bastion_attack": name, "params": hyper, "norm": norm,
                "eps": eps, "extra": extra, "points": len(y), "attacked": int(xs.shape[0]),
                "adversarial_sha256": sha(res.adversarial), "shape": list(res.adversarial.shape),
                "dtype": str(res.adversarial.dtype),
                "forward_sha256": sha(res.counts.forward), "backward_sha256": sha(res.counts.backward),
                "forward_total": res.counts.total_forward, "backward_total": res.counts.total_backward,
                "robust": robust, "robust_accuracy": robust / len(y),
                "norm_sha256": sha(res.norm), "success_sha256": sha(res.success),
                "outside_threat": res.outside_threat, "seconds": round(dt, 3)}
            print(f"  {key:<32} robust {robust}/{len(y)}  fwd {res.counts.total_forward:>7} "
                  f"bwd {res.counts.total_backward:>7}  {dt:6.2f}s", flush=True)
    out["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(out['configs'])} configs in {out['meta']['seconds']}s -> {args.out}")


def compare(a_path: str, b_path: str) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    bad = 0
    for side, d in (("A", a), ("B", b)):
        m = d["meta"]
        print(f"{side}: {m['commit'][:10]} ({m['runner']}, torch {m['torch']}, {m['seconds']}s, "
              f"{len(m['src_uncommitted'])} uncommitted src files) {m['bastion_file']}")
    for name in sorted(set(a["meta"]["models"]) | set(b["meta"]["models"])):
        ma, mb = a["meta"]["models"].get(name), b["meta"]["models"].get(name)
        if ma != mb:
            bad += 1
            print(f"model {name}: DIFFERENT setup (weights/points/logits): {ma} vs {mb}")
    if a["meta"]["points"] != b["meta"]["points"]:
        bad += 1
        print(f"point counts differ: {a['meta']['points']} vs {b['meta']['points']}")
    keys = list(dict.fromkeys([*a["configs"], *b["configs"]]))
    print(f"\n{'config':<34} {'examples':>8} {'counts':>7} {'robust':>7} {'other':>6}   robust A -> B")
    same = added = missing = compared = 0
    for k in keys:
        ca, cb = a["configs"].get(k), b["configs"].get(k)
        ra = ca is not None and not ca.get("absent")
        rb = cb is not None and not cb.get("absent")
        if not (ra and rb):
            # a number A has and B lacks is a failure; one only B has (an attack added since A) is new, not a change
            bad += ra
            added += rb
            missing += ra
            print(f"{k:<34} " + ("only in A (MISSING in B)" if ra else "only in B (new)" if rb else "in neither"))
            continue
        compared += 1
        cells = {col: all(ca.get(f) == cb.get(f) for f in fields) for col, fields in COMPARED.items()}
        ok = all(cells.values())
        same += ok
        bad += not ok
        print(f"{k:<34} " + " ".join(f"{'yes' if v else 'NO':>{w}}" for v, w in zip(cells.values(), (8, 7, 7, 6),
                                                                                     strict=True))
              + f"   {ca['robust']}/{ca['points']} -> {cb['robust']}/{cb['points']}"
              + ("" if cells["counts"] else f"  (fwd {ca['forward_total']} -> {cb['forward_total']}, "
                                            f"bwd {ca['backward_total']} -> {cb['backward_total']})"))
    print(f"\n{same}/{compared} configs in both identical"
          + (f"; {added} only in B (new)" if added else "")
          + (f"; {missing} only in A (missing in B)" if missing else "")
          + ("" if not bad else f"; {bad} difference(s)"))
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON to write (record mode)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two recordings and exit")
    ap.add_argument("--models", default="digits-std,digits-pgdat,mnist-std,mnist-pgdat")
    ap.add_argument("--digits-points", type=int, default=500)
    ap.add_argument("--mnist-points", type=int, default=64)
    ap.add_argument("--extra", action=argparse.BooleanOptionalAction, default=True,
                    help="also APGD-DLR and the L1 rows the bench does not run")
    ap.add_argument("--cache", default="/tmp/bastion-same-outputs", help="pinned model weights (state dicts)")
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if not args.out:
        ap.error("--out is required unless --compare")
    record(args)


if __name__ == "__main__":
    main()
