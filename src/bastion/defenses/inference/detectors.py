"""Detectors that reject: feature squeezing (Xu et al. 2018) and Mahalanobis (Lee et al. 2018).

A detector-defended model returns ``num_classes + 1`` logits; the last ("reject") logit wins exactly when
the detector's score exceeds its threshold, and the model has ``reject_class = num_classes``. The
evaluation runner then counts an attack as successful only if the example is misclassified *and* not
rejected, and a rejected clean input as misclassified (``false_rejection_rate`` reports that rate).
Thresholds are set on clean data for a 5% false-positive rate, as in both papers.

- Feature-squeezing detector: Xu, Evans & Qi 2018 (NDSS), score = max over squeezers of
  ||softmax(f(x)) - softmax(f(squeeze(x)))||_1; MNIST squeezers: 1-bit depth and 2x2 median filter
  (the paper's best MNIST joint detector also uses 3x3 median).
- Mahalanobis detector: Lee, Lee, Lee & Shin 2018, "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples and Adversarial Attacks", NeurIPS: class-conditional Gaussians with a tied
  covariance on the penultimate features; score = -max_c of the negative Mahalanobis distance. (Simplified:
  one layer, no input pre-processing, no logistic-regression ensemble over layers.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from bastion.attacks.adaptive import bpda
from bastion.data.base import Split
from bastion.defenses.inference.base import logits_and_features, register_defense, with_reject
from bastion.defenses.inference.squeeze import BitDepth, MedianFilter

FS_PAPER = "Xu, Evans & Qi 2018, Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks"
MAHA_PAPER = ("Lee et al. 2018, A Simple Unified Framework for Detecting Out-of-Distribution Samples and "
              "Adversarial Attacks")


def threshold_for(scores: Tensor, fpr: float = 0.05) -> float:
    """The score above which a fraction ``fpr`` of the (clean) ``scores`` lie."""
    return float(torch.quantile(scores.double().flatten(), 1.0 - fpr))


class Detector(nn.Module, ABC):
    """Base of the two detectors: ``score(x)`` and the reject logit. Subclasses define ``scores``."""

    def __init__(self, model: nn.Module, num_classes: int, sharpness: float = 100.0) -> None:
        super().__init__()
        self.model = model
        self.reject_class = num_classes
        self.sharpness = sharpness
        self.register_buffer("threshold", torch.tensor(float("inf")))

    @abstractmethod
    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits of the wrapped model, detector score; higher means more suspicious)."""

    def score(self, x: Tensor) -> Tensor:
        return self.scores(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        logits, score = self.scores(x)
        return with_reject(logits, score, self.threshold.to(logits), self.sharpness)

    @torch.no_grad()
    def calibrate(self, x: Tensor, fpr: float = 0.05, batch_size: int = 500) -> Detector:
        """Set the threshold so that a fraction ``fpr`` of the clean inputs ``x`` is rejected."""
        s = torch.cat([self.score(x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])
        self.threshold.fill_(threshold_for(s, fpr))
        return self


class SqueezeDetector(Detector):
    """Xu et al.'s joint detector: the L1 distance between prediction vectors, max over squeezers."""

    def __init__(self, model: nn.Module, num_classes: int, squeezers: list[nn.Module], sharpness: float = 100.0
                 ) -> None:
        super().__init__(model, num_classes, sharpness)
        self.squeezers = nn.ModuleList(squeezers)

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(x)
        p = logits.softmax(1)
        dist = [(p - self.model(s(x)).softmax(1)).abs().sum(1) for s in self.squeezers]
        return logits, torch.stack(dist).amax(0)


class MahalanobisDetector(Detector):
    """Min over classes of the Mahalanobis distance of the penultimate features (tied covariance)."""

    def __init__(self, model: nn.Module, num_classes: int, means: Tensor, precision: Tensor,
                 sharpness: float = 1.0) -> None:
        super().__init__(model, num_classes, sharpness)
        self.register_buffer("means", means)
        self.register_buffer("precision", precision)

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, feats = logits_and_features(self.model, x)
        diff = feats[:, None, :] - self.means.to(feats)[None]  # (N, K, D)
        d2 = torch.einsum("nkd,de,nke->nk", diff, self.precision.to(feats), diff)
        return logits, d2.amin(1)


class JointSurrogate(nn.Module):
    """What an adaptive attacker attacks instead of a feature-squeezing detector (He, Wei, Chen, Carlini & Song
    2017, "Adversarial Example Defenses: Ensembles of Weak Defenses are not Strong"): the sum of the
    log-probabilities on x and on every squeezed x (squeezers with an identity backward pass, BPDA), without the
    reject logit. Ascending a loss on it drives the raw and the squeezed predictions to the same wrong class,
    which closes the L1 gaps the detector measures. The runner re-checks every example on the real detector."""

    def __init__(self, detector: SqueezeDetector) -> None:
        super().__init__()
        self.model = detector.model
        self.squeezers = nn.ModuleList([bpda(s) for s in detector.squeezers])

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x).log_softmax(1)
        for s in self.squeezers:
            out = out + self.model(s(x)).log_softmax(1)
        return out


class RejectCountsForEveryClass(nn.Module):
    """Adaptive surrogate for a differentiable detector (Carlini & Wagner 2017, "Adversarial Examples Are Not
    Easily Detected"): K logits log(p_i + p_reject). A rejection raises every class alike, so a loss on the true
    class is high only where some other class beats both the true class and the reject logit: the attack has to
    change the class *and* keep the detector quiet. No labels needed, so any attack runs on it unchanged."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor) -> Tensor:
        p = self.detector(x).softmax(1)
        return (p[:, :-1] + p[:, -1:]).clamp_min(1e-30).log()


def detector_aware_surrogate(defended: nn.Module) -> nn.Module | None:
    """The detector-aware surrogate for a detector-defended model (``None`` for other models)."""
    if isinstance(defended, SqueezeDetector):
        return JointSurrogate(defended)
    if getattr(defended, "reject_class", None) is not None:
        return RejectCountsForEveryClass(defended)
    return None


@torch.no_grad()
def fit_gaussians(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, batch_size: int = 500,
                  shrinkage: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Class means and the tied-covariance precision of the penultimate features (Lee et al., eq. 1)."""
    feats = torch.cat([logits_and_features(model, x[i:i + batch_size])[1] for i in range(0, len(x), batch_size)])
    feats = feats.double()
    means = torch.stack([feats[y == c].mean(0) if (y == c).any() else feats.mean(0) for c in range(num_classes)])
    centred = feats - means[y]
    cov = centred.T @ centred / len(feats)
    cov += shrinkage * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
    return means.float(), torch.linalg.inv(cov).float()


def _num_classes(model: nn.Module, data: Split) -> int:
    with torch.no_grad():
        return int(model(data.x[:2]).shape[1])


def _calibration(data: Split | None, what: str, n: int) -> Split:
    if data is None:
        from bastion.errors import InvalidInputError

        raise InvalidInputError(f"The {what} sets its threshold on clean data: pass data=Split(x, y) (the CLI passes "
                                "the model's validation split).")
    return Split(data.x[:n], data.y[:n])


@register_defense("feature-squeezing-detector", paper=FS_PAPER, kind="detection", randomized=False,
                  differentiable=False, needs_data=True, clean_drop=0.08,
                  description="Reject when the L1 gap between softmax on x and on squeezed x (1-bit, 2x2 median) "
                              "exceeds the 5%-FPR threshold.")
def build_squeeze_detector(model: nn.Module, *, data: Split | None = None, bits: int = 1, median: int = 2,
                           fpr: float = 0.05, calibration_points: int = 1000) -> nn.Module:
    cal = _calibration(data, "feature-squeezing detector", calibration_points)
    squeezers: list[nn.Module] = ([BitDepth(bits)] if bits else []) + ([MedianFilter(median)] if median > 1 else [])
    if not squeezers:
        raise ValueError("the feature-squeezing detector needs a squeezer: bits >= 1 or median >= 2")
    det = SqueezeDetector(model, _num_classes(model, cal), squeezers)
    return det.eval().calibrate(cal.x, fpr)


@register_defense("mahalanobis-detector", paper=MAHA_PAPER, kind="detection", randomized=False,
                  differentiable=True, needs_data=True, clean_drop=0.08,
                  description="Reject when the penultimate features are far (Mahalanobis, tied covariance) from "
                              "every class mean; 5%-FPR threshold.")
def build_mahalanobis(model: nn.Module, *, data: Split | None = None, fpr: float = 0.05,
                      fit_points: int = 5000, calibration_points: int = 1000) -> nn.Module:
    if data is None:
        _calibration(data, "Mahalanobis detector", 0)
    assert data is not None
    k = _num_classes(model, data)
    fit = Split(data.x[:fit_points], data.y[:fit_points])
    means, precision = fit_gaussians(model, fit.x, fit.y, k)
    det = MahalanobisDetector(model, k, means, precision)
    held = data.x[fit_points:fit_points + calibration_points]
    return det.eval().calibrate(held if len(held) >= 50 else fit.x[:calibration_points], fpr)
