"""Suite-mode jobs, Dask sweeps, and the HTML report in a real headless browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bastion.evaluation.config import EvalConfig
from bastion.evaluation.job import evaluate
from bastion.evaluation.report import write_reports
from bastion.evaluation.store import Store
from bastion.evaluation.sweep import SweepConfig, aggregate, run_sweep


def _sweep(checkpoint: Path) -> SweepConfig:
    return SweepConfig(defaults={"suite": "fast", "n": 24, "batch_size": 12, "seed": 0},
                       models=[str(checkpoint)], threats=[{"norm": "linf", "eps": [0.05, 0.1]}], shards=2)


def test_suite_job_summary_and_resume(digits_checkpoint: Path, tmp_path: Path) -> None:
    config = EvalConfig(model=str(digits_checkpoint), n=24, batch_size=12, eps=0.1, suite="standard")
    ref = evaluate(config, Store(tmp_path / "a.sqlite")).summary
    assert ref["mode"] == "suite" and set(ref["stages"]) >= {"apgd-ce", "fmn"}
    assert ref["flags_fired"] == [] and len(ref["flags"]) >= 9
    assert ref["curve"]["robust_accuracy"][0] == ref["clean_accuracy"]
    assert ref["robust_accuracy"] <= ref["curve"]["robust_accuracy"][20] + 1e-9  # eps is the curve's midpoint
    assert ref["forward_passes"] == sum(s["forward_passes"] for s in ref["stages"].values())

    store = Store(tmp_path / "b.sqlite")

    class Killed(Exception):
        pass

    def kill(p) -> None:
        if p.done == 12 and not p.stage:
            raise Killed

    with pytest.raises(Killed):
        evaluate(config, store, on_progress=kill)
    resumed = evaluate(config, store)
    assert resumed.resumed_points == 12
    for key in ("robust_accuracy", "clean_accuracy", "forward_passes", "curve"):
        assert resumed.summary[key] == ref[key], key


def test_sweep_on_local_cluster_matches_sequential_and_resumes(digits_checkpoint: Path, tmp_path: Path) -> None:
    sweep = _sweep(digits_checkpoint)
    sequential = aggregate(run_sweep(sweep, Store(tmp_path / "seq.sqlite"), scheduler="sync"))
    store = Store(tmp_path / "dask.sqlite")
    parallel = aggregate(run_sweep(sweep, store, workers=2))
    strip = ("runs", "attack_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in sequential] == \
        [{k: v for k, v in r.items() if k not in strip} for r in parallel]
    assert len(store.list_runs()) == 4
    again = run_sweep(sweep, store, scheduler="sync")  # everything finished: nothing is redone
    assert all(r.skipped for r in again) and len(store.list_runs()) == 4


def test_html_report_renders_in_headless_chromium(digits_checkpoint: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it when run as root)")
    store = Store(tmp_path / "s.sqlite")
    out = evaluate(EvalConfig(model=str(digits_checkpoint), n=16, batch_size=16, eps=0.2, suite="fast"), store)
    paths = write_reports(store.get_run(out.run_id), tmp_path / "report", store)
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 3  # curve, contributions, gallery
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400",
                    f"--screenshot={shot}", paths["html"].as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1000, 1400) and high - low > 100  # not blank: text and plots are there
    histogram = image.histogram()
    assert max(histogram) < 0.98 * sum(histogram)
