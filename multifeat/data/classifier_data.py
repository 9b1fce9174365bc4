"""FeatureClassifierDataModule: Phase-2 data, images with feature 1 against images without it.

Sources (ids in :data:`SOURCE_NAMES` order, label 1 for positives, 0 for every negative):

0. ``positive``: images that have the feature.
1. ``real_negative``: real images without the feature (synthetic/CelebA: the same source filtered
   on the feature being absent; folder: ``negative_root``, optional).
2. ``bank``: Phase 1's unclear samples in ``bank_dir`` (optional; see :mod:`multifeat.io.bank`).
3. ``degraded``: degraded copies of the positives (optional; :mod:`multifeat.data.degrade`), each
   made deterministically from ``(seed, index)``: kind drawn from ``degrade_kinds``, strength uniform
   in ``degrade_strength``.

Every source is split into train/val on its own (``val_fraction``, ``seed``), so validation holds
every source; degraded copies are made from the positives of the same split. Training batches come
from a weighted sampler: positives and negatives 50/50 in expectation, the negative sources equally
likely among themselves, whatever their sizes. Validation goes through every item once, in order.

Attribute balance (``balance_attributes``, default every labelled attribute but the feature and
those fixed by ``require``): positives and real negatives are drawn so that each combination of
those attributes has the same share on both sides. Without it, a training set without bald AND
bearded faces (``joint_fraction: 0``) has 0 % beards among the bald positives and about half among
the real negatives, and D2 learns "a beard means not bald". Each side's items in a combination
(cell) get weight ``target(cell) / count_side(cell)``, with ``target`` the mean of the two sides'
shares over the cells both sides hold, renormalised; items in a cell only one side holds are not
drawn. Degraded copies take the weights of the positives they come from; the bank (unlabelled)
is not reweighted. :meth:`FeatureClassifierDataModule.describe` reports the rates before and after.

Batches: ``{"image": float [B,3,S,S] in [-1,1], "label": float [B] 1/0, "source": long [B]}``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler

from multifeat.data.cache import attach_cache, cache_bytes, check_cache_mb, fmt_mib
from multifeat.data.common import ATTRIBUTES, SOURCE_NAMES, split_indices
from multifeat.data.datamodule import _SYNTHETIC_KEYS, check_loader_args, check_positive_int, check_source
from multifeat.data.degrade import DEGRADE_KINDS, check_kinds, degrade
from multifeat.data.loading import crop_resize, open_rgb, uint8_to_float
from multifeat.errors import ConfigError, DataError
from multifeat.io.bank import read_bank

POSITIVE, REAL_NEGATIVE, BANK, DEGRADED = range(4)


class BankDataset(Dataset):
    """The negative bank's images, resized to ``image_size``. Raises DataError when the bank is missing or empty."""

    def __init__(self, bank_dir: str, image_size: int) -> None:
        self.entries = read_bank(bank_dir)
        self.bank_dir = bank_dir
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        path = self.entries[int(index)]["path"]
        try:
            img = open_rgb(path)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"negative bank image '{path}' cannot be read: {e}") from e
        return {"image": uint8_to_float(crop_resize(img, self.image_size))}


class DegradedDataset(Dataset):
    """Degraded copies of a dataset's images; item ``i`` depends only on ``(seed, i)``."""

    def __init__(self, base: Dataset, kinds: tuple[str, ...], strength: tuple[float, float], seed: int) -> None:
        self.base = base
        self.kinds = check_kinds(kinds)
        self.strength = strength
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def spec(self, index: int) -> tuple[str, float, int]:
        """(kind, strength, noise seed) of item ``index``."""
        rng = np.random.default_rng([self.seed, 7919, int(index)])
        r = rng.random(2)
        kind = self.kinds[min(int(r[0] * len(self.kinds)), len(self.kinds) - 1)]
        lo, hi = self.strength
        return kind, float(lo + (hi - lo) * r[1]), int(rng.integers(0, 2**62))

    def __getitem__(self, index: int) -> dict:
        kind, strength, noise_seed = self.spec(index)
        image = self.base[int(index)]["image"]
        return {"image": degrade(image, kind, strength, torch.Generator().manual_seed(noise_seed))}


class LabelledSources(Dataset):
    """Concatenation of (dataset, source id) parts; items ``{"image", "label", "source"}``."""

    def __init__(self, parts: list[tuple[Dataset, int]]) -> None:
        self.parts = [(d, s) for d, s in parts if len(d) > 0]
        self.offsets = np.cumsum([0] + [len(d) for d, _ in self.parts])
        self.sources = torch.cat([torch.full((len(d),), s, dtype=torch.long) for d, s in self.parts]) \
            if self.parts else torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        i = int(index)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        p = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return p, i - int(self.offsets[p])

    def __getitems__(self, indices: list[int]) -> list[dict]:
        # group by part so a vectorised source (SyntheticFaces) renders its share in one call
        located = [self._locate(i) for i in indices]
        out: list[dict | None] = [None] * len(indices)
        for p, (ds, src) in enumerate(self.parts):
            ks = [k for k, (q, _) in enumerate(located) if q == p]
            if not ks:
                continue
            local = [located[k][1] for k in ks]
            items = ds.__getitems__(local) if hasattr(ds, "__getitems__") else [ds[j] for j in local]
            for k, it in zip(ks, items):
                out[k] = {"image": it["image"], "label": torch.tensor(1.0 if src == POSITIVE else 0.0), "source": torch.tensor(src)}
        return out

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]


def balanced_weights(sources: torch.Tensor) -> torch.Tensor:
    """Per-item sampling weights: positives 1/2 in total, each present negative source 1/(2K)."""
    sources = sources.long()
    counts = torch.bincount(sources, minlength=len(SOURCE_NAMES)).double()
    neg = [s for s in range(1, len(SOURCE_NAMES)) if counts[s] > 0]
    share = torch.zeros(len(SOURCE_NAMES), dtype=torch.float64)
    if counts[POSITIVE] > 0:
        share[POSITIVE] = 0.5
    for s in neg:
        share[s] = 0.5 / len(neg)
    per_item = torch.where(counts > 0, share / counts.clamp(min=1), torch.zeros_like(share))
    return per_item[sources]


def _rates(attrs: np.ndarray, names: list[str], weights: np.ndarray | None = None) -> dict[str, float]:
    """Rate of each attribute among the rows of ``attrs`` (weighted by ``weights`` when given)."""
    if len(attrs) == 0:
        return {n: float("nan") for n in names}
    w = np.ones(len(attrs)) if weights is None else np.asarray(weights, dtype=np.float64)
    tot = w.sum()
    return {n: round(float((attrs[:, j] * w).sum() / tot), 4) if tot > 0 else float("nan") for j, n in enumerate(names)}


def _fmt_rates(rates: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in rates.items())


class FeatureClassifierDataModule(LightningDataModule):
    """Positives vs negatives (real, bank, degraded) for the Phase-2 feature classifier.

    Args:
        feature: the attribute to classify (one of ``ATTRIBUTES``; CelebA also its own column names).
        source: ``synthetic``, ``celeba`` or ``folder`` (positives from ``root``, real negatives from
            ``negative_root`` if given).
        root: data folder (CelebA root or the positives folder).
        negative_root: folder source only: images without the feature.
        image_size: S, power of two (default 64).
        bank_dir: negative bank folder of Phase 1 (``None``: no bank source). Missing/empty -> DataError.
        degraded: add degraded copies of the positives as negatives (default True).
        degrade_kinds: kinds to draw from (default all: downsample, blur, noise).
        degrade_strength: (low, high) strength range in [0, 1] (default (0.3, 1.0)).
        num_samples: synthetic only: number of positives and of real negatives (default 4096 each).
        synthetic: extra SyntheticFaces options (``attribute_probs``, ``joint_fraction``, ``cache``).
        require: extra filter applied to positives and real negatives alike (e.g. ``{"beard": False}``).
        batch_size, num_workers, val_fraction, seed: as in :class:`AttributeDataModule`.
        epoch_size: training samples drawn per epoch (default: the training set size).
        balance_attributes: attributes on which positives and real negatives are balanced (see the
            module doc). ``None`` (default): every labelled attribute (``ATTRIBUTES``) except the
            feature and the ``require`` keys; CelebA also accepts its columns and derived names (e.g.
            ``Male``). ``[]``: no balancing. Folder sources carry no per-image labels: the default is
            then no balancing (said in the log), a non-empty list a ConfigError.
        cache_mb: real sources: decode positives and real negatives once into memory when they fit
            (see :class:`~multifeat.data.cache.MemoryCache`; 0: never). Default 1024.
    """

    def __init__(
        self,
        feature: str = "bald",
        source: Literal["synthetic", "celeba", "folder"] = "synthetic",
        root: str | None = None,
        negative_root: str | None = None,
        image_size: int = 64,
        bank_dir: str | None = None,
        degraded: bool = True,
        degrade_kinds: list[str] | None = None,
        degrade_strength: tuple[float, float] = (0.3, 1.0),
        num_samples: int = 4096,
        synthetic: dict[str, Any] | None = None,
        require: dict[str, bool | int] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        epoch_size: int | None = None,
        pin_memory: bool = False,
        balance_attributes: list[str] | None = None,
        balance_target: Literal["uniform", "mean"] = "uniform",
        cache_mb: int = 1024,
    ) -> None:
        super().__init__()
        check_source(source, image_size, num_samples, root)
        if source == "synthetic" and feature not in ATTRIBUTES:
            raise ConfigError(f"feature '{feature}' is not a synthetic attribute; valid: {', '.join(ATTRIBUTES)}")
        if negative_root is not None and source != "folder":
            raise ConfigError("negative_root applies to source='folder' only")
        check_loader_args(batch_size, num_workers, val_fraction, seed)
        if epoch_size is not None:
            check_positive_int(epoch_size, "epoch_size")
        lo, hi = (float(v) for v in degrade_strength)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"degrade_strength must be (low, high) with 0 <= low <= high <= 1, got {degrade_strength!r}")
        kinds = check_kinds(degrade_kinds if degrade_kinds is not None else DEGRADE_KINDS)
        synthetic = dict(synthetic or {})
        unknown = set(synthetic) - set(_SYNTHETIC_KEYS)
        if unknown:
            raise ConfigError(f"synthetic: unknown option(s) {sorted(unknown)}; valid: {', '.join(_SYNTHETIC_KEYS)}")
        if require and feature in require:
            raise ConfigError(f"require must not name the classified feature '{feature}'")
        if source == "folder" and negative_root is None and bank_dir is None and not degraded:
            raise ConfigError("no negative source: give negative_root, bank_dir or degraded=True")
        check_cache_mb(cache_mb)
        if balance_target not in ("uniform", "mean"):
            raise ConfigError(f"balance_target must be 'uniform' or 'mean', got {balance_target!r}")
        if balance_attributes is None:
            balance = [] if source == "folder" else [a for a in ATTRIBUTES if a != feature and a not in (require or {})]
        else:
            if isinstance(balance_attributes, str) or not all(isinstance(a, str) for a in balance_attributes):
                raise ConfigError(f"balance_attributes must be a list of attribute names, got {balance_attributes!r}")
            balance = list(dict.fromkeys(balance_attributes))
            if feature in balance:
                raise ConfigError(f"balance_attributes must not name the classified feature '{feature}'")
            if balance and source == "folder":
                raise ConfigError("balance_attributes needs per-image labels; folder sources have none (use [] or a "
                                  "synthetic / celeba source)")
            if source == "synthetic":
                bad = [a for a in balance if a not in ATTRIBUTES]
                if bad:
                    raise ConfigError(f"balance_attributes: unknown name(s) {bad} for synthetic faces; valid: {', '.join(ATTRIBUTES)}")
        self.save_hyperparameters()
        self.feature, self.source, self.root, self.negative_root = feature, source, root, negative_root
        self.image_size, self.bank_dir, self.degraded = image_size, bank_dir, bool(degraded)
        self.degrade_kinds, self.degrade_strength = kinds, (lo, hi)
        self.num_samples, self.synthetic, self.require = num_samples, synthetic, dict(require or {})
        self.batch_size, self.num_workers, self.val_fraction, self.seed = batch_size, num_workers, float(val_fraction), seed
        self.epoch_size, self.pin_memory = epoch_size, pin_memory
        self.balance_attributes: tuple[str, ...] = tuple(balance)
        self.balance_target = balance_target
        self.cache_mb = cache_mb
        self.train_set: LabelledSources | None = None
        self.val_set: LabelledSources | None = None
        #: per source and split, the balance attributes of each item (bool [n, k]); filled by setup
        self.item_attributes: dict[tuple[str, str], np.ndarray] = {}
        self._train_weights: torch.Tensor | None = None
        self._description: dict[str, Any] | None = None

    def _real(self, positive: bool) -> Dataset | None:
        req = {**self.require, self.feature: positive}
        if self.source == "synthetic":
            from multifeat.data.synthetic import SyntheticFaces

            opts = dict(self.synthetic)
            if not positive and self.feature in ("bald", "beard") and opts.get("joint_fraction"):
                # joint_fraction is the share of bald AND bearded faces among the positives; the negatives
                # lack the feature, so they hold no joint face (0.0 leaves their other attributes as drawn)
                opts["joint_fraction"] = 0.0
            return SyntheticFaces(num_samples=self.num_samples, image_size=self.image_size,
                                  seed=self.seed + (0 if positive else 1), require=req, **opts)
        if self.source == "celeba":
            from multifeat.data.celeba import CelebADataset

            return CelebADataset(self.root, image_size=self.image_size, attributes=[self.feature, *self.balance_attributes],
                                 require=req)
        from multifeat.data.folder import ImageFolderDataset

        folder = self.root if positive else self.negative_root
        return None if folder is None else ImageFolderDataset(folder, image_size=self.image_size)

    def _split(self, ds: Dataset, salt: int, name: str) -> tuple[Dataset, Dataset]:
        if self.val_fraction > 0 and len(ds) < 2:
            raise DataError(f"the '{name}' source has {len(ds)} image(s); validation needs at least 2 per source "
                            "(one for training, one for validation), or set val_fraction: 0")
        tr, va = split_indices(len(ds), self.val_fraction, self.seed + salt)
        return Subset(ds, tr), Subset(ds, va)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train: list[tuple[Dataset, int]] = []
        val: list[tuple[Dataset, int]] = []
        pos = self._real(True)
        neg = self._real(False)
        pos_attrs = self._labels(pos)
        neg_attrs = None if neg is None else self._labels(neg)
        pos = self._maybe_cache(pos, "positive")
        pos_tr, pos_va = self._split(pos, 0, "positive")
        train.append((pos_tr, POSITIVE))
        val.append((pos_va, POSITIVE))
        self.item_attributes[("train", "positive")] = pos_attrs[pos_tr.indices]
        self.item_attributes[("val", "positive")] = pos_attrs[pos_va.indices]
        if neg is not None:
            neg = self._maybe_cache(neg, "real_negative")
            tr, va = self._split(neg, 1, "real_negative")
            train.append((tr, REAL_NEGATIVE))
            val.append((va, REAL_NEGATIVE))
            self.item_attributes[("train", "real_negative")] = neg_attrs[tr.indices]
            self.item_attributes[("val", "real_negative")] = neg_attrs[va.indices]
        if self.bank_dir is not None:
            tr, va = self._split(BankDataset(self.bank_dir, self.image_size), 2, "bank")
            train.append((tr, BANK))
            val.append((va, BANK))
        if self.degraded:
            train.append((DegradedDataset(pos_tr, self.degrade_kinds, self.degrade_strength, self.seed), DEGRADED))
            val.append((DegradedDataset(pos_va, self.degrade_kinds, self.degrade_strength, self.seed + 1), DEGRADED))
        self.train_set = LabelledSources(train)
        self.val_set = LabelledSources(val)
        self._train_weights = self._balance()

    # -- attribute balance ----------------------------------------------------------------------
    def _labels(self, ds: Dataset | None) -> np.ndarray:
        """The balance attributes of every item of a positive / real-negative dataset: bool [n, k]."""
        k = len(self.balance_attributes)
        if ds is None or k == 0:
            return np.zeros((0 if ds is None else len(ds), k), dtype=bool)
        if self.source == "synthetic":
            cols = [ATTRIBUTES.index(a) for a in self.balance_attributes]
            return np.stack([ds.attributes(i)[cols] for i in range(len(ds))]).astype(bool)
        return ds.labels[:, 1:].numpy().astype(bool)  # celeba: column 0 is the feature

    def _balance(self) -> torch.Tensor:
        """Sampling weights of the training items (see the module doc) and the description."""
        ds = self.train_set
        weights = balanced_weights(ds.sources)
        names = list(self.balance_attributes)
        has_neg = ("train", "real_negative") in self.item_attributes
        desc: dict[str, Any] = {"feature": self.feature, "balance_attributes": names}
        raw = {src: self.item_attributes[("train", src)] for src in ("positive", "real_negative")
               if ("train", src) in self.item_attributes}
        desc["before"] = {src: _rates(a, names) for src, a in raw.items()}
        if names and has_neg:
            pos_a, neg_a = raw["positive"], raw["real_negative"]
            bits = 1 << np.arange(len(names))
            pos_c, neg_c = pos_a.astype(np.int64) @ bits, neg_a.astype(np.int64) @ bits
            ncell = 1 << len(names)
            cp = np.bincount(pos_c, minlength=ncell).astype(np.float64)
            cn = np.bincount(neg_c, minlength=ncell).astype(np.float64)
            common = (cp > 0) & (cn > 0)
            if not common.any():
                raise DataError(f"positives and real negatives share no combination of {names} "
                                f"(positives: {_fmt_rates(desc['before']['positive'])}; real negatives: "
                                f"{_fmt_rates(desc['before']['real_negative'])}); set balance_attributes to fewer "
                                "names, or [] to train unbalanced")
            if self.balance_target == "uniform":
                target = common.astype(np.float64)
            else:
                target = np.where(common, cp / cp.sum() + cn / cn.sum(), 0.0)
            target /= target.sum()
            within = {"positive": np.where(common, target / np.maximum(cp, 1), 0.0)[pos_c],
                      "real_negative": np.where(common, target / np.maximum(cn, 1), 0.0)[neg_c]}
            within["degraded"] = within["positive"]  # degraded copies of the same positives, in order
            for p, (_part, src) in enumerate(ds.parts):
                name = SOURCE_NAMES[src]
                if name not in within:
                    continue
                lo, hi = int(ds.offsets[p]), int(ds.offsets[p + 1])
                share = float(weights[lo:hi].sum())
                weights[lo:hi] = torch.from_numpy(within[name]) * share
            desc["after"] = {"positive": _rates(pos_a, names, within["positive"]),
                             "real_negative": _rates(neg_a, names, within["real_negative"])}
            desc["drawn"] = {"positive": int((within["positive"] > 0).sum()), "real_negative": int((within["real_negative"] > 0).sum())}
            desc["items"] = {"positive": len(pos_a), "real_negative": len(neg_a)}
            rank_zero_info(
                f"D2 data ({self.feature}): positives and real negatives balanced on {', '.join(names)}: "
                f"positives {_fmt_rates(desc['after']['positive'])} | real negatives {_fmt_rates(desc['after']['real_negative'])} "
                f"(unbalanced: positives {_fmt_rates(desc['before']['positive'])} | real negatives "
                f"{_fmt_rates(desc['before']['real_negative'])}); drawn from {desc['drawn']['positive']} of "
                f"{len(pos_a)} positives, {desc['drawn']['real_negative']} of {len(neg_a)} real negatives")
        elif not names:
            why = ("folder sources carry no per-image labels" if self.source == "folder" and self.hparams.get("balance_attributes") is None
                   else "balance_attributes is empty" if self.hparams.get("balance_attributes") is not None
                   else "no labelled attribute other than the feature is left")
            rank_zero_info(f"D2 data ({self.feature}): positives and real negatives are not balanced on other attributes ({why})")
        self._description = desc
        return weights

    def describe(self) -> dict[str, Any]:
        """The balance of the training data: ``{"feature", "balance_attributes", "before": {source:
        {attribute: rate}}, "after": {source: {attribute: rate under the sampler}}, "drawn", "items"}``
        (``after``/``drawn``/``items`` only when balancing is on)."""
        self.setup()
        return self._description

    def _maybe_cache(self, ds: Dataset, name: str) -> Dataset:
        if self.source == "synthetic" or self.cache_mb == 0:
            return ds
        need = cache_bytes(len(ds), self.image_size)
        used = getattr(self, "_cache_used", 0)  # positives and real negatives share the limit
        if used + need > self.cache_mb * (1 << 20):
            rank_zero_info(f"D2 data: not caching the {len(ds)} {name} images ({fmt_mib(need)}, {fmt_mib(used)} already "
                           f"cached, cache_mb={self.cache_mb}); they are decoded every time with num_workers={self.num_workers}")
            return ds
        cache = attach_cache(ds, num_workers=self.num_workers)
        self._cache_used = used + cache.nbytes
        rank_zero_info(f"D2 data: cached {len(cache)} {name} images decoded once as uint8 {self.image_size}x{self.image_size} "
                       f"({fmt_mib(cache.nbytes)}, {cache.seconds:.1f} s)")
        return ds

    def source_counts(self, split: str = "train") -> dict[str, int]:
        """Number of items per source name in ``split`` (``train`` or ``val``)."""
        self.setup()
        ds = self.train_set if split == "train" else self.val_set
        counts = torch.bincount(ds.sources, minlength=len(SOURCE_NAMES))
        return {name: int(c) for name, c in zip(SOURCE_NAMES, counts)}

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        g = torch.Generator().manual_seed(self.seed)
        sampler = WeightedRandomSampler(self._train_weights, self.epoch_size or len(self.train_set),
                                        replacement=True, generator=g)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, drop_last=False)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        if self.val_fraction == 0:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)

    def num_batches_per_epoch(self) -> int:
        self.setup("fit")
        return math.ceil((self.epoch_size or len(self.train_set)) / self.batch_size)
