"""Request validation: each check a ``BadRequest`` with an HTTP 4xx status and a message naming the fix.

Order (cheapest first): body size (before it is read), nesting depth (on the raw bytes, vectorized, before the
JSON parser can recurse), JSON syntax, literals (``NaN``/``Infinity``/``true``/``null`` are not numbers here), the
fields, the shape, then range.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

_LITERAL = re.compile(rb"\b(true|false|null)\b")


class BadRequest(Exception):
    """A request refused with ``status`` (4xx), a short ``reason`` (the metrics label) and a ``message``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass(frozen=True)
class Limits:
    """``max_body`` bytes per request, ``max_depth`` levels of ``[``/``{``, ``max_batch`` inputs per request."""

    max_body: int = 32 * 2**20
    max_depth: int = 8
    max_batch: int = 1000


def nesting_depth(body: bytes) -> int:
    """The deepest ``[``/``{`` nesting in ``body`` (brackets inside strings count too: an upper bound)."""
    raw = np.frombuffer(body, dtype=np.uint8)
    step = np.isin(raw, (ord("["), ord("{"))).astype(np.int32) - np.isin(raw, (ord("]"), ord("}"))).astype(np.int32)
    return int(step.cumsum().max()) if raw.size else 0


def parse_json(body: bytes, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object, after the depth and literal checks."""
    if len(body) > limits.max_body:
        raise BadRequest(413, "body_too_large", f"the body has {len(body)} bytes, over the limit of "
                         f"{limits.max_body}; send smaller batches")
    depth = nesting_depth(body)
    if depth > limits.max_depth:
        raise BadRequest(400, "too_deep", f"the JSON nests {depth} levels deep, over the limit of {limits.max_depth}; "
                         "send inputs as nested lists of the model's input shape")
    if _LITERAL.search(body):
        raise BadRequest(422, "dtype", "the body holds true, false or null; inputs must be numbers")

    def no_constant(name: str) -> None:
        raise BadRequest(422, "nan", f"the body holds {name}; inputs must be finite numbers")

    try:
        data = json.loads(body, parse_constant=no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, "malformed_json", f"the body is not valid JSON ({err}); send a JSON object") from None
    except RecursionError:
        raise BadRequest(400, "too_deep", "the JSON nests too deep; send nested lists of the input shape") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "schema", f"the body is a JSON {type(data).__name__}, not an object; send "
                         '{"inputs": [...], "shape": [...]}')
    return data


def to_tensor(values: Any, what: str) -> Tensor:
    """Nested lists of numbers as a float64 tensor; ragged lists or non-numbers are a 422."""
    if not isinstance(values, list):
        raise BadRequest(422, "schema", f"{what} must be a list of nested lists of numbers")
    try:
        out = torch.tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise BadRequest(422, "dtype", f"{what} must be nested lists of numbers of one shape ({err})") from None
    if not torch.isfinite(out).all():
        raise BadRequest(422, "nan", f"{what} holds NaN or infinite values; send finite numbers")
    return out


def check_inputs(x: Tensor, input_shape: Sequence[int], limits: Limits, lower: float | None,
                 upper: float | None) -> Tensor:
    """``x`` must be ``(N, *input_shape)`` with ``1 <= N <= max_batch`` and values in ``[lower, upper]``."""
    want = tuple(input_shape)
    if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise BadRequest(422, "shape", f"inputs have shape {list(x.shape)}; the model takes [N, "
                         f"{', '.join(map(str, want))}]")
    if not 1 <= x.shape[0] <= limits.max_batch:
        raise BadRequest(413, "batch_too_large", f"a batch of {x.shape[0]} inputs; send 1..{limits.max_batch}")
    if (lower is not None and x.min() < lower) or (upper is not None and x.max() > upper):
        raise BadRequest(422, "range", f"inputs range over [{x.min():g}, {x.max():g}]; the model takes values in "
                         f"[{lower}, {upper}]")
    return x


def predict_request(data: dict[str, Any], input_shape: Sequence[int], limits: Limits, lower: float | None,
                    upper: float | None) -> Tensor:
    """The ``/predict`` body (``{"inputs": ..., "shape": [...]}``, bastion's ``--target`` protocol) as a batch."""
    extra = set(data) - {"inputs", "shape"}
    if "inputs" not in data or extra:
        raise BadRequest(422, "schema", 'send {"inputs": nested lists, "shape": [N, ...]}'
                         + (f"; unknown fields {sorted(extra)}" if extra else "; inputs is missing"))
    x = to_tensor(data["inputs"], "inputs")
    shape = data.get("shape")
    if shape is not None and (not isinstance(shape, list) or [type(s) for s in shape] != [int] * len(shape)
                              or list(x.shape) != shape):
        raise BadRequest(422, "shape", f"shape {shape!r} does not match the inputs' shape {list(x.shape)}")
    return check_inputs(x, input_shape, limits, lower, upper)


def batch_request(data: dict[str, Any], input_shape: Sequence[int], limits: Limits, lower: float | None,
                  upper: float | None) -> Tensor:
    """The ``/predict/batch`` body (``{"instances": [x_1, ..., x_N]}``, each one input) as a batch."""
    if set(data) != {"instances"}:
        raise BadRequest(422, "schema", 'send {"instances": [input, ...]}, each input nested lists of the model\'s '
                         "input shape")
    return check_inputs(to_tensor(data["instances"], "instances"), input_shape, limits, lower, upper)
