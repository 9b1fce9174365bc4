"""Forgetting curves of Method A: the bald, beard and joint rates of G3 through a long phase 3.

The experiment (``multifeat forgetting``, ``experiments/bench_forgetting.yaml``, ``docs/forgetting.md``):

- per seed, one G1 (phase 1 on bald faces without beards, with the negative bank) and one D2 (phase 2:
  bald against not bald, both sides beardless), shared by every phase-3 run of the seed;
- per seed, ``b0``: G3 grown from G1 on beard faces only, without the D2 terms (alpha3 = beta2 = 0);
- per (seed, f, beta2), a phase-3 **trunk** with the paper's losses on beard faces up to the switch point,
  saved as a full checkpoint (weights, optimizer states, loop counters, random states), and the
  **branches** continued from it: ``c0`` (no switch), ``c`` (data switch to bald faces),
  ``d_h`` / ``d_g3`` (switch + AdaIN with the snapshot H, content H or content G3). Up to the switch
  point these runs are the same run, so it is trained once;
- every ``eval_every`` batches (and at batch 0) the judge rates ``eval.n`` fixed-noise samples of G3;
  the samples are kept as uint8 tensors (``samples/<run>.pt``: ``{step: [n, 3, S, S]}``) so another
  judge can rate them later without training again.

Every (variant, f, beta2, seed) writes its record ``records/<key>.json`` atomically; a re-run skips
the finished records, reuses the finished trunks and shared phases, so a killed run loses at most
the branch it was training.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from multifeat.bench.forgetting_schema import parse_forgetting
from multifeat.bench.training import Context, fit, make_trainer, quiet, save_checkpoint, validation_metrics
from multifeat.data.guard import assert_no_joint
from multifeat.errors import ConfigError
from multifeat.utils.config import drop_at_values, read_yaml_mapping, set_dotted
from multifeat.utils.files import atomic_torch_save, atomic_write_text, ensure_writable_dir, file_sha256

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "bench_forgetting.yaml"
VARIANTS = ("b0", "c0", "c", "d_h", "d_g3")
BRANCHES = ("c0", "c", "d_h", "d_g3")  # continued from the trunk of their (seed, f, beta2)
#: keys that choose what is run, not how: they do not change the experiment's hash
_SELECTION_KEYS = ("seeds", "grid", "variants", "threads", "accelerator", "quick")
#: keys added after runs were published, at the value that does what the experiment did before them
#: (left out of the hash at that value: see multifeat.utils.config.drop_at_values)
LATER_KEYS: dict[str, Any] = {"gan.upsample": "transpose", "phase3.d2_views": 0, "phase3.d2_view_p": 0.8}


# ------------------------------------------------------------------------------------ config
def _merge(base: dict[str, Any], update: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if k not in out:
            raise ConfigError(f"{where}: unknown key '{k}'; expected one of {', '.join(map(str, out))}")
        out[k] = _merge(out[k], v, f"{where}.{k}") if isinstance(v, dict) and isinstance(out[k], dict) and k != "add_blocks" \
            else copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike | None = None, quick: bool = False, overrides: list[str] | tuple = ()) -> dict[str, Any]:
    """The experiment's values: ``experiments/bench_forgetting.yaml`` (the defaults), then ``path`` merged on
    top key by key, then its ``quick:`` section with ``quick``, then ``KEY=VALUE`` overrides. Validated."""
    cfg = read_yaml_mapping(DEFAULT_CONFIG, "forgetting config", "of experiment settings")
    if path is not None:
        cfg = _merge(cfg, read_yaml_mapping(path, "forgetting config", "of experiment settings"), str(path))
    if quick:
        cfg = _merge(cfg, cfg.get("quick") or {}, f"{path or DEFAULT_CONFIG}: quick")
    for item in overrides:
        set_dotted(cfg, item, create=False, example="phase3.epochs=40", what="forgetting config")
    return validate_config(parse_forgetting(cfg))


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    bad = [v for v in cfg["variants"] if v not in VARIANTS]
    if bad or not cfg["variants"]:
        raise ConfigError(f"variants: unknown {bad or 'empty list'}; expected some of {', '.join(VARIANTS)}")
    if not cfg["seeds"] or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in cfg["seeds"]):
        raise ConfigError(f"seeds must be a non-empty list of integers >= 0, got {cfg['seeds']!r}")
    for f in cfg["grid"]["f"]:
        if f not in ("identity", "hinge"):
            raise ConfigError(f"grid.f: '{f}' is not a known f; expected identity or hinge")
    if not cfg["grid"]["f"] or not cfg["grid"]["beta2"]:
        raise ConfigError("grid.f and grid.beta2 must each list at least one value")
    p3 = cfg["phase3"]
    e, s, k = int(p3["epochs"]), int(p3["switch_epoch"]), int(p3["eval_every"])
    if not 0 < s < e:
        raise ConfigError(f"phase3.switch_epoch must lie inside the run (0 < switch_epoch < epochs={e}), got {s}")
    bpe = batches_per_epoch(cfg)
    if k < 1 or (s * bpe) % k:
        raise ConfigError(f"phase3.eval_every={k} must divide the switch batch {s * bpe} (switch_epoch {s} x {bpe} batches "
                          "per epoch), so every run is judged at the switch point")
    if len(cfg["features"]) != 2:
        raise ConfigError(f"features must name feature 1 and feature 2, got {cfg['features']!r}")
    return cfg


def batches_per_epoch(cfg: dict[str, Any]) -> int:
    """Batches per phase-3 epoch (the loader keeps a short last batch)."""
    n, b = int(cfg["data"]["num_samples"]), int(cfg["data"]["batch_size"])
    return -(-n // b)


def config_hash(cfg: dict[str, Any]) -> str:
    """Hash of everything that changes a run's numbers (not which runs are selected)."""
    c = copy.deepcopy({k: v for k, v in cfg.items() if k not in _SELECTION_KEYS})
    # the judge is identified by its file's sha256 (checked on its own), not by where the file lies
    c["evaluator"] = {k: (None if k == "path" else v) for k, v in c["evaluator"].items() if k != "cache_dir"}
    drop_at_values(c, LATER_KEYS)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    """One record: a variant, its (f, beta2) (None for b0) and a seed."""

    variant: str
    seed: int
    f: str | None = None
    beta2: float | None = None

    @property
    def key(self) -> str:
        return f"b0-s{self.seed}" if self.variant == "b0" else f"{self.variant}-{self.f}-b{self.beta2:g}-s{self.seed}"

    @property
    def trunk_key(self) -> str:
        return f"trunk-{self.f}-b{self.beta2:g}-s{self.seed}"


def planned_runs(cfg: dict[str, Any]) -> list[Run]:
    """The records in running order: per (f, beta2) of the grid, every seed (b0 with the first cell)."""
    out: list[Run] = []
    cells = [(f, float(b)) for b in cfg["grid"]["beta2"] for f in cfg["grid"]["f"]]
    for i, (f, b2) in enumerate(cells):
        for seed in cfg["seeds"]:
            if i == 0 and "b0" in cfg["variants"]:
                out.append(Run("b0", int(seed)))
            out += [Run(v, int(seed), f, b2) for v in BRANCHES if v in cfg["variants"]]
    return out


# ------------------------------------------------------------------------------------ the judge


class Judge:
    """The attribute evaluator that rates every sample of the experiment, with its file and hash."""

    def __init__(self, evaluator, path: str | os.PathLike, features: list[str], threshold: float = 0.5) -> None:
        missing = [f for f in features if f not in evaluator.attributes]
        if missing:
            raise ConfigError(f"evaluator '{path}' does not rate {missing}; it rates {list(evaluator.attributes)}")
        self.evaluator = evaluator
        self.path = str(path)
        self.sha256 = file_sha256(path)
        self.features = list(features)
        self.columns = [list(evaluator.attributes).index(f) for f in features]
        self.threshold = float(threshold)

    def info(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "val_accuracy": dict(getattr(self.evaluator, "val_accuracy", {}) or {})}

    def rates(self, images_uint8: torch.Tensor) -> dict[str, float]:
        """Feature 1, feature 2 and joint rates of ``images_uint8`` [N, 3, S, S] (uint8)."""
        from multifeat.eval.metrics import feature_rates, joint_rate

        x = images_uint8.float() / 127.5 - 1.0
        probs = self.evaluator.predict_proba(x)[:, self.columns]
        r = feature_rates(probs, self.features, self.threshold)
        return {self.features[0]: r[self.features[0]], self.features[1]: r[self.features[1]],
                "joint": joint_rate(probs, self.threshold)}


def load_judge(cfg: dict[str, Any], log: Callable[[str], None] = print) -> Judge:
    """The judge: the checkpoint at ``evaluator.path`` when set, else the package's default synthetic judge
    (:func:`~multifeat.eval.evaluator_cache.cached_evaluator`: the shipped weight file for this image size
    when the package has one, else the robust evaluator trained once with the ``evaluator`` settings and
    cached; its log line says which)."""
    from multifeat.eval.evaluator import DEFAULT_ATTRIBUTES, load_evaluator
    from multifeat.eval.evaluator_cache import cached_evaluator

    e = cfg["evaluator"]
    if e.get("path"):
        path = Path(e["path"])
        ev = load_evaluator(path)
    else:
        with quiet():
            ev, path = cached_evaluator(int(cfg["image_size"]), DEFAULT_ATTRIBUTES, cache_dir=e.get("cache_dir"),
                                        seed=int(e["seed"]), max_steps=int(e["max_steps"]), num_samples=int(e["num_samples"]),
                                        width=int(e["width"]), max_width=int(e["max_width"]), log=log)
    ev.eval()
    return Judge(ev, path, list(cfg["features"]), float(cfg["eval"]["threshold"]))


def evaluation_noise(cfg: dict[str, Any]) -> torch.Tensor:
    """The fixed noise every evaluation point (and G1's rates) samples: ``eval.n`` x ``z_dim``, seed ``eval.noise_seed``."""
    g = torch.Generator().manual_seed(int(cfg["eval"]["noise_seed"]))
    return torch.randn(int(cfg["eval"]["n"]), int(cfg["gan"]["z_dim"]), generator=g)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] (as a PNG would store them)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def state_hash(module) -> str:
    """Hash of a phase-3 module's trained state (G3, D3, the EMA of G3), to show branches start alike."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if name.startswith(("generator.", "discriminator.", "g3_ema.")):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Probe(Callback):
    """Rates G3's fixed-noise samples at batch 0 (a fresh run) and every ``every`` batches; records the
    hash of the state the fit starts from. Draws from no global random stream (training is unchanged)."""

    def __init__(self, judge: Judge, z: torch.Tensor, every: int, stage_of: Callable[[int], str]) -> None:
        self.judge, self.z, self.every, self.stage_of = judge, z, int(every), stage_of
        self.points: list[dict[str, Any]] = []
        self.samples: dict[int, torch.Tensor] = {}
        self.start_hash: str | None = None
        self.start_step: int | None = None

    def _judge(self, module, step: int) -> None:
        imgs = to_uint8(module.generate(self.z.to(module.device)))
        self.samples[step] = imgs
        with torch.no_grad():  # what the frozen D2 believes of the same (stored) images: does G3 fool it?
            d2 = module.d2_prob((imgs.float() / 127.5 - 1.0).to(module.device)).float().mean().item()
        self.points.append({"step": step, "stage": self.stage_of(step), "adain": bool(module.adain_active),
                            **{k: round(v, 6) for k, v in self.judge.rates(imgs).items()}, "d2_mean": round(d2, 6)})

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = int(trainer.global_step)
        self.start_hash = state_hash(pl_module)
        if self.start_step == 0:
            self._judge(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step % self.every == 0 and step not in self.samples:
            self._judge(pl_module, step)


# ------------------------------------------------------------------------------------ training
class Experiment:
    """Runs the planned records into ``out`` (see the module doc for the layout)."""

    def __init__(self, cfg: dict[str, Any], out: str | os.PathLike, judge: Judge, log: Callable[[str], None] = print) -> None:
        self.cfg, self.out, self.judge, self.log = cfg, Path(out), judge, log
        self.ctx = Context(config=cfg, features=tuple(cfg["features"]), log=log)
        self.hash = config_hash(cfg)
        self.bpe = batches_per_epoch(cfg)
        p3 = cfg["phase3"]
        self.epochs, self.switch = int(p3["epochs"]), int(p3["switch_epoch"])
        self.z = evaluation_noise(cfg)
        self._data: dict[int, Any] = {}
        for sub in ("records", "samples", "work"):
            ensure_writable_dir(self.out / sub)

    # -- files
    def record_path(self, run: Run) -> Path:
        return self.out / "records" / f"{run.key}.json"

    def _read_done(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        rec = json.loads(path.read_text())
        if rec.get("config_hash") != self.hash or rec.get("evaluator", {}).get("sha256") != self.judge.sha256:
            raise ConfigError(f"'{path}' was written with another config or judge (config {rec.get('config_hash')}, "
                              f"judge {rec.get('evaluator', {}).get('sha256', '?')[:12]}; now {self.hash}, "
                              f"{self.judge.sha256[:12]}): use another --out folder")
        return rec

    def _save_samples(self, name: str, samples: dict[int, torch.Tensor]) -> str:
        path = self.out / "samples" / f"{name}.pt"
        atomic_torch_save({int(k): v for k, v in sorted(samples.items())}, path)
        return str(path.relative_to(self.out))

    # -- data
    def _guard(self, data, what: str) -> dict[str, int]:
        return assert_no_joint(data, tuple(self.cfg["features"]), what)

    def _phase3_data(self, seed: int):
        """Beard faces without baldness, then bald faces without beards; one object per seed (rendered once)."""
        from multifeat.data.switching import SwitchingDataModule

        if seed not in self._data:
            f1, f2 = self.cfg["features"]
            d = self.cfg["data"]
            dm = SwitchingDataModule(before={f2: True, f1: False}, after={f1: True, f2: False}, source="synthetic",
                                     image_size=int(self.cfg["image_size"]), num_samples=int(d["num_samples"]),
                                     synthetic={"joint_fraction": 0.0, "cache": bool(d["cache"])},
                                     batch_size=int(d["batch_size"]), val_fraction=0.0, seed=int(seed))
            self._data[seed] = (dm, self._guard(dm, f"forgetting phase 3, seed {seed}"))
        return self._data[seed]

    # -- phases 1 and 2
    def shared(self, seed: int) -> dict[str, Any]:
        """G1 (+ negative bank) and D2 of ``seed`` (``work/s<seed>/shared.json`` marks them done)."""
        from multifeat.callbacks.negative_bank import NegativeBank
        from multifeat.data import AttributeDataModule, FeatureClassifierDataModule
        from multifeat.phases.feature_classifier import FeatureClassifier
        from multifeat.phases.phase1 import Phase1GAN

        root = self.out / "work" / f"s{seed}"
        marker = root / "shared.json"
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("config_hash") == self.hash:
                return done
        import lightning as L

        cfg, (f1, f2) = self.cfg, self.cfg["features"]
        g, d, size = cfg["gan"], cfg["data"], int(cfg["image_size"])
        t0 = time.perf_counter()
        L.seed_everything(int(seed), workers=True, verbose=False)  # G1's initial weights (torch's own seed differs per process)
        data1 = AttributeDataModule(source="synthetic", image_size=size, require={f1: True, f2: False},
                                    num_samples=int(d["num_samples"]), synthetic={"joint_fraction": 0.0, "cache": bool(d["cache"])},
                                    batch_size=int(d["batch_size"]), val_fraction=0.0, seed=int(seed))
        c1 = self._guard(data1, f"forgetting phase 1 ({f1} GAN), seed {seed}")
        g1 = Phase1GAN(image_size=size, z_dim=int(g["z_dim"]), g_width=int(g["g_width"]), d_width=int(g["d_width"]),
                       max_width=int(g["max_width"]), norm_d=str(g["norm_d"]), lr_g=float(g["lr"]), lr_d=float(g["lr"]), num_fixed=16,
                       ema_decay=None if g.get("ema_decay") is None else float(g["ema_decay"]),
                       ema_rampup=None if g.get("ema_rampup") is None else float(g["ema_rampup"]),
                       upsample=str(g["upsample"]))
        nb = cfg["phase1"]["negative_bank"]
        bank_dir = root / "phase1" / "negatives"
        bank = NegativeBank(bank_dir=str(bank_dir), first_steps=int(nb["first_steps"]), every_n_steps=int(nb["every_n_steps"]),
                            per_save=int(nb["per_save"]), max_images=int(nb["max_images"]), seed=int(seed), overwrite=True)
        tr1, _ = fit(self.ctx, g1, data1, root / "phase1", seed, callbacks=[bank], max_steps=int(cfg["phase1"]["steps"]))
        save_checkpoint(tr1, root / "phase1" / "final.ckpt")
        p2 = cfg["phase2"]
        data2 = FeatureClassifierDataModule(feature=f1, source="synthetic", image_size=size, bank_dir=str(bank_dir), degraded=True,
                                            num_samples=int(p2["num_samples"]), require={f2: False},
                                            synthetic={"joint_fraction": 0.0, "cache": bool(d["cache"])},
                                            batch_size=64, val_fraction=float(p2["val_fraction"]), seed=int(seed),
                                            epoch_size=int(p2["epoch_size"]))
        c2 = self._guard(data2, f"forgetting phase 2 (D2 for {f1}), seed {seed}")
        d2 = FeatureClassifier(image_size=size, feature=f1, width=int(p2["width"]), max_width=int(p2["max_width"]), lr=float(p2["lr"]))
        tr2, _ = fit(self.ctx, d2, data2, root / "phase2", seed, max_epochs=int(p2["epochs"]))
        save_checkpoint(tr2, root / "phase2" / "final.ckpt")
        g1.eval()
        g1_rates = self.judge.rates(to_uint8(g1.generate(self.z)))
        done = {"seed": int(seed), "config_hash": self.hash, "seconds": round(time.perf_counter() - t0, 2),
                "training_sets": {"phase1": c1, "phase2": c2}, "d2_val": validation_metrics(self.ctx, d2, data2, root / "phase2"),
                "g1_rates": g1_rates}
        atomic_write_text(marker, json.dumps(done, indent=2) + "\n")
        self.log(f"[forgetting] seed {seed}: G1 and D2 in {done['seconds']:.0f} s; G1 rates {_fmt(g1_rates)}; D2 {done['d2_val']}")
        return done

    # -- phase 3
    def _module(self, seed: int, variant: str, f: str, beta2: float):
        import lightning as L

        from multifeat.phases.phase3 import Phase3GAN

        L.seed_everything(int(seed), workers=True, verbose=False)  # any freshly initialised weight of G3 / D3
        p3 = self.cfg["phase3"]
        root = self.out / "work" / f"s{seed}"
        alpha = [float(a) for a in p3["alpha"]]
        beta = [float(p3["beta1"]), float(beta2)]
        if variant == "b0":
            alpha[2], beta[1] = 0.0, 0.0
        switch = variant in ("c", "d_h", "d_g3", "trunk")
        return Phase3GAN(g1_ckpt=str(root / "phase1" / "final.ckpt"), d2_ckpt=str(root / "phase2" / "final.ckpt"),
                         add_blocks={int(k): int(v) for k, v in dict(p3["add_blocks"]).items()}, alpha=alpha, beta=beta, f=f,
                         f_tau=float(p3["f_tau"]), lr_g=float(self.cfg["gan"]["lr"]), lr_d=float(self.cfg["gan"]["lr"]),
                         snapshot_epoch=self.switch if switch else None, switch_epoch=self.switch if switch else self.epochs,
                         snapshot_source=str(p3["snapshot_source"]), snapshot_ema_decay=float(p3["snapshot_ema_decay"]),
                         adain_enabled=variant in ("d_h", "d_g3"), adain_content="g3" if variant == "d_g3" else "h",
                         adain_at=str(p3["adain_at"]), num_fixed=16, d2_views=int(p3["d2_views"]),
                         d2_view_p=float(p3["d2_view_p"]))

    def _fit3(self, module, seed: int, root: Path, max_epochs: int, ckpt: Path | None = None) -> tuple[Probe, Any, float]:
        import lightning as L

        data, _ = self._phase3_data(seed)
        probe = Probe(self.judge, self.z, int(self.cfg["phase3"]["eval_every"]),
                      lambda step: "after" if module.data_switch_epoch is not None and step > module.data_switch_epoch * self.bpe
                      else "before")
        L.seed_everything(int(seed), workers=True, verbose=False)
        trainer = make_trainer(self.ctx, root, callbacks=[probe], max_epochs=max_epochs, reload_dataloaders_every_n_epochs=1)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*snapshot_epoch=.* is never reached.*")
            trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None, weights_only=False)
        if trainer.interrupted:
            raise KeyboardInterrupt
        return probe, trainer, time.perf_counter() - t0

    def trunk(self, run: Run) -> dict[str, Any]:
        """The (seed, f, beta2) trunk up to the switch point: ``work/s<seed>/<trunk>/trunk.ckpt`` + ``trunk.json``."""
        root = self.out / "work" / f"s{run.seed}" / run.trunk_key
        marker = root / "trunk.json"
        if marker.is_file() and (root / "trunk.ckpt").is_file():
            done = json.loads(marker.read_text())
            if done.get("config_hash") == self.hash and done.get("evaluator_sha256") == self.judge.sha256:
                return done
        module = self._module(run.seed, "trunk", run.f, run.beta2)
        probe, trainer, secs = self._fit3(module, run.seed, root, self.switch)
        ckpt = root / "trunk.ckpt"
        tmp = ckpt.with_name(f".{ckpt.name}.{os.getpid()}.tmp")
        try:
            trainer.save_checkpoint(str(tmp))
            os.replace(tmp, ckpt)
        finally:
            if tmp.exists():
                tmp.unlink()
        done = {"config_hash": self.hash, "evaluator_sha256": self.judge.sha256, "seconds": round(secs, 2),
                "end_step": int(trainer.global_step), "end_hash": state_hash(module), "points": probe.points,
                "samples": self._save_samples(run.trunk_key, probe.samples)}
        atomic_write_text(marker, json.dumps(done, indent=2) + "\n")
        return done

    def run_one(self, run: Run) -> dict[str, Any]:
        """Train (or resume) one record and write it; returns it."""
        shared = self.shared(run.seed)
        _, counts = self._phase3_data(run.seed)
        root = self.out / "work" / f"s{run.seed}" / run.key
        t0 = time.perf_counter()
        if run.variant == "b0":
            module = self._module(run.seed, "b0", "identity", 0.0)
            probe, _, secs = self._fit3(module, run.seed, root, self.epochs)
            points, samples, trunk = probe.points, [self._save_samples(run.key, probe.samples)], None
        else:
            trunk = self.trunk(run)
            module = self._module(run.seed, run.variant, run.f, run.beta2)
            probe, _, secs = self._fit3(module, run.seed, root, self.epochs, ckpt=self.out / "work" / f"s{run.seed}" / run.trunk_key / "trunk.ckpt")
            points = trunk["points"] + probe.points
            samples = [trunk["samples"], self._save_samples(run.key, probe.samples)]
        f1 = self.cfg["features"][0]
        rec = {"key": run.key, "variant": run.variant, "f": run.f, "beta2": run.beta2, "seed": run.seed,
               "config_hash": self.hash, "evaluator": self.judge.info(), "n": int(self.z.shape[0]),
               "steps": self.epochs * self.bpe, "switch_step": self.switch * self.bpe, "points": points, "final": points[-1],
               "start": {"step": probe.start_step, "state_hash": probe.start_hash,
                         "trunk_end_hash": trunk["end_hash"] if trunk else None},
               "end_state_hash": state_hash(module),
               "adain_active_at_end": bool(module.adain_active), "snapshot_source": str(self.cfg["phase3"]["snapshot_source"]),
               "samples": samples, "training_sets": {**shared["training_sets"], "phase3": counts},
               "d2_val": shared["d2_val"], "g1_rates": shared["g1_rates"],
               "seconds": {"phase3": round(secs, 2), "trunk": trunk["seconds"] if trunk else 0.0,
                           "wall": round(time.perf_counter() - t0, 2)}}
        atomic_write_text(self.record_path(run), json.dumps(rec, indent=2) + "\n")
        self.log(f"[forgetting] {run.key}: end of phase 3 {_fmt(rec['final'], f1)} ({secs:.0f} s)")
        return rec

    def run(self, runs: list[Run]) -> list[dict[str, Any]]:
        records = []
        for i, run in enumerate(runs):
            rec = self._read_done(self.record_path(run))
            if rec is None:
                self.log(f"[forgetting] {i + 1}/{len(runs)} {run.key}")
                with quiet():
                    rec = self.run_one(run)
            records.append(rec)
        return records


def _fmt(rates: dict[str, Any], f1: str = "bald") -> str:
    return ", ".join(f"{k} {100 * float(v):.1f}%" for k, v in rates.items() if k in (f1, "bald", "beard", "joint"))


def fill_d2_means(out: str | os.PathLike, records: list[dict[str, Any]]) -> int:
    """Add ``d2_mean`` (the seed's frozen D2 on the stored samples) to the points of ``records`` that lack it
    (records of an earlier version), in memory; returns how many points were filled."""
    from multifeat.phases.feature_classifier import FeatureClassifier

    out, filled, d2s = Path(out), 0, {}
    for rec in records:
        todo = [p for p in rec["points"] if "d2_mean" not in p]
        if not todo:
            continue
        seed = rec["seed"]
        if seed not in d2s:
            d2s[seed] = FeatureClassifier.load_from_checkpoint(out / "work" / f"s{seed}" / "phase2" / "final.ckpt",
                                                               map_location="cpu").eval()
        samples: dict[int, torch.Tensor] = {}
        for rel in rec["samples"]:
            samples.update(torch.load(out / rel, map_location="cpu", weights_only=True))
        with torch.no_grad():
            for p in todo:
                p["d2_mean"] = round(d2s[seed](samples[p["step"]].float() / 127.5 - 1.0).float().mean().item(), 6)
                filled += 1
        rec["final"] = rec["points"][-1]
    return filled


def read_records(out: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every record in ``out/records`` (sorted by file name)."""
    for p in sorted((Path(out) / "records").glob("*.json")):
        yield json.loads(p.read_text())


__all__ = ["BRANCHES", "DEFAULT_CONFIG", "VARIANTS", "Experiment", "Judge", "Probe", "Run", "batches_per_epoch",
           "config_hash", "evaluation_noise", "fill_d2_means", "load_config", "load_judge", "planned_runs", "read_records", "state_hash", "to_uint8"]
