"""Hybrid pipelines: compose detectors, purifiers, preprocessors, ensembles and a (robust) model from a config.

A config (dict or YAML file, validated with pydantic)::

    model: mnist-cnn                 # zoo name or checkpoint path
    steps:                           # outermost first: the input meets steps[0] first
      - defense: feature-squeezing-detector
        params: {fpr: 0.05}
      - defense: diffpure
        params: {t_star: 0.3}

builds ``detector(diffpure(model))``: the detector compares the purified classifier's predictions on the
input and on its squeezed versions, and a rejection from it is the pipeline's rejection. A detection step
must come first (a rejecting model inside another defense would leak its extra logit into it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from bastion.data.base import Split
from bastion.defenses.inference.base import DEFENSES, register_defense


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defense: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("defense")
    @classmethod
    def _known(cls, name: str) -> str:
        DEFENSES.get(name)  # raises with suggestions
        if name == "pipeline":
            raise ValueError("a pipeline step cannot itself be a pipeline; list its steps instead")
        return name


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="zoo name or checkpoint; None when building around a given model")
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _detector_first(self) -> PipelineConfig:
        late = [s.defense for s in self.steps[1:] if DEFENSES.get(s.defense).kind == "detection"]
        if late:
            raise ValueError(f"detection steps must come first (outermost); move {late} to the front")
        return self


def load_config(source: str | Path | dict[str, Any]) -> PipelineConfig:
    """A validated pipeline config from a dict, a YAML/JSON file path, or a YAML string."""
    import yaml

    if isinstance(source, dict):
        return PipelineConfig.model_validate(source)
    text = Path(source).read_text() if Path(str(source)).exists() else str(source)
    return PipelineConfig.model_validate(yaml.safe_load(text))


def build_pipeline(config: PipelineConfig | dict[str, Any] | str | Path, model: nn.Module | None = None, *,
                   data: Split | None = None) -> nn.Module:
    """Build the defended model: ``steps[0](steps[1](... (model)))``. ``data`` goes to the steps that need it."""
    cfg = config if isinstance(config, PipelineConfig) else load_config(config)
    if model is None:
        if cfg.model is None:
            from bastion.errors import InvalidInputError

            raise InvalidInputError("The pipeline config names no model; add `model: NAME` or pass model=.")
        from bastion.zoo import load_model

        model = load_model(cfg.model)[0]
    built = model
    for step in reversed(cfg.steps):
        spec = DEFENSES.get(step.defense)
        extra = {"data": data} if spec.needs_data and "data" not in step.params else {}
        built = spec.build(built, **step.params, **extra).eval()
    return built


@register_defense("pipeline", paper="composition of the registered defenses", kind="hybrid", randomized=False,
                  differentiable=False, needs_data=True, clean_drop=0.10,
                  description="Compose defenses from a config: -p config=FILE.yaml or -p steps='[...]' (outermost "
                              "first). Randomized/differentiable depend on the steps.")
def build_pipeline_defense(model: nn.Module, *, data: Split | None = None, config: str | dict[str, Any] | None = None,
                           steps: list[dict[str, Any]] | None = None) -> nn.Module:
    source: Any = config if config is not None else {"steps": steps or []}
    cfg = load_config(source)
    return build_pipeline(cfg, model, data=data)
