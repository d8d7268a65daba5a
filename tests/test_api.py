"""The public API and a user's own model and data: one Python call and one command give the same numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

import bastion
from bastion.cli import app
from bastion.data import load_dataset
from bastion.data.user import load_user_data
from bastion.errors import BastionError
from bastion.evaluation.store import Store
from bastion.zoo.user import load_user_model

MODEL_FILE = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class TinyResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = Block(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.stem(x))).mean((2, 3)))


def make():
    return TinyResNet()


def broken():
    raise ValueError("no GPU here")


def wrong_shape():
    return nn.Identity()
'''


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a ResNet in their own file, weights trained here in a second, test points as .npz."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "my_model.py").write_text(MODEL_FILE)
    model = load_user_model(f"{folder / 'my_model.py'}:make")
    data = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = load_user_model(f"{folder / 'my_model.py'}:make").train()
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        for _ in range(8):
            for idx in torch.randperm(len(data.train.y), generator=g).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(data.train.x[idx]), data.train.y[idx]).backward()
                opt.step()
    save_file(model.state_dict(), str(folder / "w.safetensors"))
    np.savez(folder / "my.npz", x=data.test.x[:48].numpy(), y=data.test.y[:48].numpy())
    return folder


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _user_model(folder: Path) -> torch.nn.Module:
    return load_user_model(f"{folder / 'my_model.py'}:make", folder / "w.safetensors")


def test_own_model_file_from_cli_and_python_give_the_same_numbers(user_files: Path, tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    code, out = invoke("evaluate", "--model", f"{user_files / 'my_model.py'}:make", "--weights",
                       str(user_files / "w.safetensors"), "--data", str(user_files / "my.npz"), "--eps", "8/255",
                       "--suite", "fast", "--batch-size", "24", "--device", "cpu", "--store", str(db))
    assert code == 0, out
    assert "48 points of shape (1, 8, 8), 10 classes, bounds [0, 1]" in out.replace("\n", " ")
    arrays = np.load(user_files / "my.npz")
    api_store = Store(tmp_path / "api.sqlite")
    report = bastion.evaluate(_user_model(user_files), torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]),
                              bastion.LpThreat("linf", 8 / 255), suite="fast", batch_size=24, device="cpu",
                              store=api_store, report_dir=tmp_path / "api-report", progress=False)
    cli_store = Store(db)
    cli_run = cli_store.list_runs()[0]
    assert 0 < report.robust_accuracy < report.clean_accuracy  # a real model, really attacked
    assert report.robust_accuracy == cli_run.summary["robust_accuracy"]
    assert report.clean_accuracy == cli_run.summary["clean_accuracy"]
    def rows(store: Store, run_id: str) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "run_id"} for r in store.samples(run_id)]

    assert rows(api_store, report.run_id) == rows(cli_store, cli_run.id)  # every stage's per-point row
    same = {k: v for k, v in report.summary.items() if k not in ("attack_seconds", "stages", "seconds")}
    cli_same = {k: v for k, v in cli_run.summary.items() if k not in ("attack_seconds", "stages", "seconds")}
    assert same == cli_same
    cli_report = json.loads(next((tmp_path / "runs").iterdir()).joinpath("report.json").read_text())
    assert json.loads(report.to_json())["summary"]["robust_accuracy"] == cli_report["summary"]["robust_accuracy"]
    assert "<html" in report.to_html() and (tmp_path / "api-report" / "report.html").exists()
    assert set(report.stages) == set(cli_run.summary["stages"])


def test_a_data_loader_gives_the_same_report_as_tensors(user_files: Path) -> None:
    arrays = np.load(user_files / "my.npz")
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    model, threat = _user_model(user_files), bastion.LpThreat("l2", 0.5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)
    a = bastion.attack(model, x, y, threat, "pgd", params={"steps": 10}, progress=False)
    b = bastion.attack(model, loader, None, threat, "pgd", params={"steps": 10}, progress=False)
    assert a.summary["robust_accuracy"] == b.summary["robust_accuracy"]
    assert a.config["data"] == b.config["data"]  # the same points, hashed the same


def test_a_stored_api_run_is_reused(user_files: Path, tmp_path: Path) -> None:
    arrays = np.load(user_files / "my.npz")
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    store = tmp_path / "s.sqlite"
    first = bastion.attack(_user_model(user_files), x, y, bastion.LpThreat("linf", 0.1), "fgsm", store=store,
                           progress=False)
    again = bastion.attack(_user_model(user_files), x, y, bastion.LpThreat("linf", 0.1), "fgsm", store=store,
                           progress=False)
    assert first.run_id == again.run_id  # the same call again returns the finished run; nothing is recomputed
    fresh = bastion.attack(_user_model(user_files), x, y, bastion.LpThreat("linf", 0.1), "fgsm", store=store,
                           progress=False, fresh=True)
    assert fresh.run_id != first.run_id and fresh.robust_accuracy == first.robust_accuracy


def test_tabular_csv_gets_per_feature_bounds_and_is_attacked(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g) * torch.tensor([1.0, 10.0, 0.1, 5.0]) + torch.tensor([0.0, 50.0, 1.0, -3.0])
    y = (x[:, 0] + x[:, 2] * 10 > 10 * x[:, 2].mean()).long()
    path = tmp_path / "flows.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "d", "class"])
        w.writerows([[*map(float, row), "attack" if lab else "benign"] for row, lab in zip(x.tolist(), y.tolist(),
                                                                                            strict=True)])
    data = load_user_data(path)
    assert data.classes == ("attack", "benign") and isinstance(data.lower, torch.Tensor)
    assert torch.allclose(data.lower, x.min(0).values) and torch.allclose(data.upper, x.max(0).values)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    report = bastion.attack(model, data.x, data.y, bastion.LpThreat("linf", 0.5, lower=data.lower, upper=data.upper),
                            "pgd", progress=False)
    assert report.summary["n"] == 60 and 0.0 <= report.robust_accuracy <= report.clean_accuracy


def test_image_folder_and_pt_files_load(tmp_path: Path) -> None:
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((5, 6, 3), 40 * (i + label), dtype=np.uint8)).save(tmp_path / "imgs" / name /
                                                                                   f"{i}.png")
    data = load_user_data(tmp_path / "imgs")
    assert data.x.shape == (6, 3, 5, 6) and data.y.tolist() == [0, 0, 0, 1, 1, 1] and data.classes == ("cat", "dog")
    assert (data.lower, data.upper) == (0.0, 1.0)
    torch.save({"x": data.x, "y": data.y}, tmp_path / "d.pt")
    again = load_user_data(tmp_path / "d.pt")
    assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)


def test_torchscript_file_is_a_model(user_files: Path, tmp_path: Path) -> None:
    scripted = torch.jit.script(_user_model(user_files))
    torch.jit.save(scripted, str(tmp_path / "m.ts"))
    code, out = invoke("attack", "pgd", "--model", str(tmp_path / "m.ts"), "--data", str(user_files / "my.npz"),
                       "--eps", "0.1", "-p", "steps=5", "--device", "cpu", "--store", str(tmp_path / "s.sqlite"))
    assert code == 0, out
    assert "robust accuracy" in out
    db = tmp_path / "suite.sqlite"  # the suite's probe hooks layers, which TorchScript does not allow
    code, out = invoke("evaluate", "--model", str(tmp_path / "m.ts"), "--data", str(user_files / "my.npz"),
                       "--eps", "0.1", "--suite", "fast", "--n", "24", "--device", "cpu", "--store", str(db))
    assert code == 0, out
    flags = {f["name"]: f for f in Store(db).list_runs()[0].summary["flags"]}
    assert flags["non_differentiable_modules"]["numbers"]["checked"] is False
    assert "TorchScript" in flags["non_differentiable_modules"]["evidence"]


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "missing.py:make"), "does not exist"),
    (("--model", "{u}/my_model.py:nothing"), "has no 'nothing'"),
    (("--model", "{u}/my_model.py:broken"), "raised ValueError: no GPU here"),
    (("--model", "{u}/my_model.py:wrong_shape"), "logits of shape"),
    (("--model", "{u}/my_model.py:make", "--weights", "{u}/my.npz"), "cannot be read as plain tensors"),
    (("--model", "{u}/my_model.py:make", "--data", "{u}/bad.npz"), "48 inputs but 47 labels"),
    (("--model", "{u}/my_model.py:make", "--data", "{u}/my.npz", "--eps", "8/0"), "not a number"),
    (("--model", "{u}/my_model.py:make", "--data", "{u}/my.npz", "--device", "cuda:999"), "device"),
    (("--model", "{u}/my_model.py:make"), "--data FILE or --dataset NAME"),
])
def test_bad_user_input_is_one_line_naming_the_fix(user_files: Path, tmp_path: Path, args: tuple[str, ...],
                                                   message: str) -> None:
    arrays = np.load(user_files / "my.npz")
    np.savez(user_files / "bad.npz", x=arrays["x"], y=arrays["y"][:47])
    full = [a.replace("{u}", str(user_files)) for a in args]
    if "--data" not in full and "--dataset" not in full and "wrong_shape" in full[1]:
        full += ["--data", str(user_files / "my.npz")]
    if "--eps" not in full:
        full += ["--eps", "0.1"]
    code, out = invoke("attack", "fgsm", *full, "--store", str(tmp_path / "s.sqlite"))
    assert code == 2, out
    assert message in out.replace("\n", " ") and "Traceback" not in out
    assert out.strip().startswith("error:")


def test_api_rejects_what_it_cannot_use(user_files: Path) -> None:
    model = _user_model(user_files)
    with pytest.raises(BastionError, match="labels"):
        bastion.evaluate(model, torch.rand(4, 1, 8, 8), None, bastion.LpThreat("linf", 0.1), progress=False)
    with pytest.raises(BastionError, match="threat model"):
        bastion.evaluate(model, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), None, progress=False)
    with pytest.raises(BastionError, match=r"nn\.Module"):
        bastion.evaluate(lambda x: x, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),  # type: ignore[arg-type]
                         bastion.LpThreat("linf", 0.1), progress=False)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="not run: needs a CUDA GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_on_each_device_is_reproducible(user_files: Path, device: str) -> None:
    """The same seed on the same device gives the same numbers; the CUDA run agrees with the CPU run up to float
    differences in the attacks' paths (checked loosely: within 2 points of 48)."""
    arrays = np.load(user_files / "my.npz")
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    threat = bastion.LpThreat("linf", 0.1)
    runs = [bastion.evaluate(_user_model(user_files), x, y, threat, suite="fast", device=device, progress=False)
            for _ in range(2)]
    assert runs[0].robust_accuracy == runs[1].robust_accuracy
    assert runs[0].summary["forward_passes"] == runs[1].summary["forward_passes"]
    assert runs[0].document["environment"]["device"] != ""
    if device != "cpu":
        cpu = bastion.evaluate(_user_model(user_files), x, y, threat, suite="fast", device="cpu", progress=False)
        assert abs(cpu.robust_accuracy - runs[0].robust_accuracy) <= 2 / 48


def test_a_per_feature_threat_is_recorded_whole_and_rebuilt(tmp_path: Path) -> None:
    from bastion.evaluation.config import EvalConfig
    from bastion.threats import threat_from_dict

    x = torch.rand(20, 3) * torch.tensor([1.0, 4.0, 9.0])
    y = (x[:, 0] > 0.5).long()
    threat = bastion.LpThreat("linf", 0.1, lower=torch.zeros(3), upper=torch.tensor([1.0, 4.0, 9.0]))
    model = torch.nn.Linear(3, 2).eval()
    report = bastion.attack(model, x, y, threat, "fgsm", progress=False)
    stored = EvalConfig(**report.config)
    assert threat_from_dict(stored.threat).to_dict() == threat.to_dict()
    plain = bastion.attack(model, x.clamp(0, 1), y, bastion.LpThreat("linf", 0.1), "fgsm", progress=False)
    assert plain.config["threat"] is None  # norm and eps say it all, as in runs stored before the field existed


def test_certify_a_users_lipschitz_model_in_one_call(tmp_path: Path) -> None:
    """bastion.certify on a model built in the caller's code: the certificate never exceeds what the attack
    leaves (certified accuracy <= empirical robust accuracy at eps), and the report is written."""
    from bastion.zoo.lipschitz_layers import lipschitz_mlp

    data = load_dataset("digits")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = lipschitz_mlp((1, 8, 8), 10, width=64, depth=2)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(15):
            for idx in torch.arange(len(data.train.y)).split(128):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(data.train.x[idx]) * 8, data.train.y[idx]).backward()
                opt.step()
    x, y = data.test.x[:40], data.test.y[:40]
    report = bastion.certify(model.eval(), x, y, method="lipschitz", eps=0.2, progress=False,
                             report_dir=tmp_path / "cert", attack="pgd")
    s = report.summary
    assert s["clean_accuracy"] > 0.5 and 0 < s["certified_accuracy_at_eps"] <= report.robust_accuracy
    assert (tmp_path / "cert" / "report.json").exists() and "<img" in report.to_html()
    assert callable(bastion.certify) and callable(bastion.evaluate)
    from bastion.store.summaries import CertifySummary

    assert isinstance(report.typed, CertifySummary) and report.typed.certified_accuracy_at_eps == \
        s["certified_accuracy_at_eps"]


def test_reports_carry_typed_summaries(user_files: Path) -> None:
    from bastion.store.summaries import EvaluateSummary

    arrays = np.load(user_files / "my.npz")
    report = bastion.attack(_user_model(user_files), torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]),
                            bastion.LpThreat("linf", 0.1), "fgsm", progress=False)
    assert isinstance(report.typed, EvaluateSummary) and report.typed.robust_accuracy == report.robust_accuracy


def test_a_threat_file_carries_per_feature_bounds_and_a_mask_from_the_command_line(user_files: Path,
                                                                                    tmp_path: Path) -> None:
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True  # only the centre may change
    threat = bastion.LpThreat("linf", 0.3, mask=mask)
    (tmp_path / "t.json").write_text(json.dumps(threat.to_dict()))
    db = tmp_path / "s.sqlite"
    code, out = invoke("attack", "pgd", "--model", f"{user_files / 'my_model.py'}:make", "--weights",
                       str(user_files / "w.safetensors"), "--data", str(user_files / "my.npz"), "--eps", "0.3",
                       "--threat", str(tmp_path / "t.json"), "-p", "steps=10", "--store", str(db))
    assert code == 0, out
    run = Store(db).list_runs()[0]
    assert run.config["threat"]["mask"] is not None
    masked = bastion.attack(_user_model(user_files), torch.from_numpy(np.load(user_files / "my.npz")["x"]),
                            torch.from_numpy(np.load(user_files / "my.npz")["y"]), threat, "pgd",
                            params={"steps": 10}, progress=False)
    assert masked.robust_accuracy == run.summary["robust_accuracy"]  # the same masked threat both ways
    code, out = invoke("attack", "pgd", "--model", f"{user_files / 'my_model.py'}:make", "--data",
                       str(user_files / "my.npz"), "--eps", "0.1", "--threat", str(tmp_path / "t.json"),
                       "--store", str(db))
    assert code == 2 and "give the same norm and eps" in " ".join(out.split())


@pytest.mark.parametrize("device", DEVICES)
def test_certify_on_each_device_is_reproducible(device: str) -> None:
    """Smoothing's noise comes from the batch's generator on the data's device: the same seed gives the same
    certificates on that device."""
    data = load_dataset("digits")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    x, y = data.test.x[:12], data.test.y[:12]
    runs = [bastion.certify(model, x, y, method="smoothing", sigma=0.25, eps=0.25, device=device, progress=False,
                            samples=200, attack="none") for _ in range(2)]
    assert runs[0].summary["certified_accuracy"] == runs[1].summary["certified_accuracy"]
    recorded = runs[0].document["environment"]["device"]
    assert recorded == "cpu" if device == "cpu" else recorded != "cpu"


def test_a_model_name_with_markup_stays_text_in_the_reports(user_files: Path) -> None:
    arrays = np.load(user_files / "my.npz")
    report = bastion.attack(_user_model(user_files), torch.from_numpy(arrays["x"][:8]),
                            torch.from_numpy(arrays["y"][:8]), bastion.LpThreat("linf", 0.1), "fgsm", progress=False,
                            model_name="<img src=x>[link](javascript:x)")
    assert "\\<img src=x\\>\\[link\\]\\(javascript:x\\)" in report.to_markdown()
    assert "&lt;img src=x&gt;" in report.to_html() and "<img src=x>" not in report.to_html()
