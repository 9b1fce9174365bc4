"""The types of the forgetting experiment's settings (``experiments/bench_forgetting.yaml``), checked by
jsonargparse as the benchmark protocol is (:mod:`multifeat.bench.schema`).

Types only: the values live in the YAML file, the one place of the defaults. Every field is required,
so a missing key is an error as much as an unknown one (the ``= None`` of a field that may be null is
not a default: jsonargparse needs it to accept an explicit null).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jsonargparse import ArgumentParser

from multifeat.bench.schema import ClassifierSection, DcganSection, NegativeBankSection, parse_with


@dataclass(kw_only=True)
class GridSection:
    f: list[Literal["identity", "hinge"]]
    beta2: list[float]


@dataclass(kw_only=True)
class DataSection:
    num_samples: int
    batch_size: int
    cache: bool


@dataclass(kw_only=True)
class Phase1Section:
    steps: int
    negative_bank: NegativeBankSection


@dataclass(kw_only=True)
class Phase3Section:
    epochs: int
    switch_epoch: int
    add_blocks: dict[int, int]
    alpha: list[float]
    beta1: float
    f_tau: float
    adain_at: str
    snapshot_source: Literal["live", "ema"]
    snapshot_ema_decay: float
    d2_views: int
    d2_view_p: float
    eval_every: int


@dataclass(kw_only=True)
class EvalSection:
    n: int
    noise_seed: int
    threshold: float


@dataclass(kw_only=True)
class EvaluatorSection:
    path: str | None = None
    seed: int
    max_steps: int
    num_samples: int
    width: int
    max_width: int
    cache_dir: str | None = None


@dataclass(kw_only=True)
class QuickSection:
    seeds: list[int] | None = None
    grid: dict[str, list[Any]] | None = None
    variants: list[str] | None = None


@dataclass(kw_only=True)
class Forgetting:
    features: list[str]
    image_size: int
    seeds: list[int]
    grid: GridSection
    variants: list[Literal["b0", "c0", "c", "d_h", "d_g3"]]
    accelerator: str
    precision: str | None = None
    threads: int | None = None
    data: DataSection
    gan: DcganSection
    phase1: Phase1Section
    phase2: ClassifierSection       # the same D2 settings as the benchmark's method_a.phase2
    phase3: Phase3Section
    eval: EvalSection
    evaluator: EvaluatorSection
    quick: QuickSection | None = None


_PARSER: ArgumentParser | None = None


def parse_forgetting(cfg: dict[str, Any], where: str = "forgetting config") -> dict[str, Any]:
    """``cfg`` type-checked against :class:`Forgetting`; returns the parsed values as nested dicts. A
    :class:`~multifeat.errors.ConfigError` names the key and what it expects."""
    global _PARSER
    if _PARSER is None:
        _PARSER = ArgumentParser(exit_on_error=False)
        _PARSER.add_class_arguments(Forgetting)
    return parse_with(_PARSER, cfg, where)


__all__ = ["Forgetting", "parse_forgetting"]
