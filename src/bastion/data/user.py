"""A user's own data: ``.npz`` / ``.pt`` tensors, an image folder (one sub-folder per class), a CSV with a label
column. Shape, number of classes and bounds are inferred (``UserData.describe`` says what was inferred) and the
bounds can be overridden.

Bounds: data already in [0, 1] keep the image convention [0, 1]; otherwise tabular data (one feature axis) get
per-feature bounds, each column's min and max over the file (the range an attacker may move that feature in), and
other data the overall min and max. Files are read as plain arrays: ``np.load(allow_pickle=False)`` and
``torch.load(weights_only=True)``; nothing in a data file can run code.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bastion.errors import InvalidInputError

X_KEYS = ("x", "X", "inputs", "data", "images", "features")
Y_KEYS = ("y", "Y", "labels", "label", "targets", "target")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
Bound = float | Tensor


@dataclass(frozen=True)
class UserData:
    """Inputs, labels and the inferred (or given) box; ``classes`` names the labels where the file says."""

    x: Tensor
    y: Tensor
    lower: Bound
    upper: Bound
    classes: tuple[str, ...] | None = None
    bounds_source: str = "inferred"

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.y.max()) + 1 if len(self.y) else 0

    def describe(self) -> str:
        """One line: how many points, their shape, classes and bounds (what the CLI prints before attacking)."""
        if isinstance(self.lower, Tensor):
            lo, hi = torch.as_tensor(self.lower), torch.as_tensor(self.upper)
            box = f"per-feature bounds ({self.bounds_source}; ranges {float((hi - lo).min()):.4g}..." \
                  f"{float((hi - lo).max()):.4g})"
        else:
            box = f"bounds [{self.lower:.4g}, {self.upper:.4g}] ({self.bounds_source})"
        return (f"{len(self.y)} points of shape {tuple(self.x.shape[1:])}, {self.num_classes} classes, {box}; "
                "override with --lower/--upper")


def load_user_data(path: str | Path, *, label_column: str | None = None, lower: float | None = None,
                   upper: float | None = None) -> UserData:
    """Read ``path`` (see the module docstring); ``lower``/``upper`` override the inferred bounds."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"--data {p} does not exist; give a .npz/.pt file, an image folder or a .csv file.")
    classes = None
    if p.is_dir():
        x, y, classes = _image_folder(p)
    elif p.suffix == ".npz":
        x, y = _npz(p)
    elif p.suffix in (".pt", ".pth"):
        x, y = _torch_file(p)
    elif p.suffix == ".csv":
        x, y, classes = _csv(p, label_column)
    else:
        raise InvalidInputError(f"--data {p}: unknown format {p.suffix!r}; use .npz, .pt, .csv or an image folder.")
    x, y = _checked(x, y, p)
    lo, hi, source = _bounds(x, lower, upper)
    return UserData(x, y, lo, hi, classes, source)


def _checked(x: Tensor, y: Tensor, path: Path) -> tuple[Tensor, Tensor]:
    if y.dim() != 1:
        raise InvalidInputError(f"{path}: labels must be one class index per point; got shape {tuple(y.shape)}.")
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(
            f"{path}: {x.shape[0]} inputs but {y.shape[0]} labels; give one label per input (first axis)."
        )
    if x.shape[0] == 0:
        raise InvalidInputError(f"{path} holds no points.")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise InvalidInputError(f"{path}: labels must be integer class indices; got fractional values.")
        y = y.long()
    if y.min() < 0:
        raise InvalidInputError(f"{path}: labels must be class indices from 0; got {int(y.min())}.")
    x = x.float()
    if not torch.isfinite(x).all():
        raise InvalidInputError(f"{path}: inputs contain NaN or inf; clean or drop those points.")
    return x, y.long()


def _bounds(x: Tensor, lower: float | None, upper: float | None) -> tuple[Bound, Bound, str]:
    lo: Bound
    hi: Bound
    if x.min() >= 0 and x.max() <= 1:
        lo, hi, source = 0.0, 1.0, "inferred: data in [0, 1]"
    elif x.dim() == 2:
        lo, hi, source = x.min(0).values, x.max(0).values, "inferred: each column's min and max"
    else:
        lo, hi, source = float(x.min()), float(x.max()), "inferred: the data's min and max"
    if lower is not None and upper is not None:
        return float(lower), float(upper), "given"
    if lower is not None or upper is not None:
        source += ", one side given"
    return (lo if lower is None else float(lower)), (hi if upper is None else float(upper)), source


def _pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...], what: str, path: Path) -> np.ndarray:
    for k in keys:
        if k in arrays:
            return arrays[k]
    raise InvalidInputError(f"{path} has no {what} array (looked for {', '.join(keys)}; found "
                            f"{', '.join(arrays) or 'none'}); save them as np.savez(path, x=inputs, y=labels).")


def _npz(path: Path) -> tuple[Tensor, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        raise InvalidInputError(f"{path} needs object arrays ({exc}); save numeric arrays only.") from None
    return torch.from_numpy(_pick(arrays, X_KEYS, "inputs", path)), torch.from_numpy(_pick(arrays, Y_KEYS, "labels",
                                                                                           path))


def _torch_file(path: Path) -> tuple[Tensor, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(f"{path} cannot be read as plain tensors ({type(exc).__name__}); save a dict "
                                "{'x': inputs, 'y': labels} or a tuple (inputs, labels) with torch.save.") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return torch.as_tensor(obj[0]), torch.as_tensor(obj[1])
    if isinstance(obj, dict):
        arrays = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        return _pick(arrays, X_KEYS, "inputs", path), _pick(arrays, Y_KEYS, "labels", path)  # type: ignore[arg-type]
    raise InvalidInputError(f"{path} holds a {type(obj).__name__}; save {{'x': inputs, 'y': labels}}.")


def _csv(path: Path, label_column: str | None) -> tuple[Tensor, Tensor, tuple[str, ...] | None]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise InvalidInputError(f"{path} needs a header row and at least one data row.")
    header, body = rows[0], rows[1:]
    name = label_column or next((c for c in header if c.strip().lower() in ("label", "class", "target", "y")), None)
    if name is None or name not in header:
        raise InvalidInputError(f"{path}: no label column {name or '(label/class/target/y)'} in the header "
                                f"{header[:8]}; name it with --label-column.")
    col = header.index(name)
    labels = [r[col] for r in body]
    try:
        feats = np.array([[float(v) for i, v in enumerate(r) if i != col] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"{path}: a feature value is not a number ({exc}); encode categories as numbers "
                                "(e.g. one-hot) first.") from None
    try:
        y = np.array([int(float(v)) for v in labels])
        classes = None
    except ValueError:  # class names: indices in sorted order
        classes = tuple(sorted(set(labels)))
        y = np.array([classes.index(v) for v in labels])
    return torch.from_numpy(feats), torch.from_numpy(y), classes


def _image_folder(path: Path) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    from PIL import Image

    classes = tuple(sorted(d.name for d in path.iterdir() if d.is_dir()))
    if not classes:
        raise InvalidInputError(f"{path} has no class sub-folders; put each class's images in a folder of its own.")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"), dtype=np.float32)
                xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
                ys.append(label)
    if not xs:
        raise InvalidInputError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders.")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise InvalidInputError(f"{path}: images differ in size or channels {sorted(shapes)[:3]}; resize them to one "
                                "size first.")
    return torch.from_numpy(np.stack(xs) / 255.0), torch.tensor(ys), classes
