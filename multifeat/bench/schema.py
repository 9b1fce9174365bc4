"""The types of the benchmark protocol, section by section: what jsonargparse checks a resolved
protocol against (:func:`parse_protocol`).

The dataclasses hold types only, no values: the values live in the YAML files
(``multifeat/bench/protocols/synth.yaml`` and the presets), the one place of the defaults. Every
field is required, so a key missing from a protocol is an error as much as an unknown one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from jsonargparse import ArgumentError, ArgumentParser

from multifeat.errors import ConfigError

# The ``= None`` of the fields that may be null is not a default value: jsonargparse treats a required field
# given as null as missing, so a field that may be null needs one. The YAML files still set every key
# (a protocol is the default protocol merged with the given files, and unknown keys are refused there).


@dataclass(kw_only=True)
class DataSection:
    source: Literal["synthetic", "celeba"]
    root: str | None = None
    derived: dict[str, list[str]] | None = None
    num_samples: int
    joint_fraction: float | None = None
    cache: bool
    batch_size: int
    num_workers: int


@dataclass(kw_only=True)
class EvaluatorSection:
    seed: int
    max_steps: int
    num_samples: int
    width: int
    max_width: int
    cache_dir: str | None = None
@dataclass(kw_only=True)
class EvalSection:
    n: int
    n_real: int
    real_seed: int
    sample_seed: int
    extractor: Literal["auto", "inception", "evaluator"]
    inception_weights: str | None = None
    batch_size: int
    kid_subsets: int
    kid_subset_size: int
    grid_per_seed: int


@dataclass(kw_only=True)
class DcganSection:
    """The DCGAN's sizes, learning rate and EMA (the benchmark's ``gan``, the forgetting experiment's ``gan``)."""

    z_dim: int
    g_width: int
    d_width: int
    max_width: int
    norm_d: str
    lr: float
    ema_decay: float | None = None
    ema_rampup: float | None = None
    upsample: Literal["transpose", "nearest"]


@dataclass(kw_only=True)
class GanSection(DcganSection):
    augment: str | None = None
    steps: int


@dataclass(kw_only=True)
class NegativeBankSection:
    first_steps: int
    every_n_steps: int
    per_save: int
    max_images: int


@dataclass(kw_only=True)
class ClassifierSection:
    width: int
    max_width: int
    lr: float
    num_samples: int
    epoch_size: int
    epochs: int
    val_fraction: float


@dataclass(kw_only=True)
class Phase3Section:
    num_samples: int
    epochs: int
    snapshot_epoch: int
    add_blocks: dict[int, int]
    alpha: list[float]
    beta: list[float]
    f: str
    f_tau: float
    adain_at: str
    adain_content: str
    d2_views: int
    d2_view_p: float


@dataclass(kw_only=True)
class MethodASection:
    negative_bank: NegativeBankSection
    phase2: ClassifierSection
    phase3: Phase3Section


@dataclass(kw_only=True)
class StyleGANSection:
    z_dim: int
    w_dim: int
    mapping_layers: int
    channel_base: int
    channel_max: int
    lr: float
    augment: str | None = None
    batch_size: int
    steps: int


@dataclass(kw_only=True)
class MethodBSection:
    stylegan: StyleGANSection
    classifier: ClassifierSection
    styles: Literal["sampled", "projected"]  # projected (default): held-out targets, the paper's; sampled: not
    pool_factor: int
    truncation_psi: float
    project_steps: int
    project_space: Literal["w", "w+"]
    w_avg_samples: int
    search: str
    combine: str
    penalty_weight: float
    distance: str
    batch_size: int


@dataclass(kw_only=True)
class CGanSection:
    embed_dim: int
    norm_d: str
    steps: int | None = None  # null: gan.steps


@dataclass(kw_only=True)
class JointGanSection:
    num_samples: int | None = None  # null: every joint image of the source


@dataclass(kw_only=True)
class Protocol:
    protocol: str
    features: list[str]
    image_size: int
    seeds: list[int] | str  # a list, or "0,1,2"
    methods: list[str] | str
    accelerator: str
    precision: str | int | None = None
    threads: int | None = None
    data: DataSection
    evaluator: EvaluatorSection
    eval: EvalSection
    gan: GanSection
    method_a: MethodASection
    method_b: MethodBSection
    cgan: CGanSection
    joint_gan: JointGanSection


_PARSER: ArgumentParser | None = None


def _parser() -> ArgumentParser:
    global _PARSER
    if _PARSER is None:
        _PARSER = ArgumentParser(exit_on_error=False)
        _PARSER.add_class_arguments(Protocol)
    return _PARSER


def parse_with(parser: ArgumentParser, cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """``cfg`` parsed by ``parser`` (built from typed dataclasses) as nested dicts; a :class:`ConfigError`
    that names ``where``, the key and what it expects."""
    try:
        return parser.parse_object(cfg).as_dict()
    except ArgumentError as e:
        msg = " ".join(str(e).split())
        key = re.search(r'Parser key "([^"]+)": ', msg)
        if key:
            msg = f"{key.group(1)}: {msg[key.end():]}"
        raise ConfigError(f"{where}: {msg}") from e


def parse_protocol(cfg: dict[str, Any], where: str = "benchmark config") -> dict[str, Any]:
    """``cfg`` parsed and type-checked against :class:`Protocol` by jsonargparse; returns the parsed values
    as nested dicts. A :class:`ConfigError` names the key and what it expects."""
    return parse_with(_parser(), cfg, where)


__all__ = ["ClassifierSection", "DcganSection", "NegativeBankSection", "Protocol", "parse_protocol", "parse_with"]
