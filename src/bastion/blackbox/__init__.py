"""Black-box and gray-box evaluation: targets seen through scores or labels only, a JSON endpoint client
and reference server, query curves, and surrogate training for transfer attacks.

The attacks themselves live in ``bastion.attacks`` (``square``, ``nes``, ``spsa``, ``zoo``,
``hopskipjump``, ``boundary``, ``mi-fgsm``). Surrogates: ``bastion.blackbox.transfer``.
"""

from bastion.blackbox.http import ModelServer, RemoteModel, serve_model
from bastion.blackbox.metrics import QueryCurve, queries_to_success, query_curve
from bastion.blackbox.target import (
    LabelTarget,
    RemoteTargetError,
    ScoresUnavailableError,
    ScoreTarget,
    query_labels,
)

__all__ = [
    "LabelTarget",
    "ModelServer",
    "QueryCurve",
    "RemoteModel",
    "RemoteTargetError",
    "ScoreTarget",
    "ScoresUnavailableError",
    "queries_to_success",
    "query_curve",
    "query_labels",
    "serve_model",
]
