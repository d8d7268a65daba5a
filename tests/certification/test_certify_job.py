"""The certification job end to end on tiny digits models: store rows, curves, resume, and per point the
certified radius never exceeds the norm of an adversarial example the attack found."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bastion.certification import job as certify_job
from bastion.certification.job import CertifyConfig, certify_run
from bastion.certification.report import write_reports
from bastion.certification.train import CertTrainConfig, train_certified
from bastion.evaluation.store import Store


@pytest.fixture(scope="module")
def ibp_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("cert") / "ibp"
    train_certified(CertTrainConfig(method="ibp", epochs=6, warmup_epochs=2, ramp_epochs=3, eps=0.1, lr=3e-3),
                    dataset="digits", out=out)
    return str(out)


@pytest.fixture(scope="module")
def gauss_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("cert") / "gauss"
    train_certified(CertTrainConfig(method="gaussian", epochs=8, sigma=0.25, lr=3e-3), dataset="digits", out=out)
    return str(out)


@pytest.fixture(scope="module")
def lip_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("cert") / "lip"
    train_certified(CertTrainConfig(method="lipschitz", epochs=6, eps=0.3, lr=3e-3), dataset="digits", out=out,
                    arch_kwargs={"width": 32, "depth": 2})
    return str(out)


def _check_points(store: Store, run_id: str, n: int) -> None:
    """Both parts have one row per point; certified radius <= adversarial norm found, per point."""
    cert = {r["idx"]: r for r in store.samples(run_id, "certify")}
    att = {r["idx"]: r for r in store.samples(run_id, "attack")}
    assert sorted(cert) == sorted(att) == list(range(n))
    for i, c in cert.items():
        a = att[i]
        assert c["clean_correct"] == int(c["clean_pred"] == c["label"])
        if c["clean_correct"] and a["success"]:
            assert c["norm"] <= a["norm"] + 1e-6, (i, c, a)


def _check_curves(summary: dict) -> None:
    cert, emp = summary["certified_accuracy"], summary["empirical_robust_accuracy"]
    assert list(cert) == list(emp) == [f"{r:g}" for r in summary["radii"]]
    values = list(cert.values())
    assert all(a >= b for a, b in itertools.pairwise(values))  # non-increasing in the radius
    assert all(cert[r] <= emp[r] + 1e-9 for r in cert)  # a guarantee never beats the attack
    assert summary["violations"] == []


@pytest.mark.parametrize(("method", "bound"), [("ibp", "crown"), ("crown", "crown-ibp"), ("crown", "crown")])
def test_bound_methods_end_to_end(ibp_ckpt: str, store: Store, method: str, bound: str) -> None:
    config = CertifyConfig(method=method, bound=bound, model=ibp_ckpt, n=24, batch_size=12, radii=[0.02, 0.05, 0.1],
                           attack_params={"n_iter": 10})
    outcome = certify_run(config, store)
    s = outcome.summary
    assert s["n"] == 24 and s["norm"] == "linf" and s["eps"] == 0.1 and s["abstention_rate"] == 0
    assert s["certified_accuracy"]["0.02"] > 0 and s["certified_accuracy"]["0"] == s["clean_accuracy"]
    _check_curves(s)
    _check_points(store, outcome.run_id, 24)
    run = store.get_run(outcome.run_id)
    assert run.kind == "certify" and run.status == "finished" and run.config["radii"] == [0.0, 0.02, 0.05, 0.1]


def test_smoothing_job_reports_and_plot(gauss_ckpt: str, store: Store, tmp_path: Path) -> None:
    config = CertifyConfig(method="smoothing", model=gauss_ckpt, sigma=0.25, n=16, batch_size=8, n0=16, samples=200,
                           radii=[0.25, 0.5, 1.0], check_samples=200, attack_noise=4, attack_params={"n_iter": 8})
    outcome = certify_run(config, store)
    s = outcome.summary
    assert s["norm"] == "l2" and s["certify_forward_passes"] == 16 * 216
    stored = store.get_run(outcome.run_id).config
    assert stored["n"] == 16 and stored["samples"] == 200 and stored["n0"] == 16 and stored["alpha"] == 0.001
    assert 0 <= s["abstention_rate"] <= 1 and s["certified_accuracy"]["0"] <= s["clean_accuracy"]
    _check_curves(s)
    _check_points(store, outcome.run_id, 16)
    abstained = [r for r in store.samples(outcome.run_id, "certify") if r["clean_pred"] == -1]
    assert all(r["norm"] == 0 and r["clean_correct"] == 0 for r in abstained)
    js, md, png = write_reports(store.get_run(outcome.run_id), tmp_path / "rep")
    assert json.loads(js.read_text())["schema"] == "bastion.certify-report/1"
    assert "| L2 radius | certified accuracy |" in md.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_lipschitz_radius_below_minimal_norm_attack(lip_ckpt: str, store: Store) -> None:
    config = CertifyConfig(method="lipschitz", model=lip_ckpt, n=24, batch_size=24, attack="fmn",
                           attack_params={"steps": 30}, radii=[0.1, 0.25, 0.5, 1.0, 2.0])
    outcome = certify_run(config, store)
    _check_curves(outcome.summary)
    _check_points(store, outcome.run_id, 24)
    att = store.samples(outcome.run_id, "attack")
    assert sum(r["success"] for r in att) >= 12  # FMN finds most points' boundary within L2 2.0


def test_resume_after_kill_redoes_no_finished_batch(ibp_ckpt: str, store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = CertifyConfig(method="ibp", model=ibp_ckpt, n=30, batch_size=10, radii=[0.05, 0.1],
                           attack_params={"n_iter": 5})
    calls: dict[str, list[int]] = {"certify": [], "attack": []}
    real_certify, real_attack = certify_job._certify_batch, certify_job._attack_batch

    def counting_certify(model, cfg, x, y, generator):  # type: ignore[no-untyped-def]
        calls["certify"].append(len(calls["certify"]))
        return real_certify(model, cfg, x, y, generator)

    def killed_attack(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["attack"].append(len(calls["attack"]))
        if len(calls["attack"]) == 2:  # killed during batch 1's attack: its certify part is already stored
            raise KeyboardInterrupt
        return real_attack(*args, **kwargs)

    monkeypatch.setattr(certify_job, "_certify_batch", counting_certify)
    monkeypatch.setattr(certify_job, "_attack_batch", killed_attack)
    with pytest.raises(KeyboardInterrupt):
        certify_run(config, store)
    assert len(calls["certify"]) == 2 and len(calls["attack"]) == 2
    run_id = store.find_unfinished("certify", config.model_copy(update={"dataset": "digits"}).key())
    assert run_id is not None
    assert store.done_batches(run_id, "certify") == {0, 1} and store.done_batches(run_id, "attack") == {0}

    monkeypatch.setattr(certify_job, "_attack_batch", real_attack)
    calls = {"certify": [], "attack": []}
    resumed = certify_run(config, store)
    assert resumed.run_id == run_id and resumed.resumed_points == 10
    assert len(calls["certify"]) == 1  # only batch 2; batches 0 and 1 were not certified again
    assert store.done_batches(run_id, "attack") == {0, 1, 2}

    fresh = certify_run(config, store, fresh=True)  # uninterrupted: the same numbers
    for key in ("certified_accuracy", "empirical_robust_accuracy", "clean_accuracy", "violations"):
        assert fresh.summary[key] == resumed.summary[key]
