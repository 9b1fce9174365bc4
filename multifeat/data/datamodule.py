"""AttributeDataModule: one LightningDataModule for the three image sources.

Config example (LightningCLI)::

    data:
      class_path: multifeat.data.AttributeDataModule
      init_args:
        source: synthetic          # synthetic | celeba | folder
        image_size: 64
        require: {bald: true}      # keep only bald faces
        synthetic: {joint_fraction: 0.02}
        batch_size: 64

Batches: ``{"image": float [B,3,S,S] in [-1,1], "attrs": float [B,A] 0/1, "index": long [B]}`` with
``A = len(dm.attribute_names)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Subset

from multifeat.data.cache import MemoryCache, cache_bytes, check_cache_mb, fmt_mib
from multifeat.data.common import ATTRIBUTES, DataWarning, check_power_of_two, split_indices
from multifeat.errors import ConfigError, DataError

_SYNTHETIC_KEYS = ("attribute_probs", "joint_fraction", "cache")


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_source(source: object, image_size: object, num_samples: object, root: object) -> None:
    """Validate ``source`` and the arguments it needs (synthetic: 16-256 px and ``num_samples``;
    celeba/folder: 8-1024 px and ``root``); raises :class:`ConfigError`."""
    if source not in ("synthetic", "celeba", "folder"):
        raise ConfigError(f"source must be one of synthetic, celeba, folder; got {source!r}")
    if source == "synthetic":
        check_power_of_two(image_size, "image_size", 16, 256)
        check_positive_int(num_samples, "num_samples")
    else:
        check_power_of_two(image_size, "image_size", 8, 1024)
        if root is None:
            raise ConfigError(f"source={source!r} needs root (the data folder)")


def check_loader_args(batch_size: object, num_workers: object, val_fraction: object, seed: object) -> None:
    """Validate the arguments every data module shares; raises :class:`ConfigError`."""
    check_positive_int(batch_size, "batch_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")


class AttributeDataModule(LightningDataModule):
    """Images with binary attribute labels from synthetic faces, CelebA or an image folder.

    Args:
        source: ``"synthetic"`` (:class:`SyntheticFaces`), ``"celeba"`` (:class:`CelebADataset`,
            ``root`` holds ``celeba/``) or ``"folder"`` (:class:`ImageFolderDataset`, ``root`` is the folder).
        root: data folder for ``celeba`` and ``folder``; ignored by ``synthetic``.
        image_size: S, a power of two (16..256 for synthetic, 8..1024 otherwise). Default 64.
        attributes: attribute names of the ``attrs`` vector, in order. Default: ``ATTRIBUTES`` for
            synthetic and CelebA (CelebA also accepts its own 40 names and ``derived`` names); for
            folders the keys of ``folder_attrs``.
        require: filter ``{name: true/false}`` (CelebA also 1/-1); only matching images are used.
        num_samples: number of synthetic faces (train + val). Default 4096. Synthetic only.
        synthetic: extra :class:`SyntheticFaces` options: ``attribute_probs``, ``joint_fraction``, ``cache``.
        derived: CelebA only: extra any-of attribute definitions, e.g. ``{"beard": ["Goatee", "!No_Beard"]}``.
        folder_attrs: folder only: constant labels of every image, e.g. ``{"bald": 1}``.
        crop: centre-crop side (pixels) before resizing real images; default the shorter side.
        strict: folder only: a bad or too small file is an error instead of a warning.
        batch_size, num_workers: DataLoader settings (defaults 64, 0).
        val_fraction: fraction held out for validation (default 0.1). CelebA with
            ``list_eval_partition`` uses the official train/valid partitions instead.
        seed: seed of the split, of the shuffling order and of the synthetic faces (default 0).
        drop_last: drop the last incomplete training batch (only when the train set holds at least one batch).
        pin_memory: DataLoader ``pin_memory``.
        cache_mb: real sources (``celeba``, ``folder``): when a split's decoded images (uint8,
            ``N * 3 * S * S`` bytes) fit in this many MiB, decode each image once and serve batches
            from memory in the main process (:class:`~multifeat.data.cache.MemoryCache`); one log line
            says what was cached. 0: never. Default 1024. Synthetic faces have their own
            ``synthetic: {cache: true}``.

    Splits are built when first needed: ``setup`` builds the training split only, the validation
    split is built when ``val_set`` / ``val_dataloader`` is first used, and not at all when the
    Trainer will not validate (``limit_val_batches: 0``, or a module without ``validation_step``
    such as Phase1GAN / Phase3GAN). CelebA with an official partition file: when the official
    train split, or the valid split of a validating module, holds no image that matches
    ``require`` (a partial copy), the module uses a seeded split (``val_fraction``, ``seed``) of the
    matching train+valid images instead and says so in one :class:`DataWarning` with the counts.
    """

    def __init__(
        self,
        source: Literal["synthetic", "celeba", "folder"] = "synthetic",
        root: str | None = None,
        image_size: int = 64,
        attributes: list[str] | None = None,
        require: dict[str, bool | int] | None = None,
        num_samples: int = 4096,
        synthetic: dict[str, Any] | None = None,
        derived: dict[str, list[str]] | None = None,
        folder_attrs: dict[str, int] | None = None,
        crop: int | None = None,
        strict: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool = False,
        cache_mb: int = 1024,
    ) -> None:
        super().__init__()
        check_source(source, image_size, num_samples, root)
        check_loader_args(batch_size, num_workers, val_fraction, seed)
        if crop is not None:
            check_positive_int(crop, "crop")
        check_cache_mb(cache_mb)
        synthetic = dict(synthetic or {})
        unknown = set(synthetic) - set(_SYNTHETIC_KEYS)
        if unknown:
            raise ConfigError(f"synthetic: unknown option(s) {sorted(unknown)}; valid: {', '.join(_SYNTHETIC_KEYS)}")
        if folder_attrs is not None and source != "folder":
            raise ConfigError("folder_attrs applies to source='folder' only")
        if derived is not None and source != "celeba":
            raise ConfigError("derived applies to source='celeba' only")
        self.save_hyperparameters()
        self.source = source
        self.root = root
        self.image_size = image_size
        self.require = dict(require) if require else None
        self.num_samples = num_samples
        self.synthetic = synthetic
        self.derived = derived
        self.folder_attrs = folder_attrs
        self.crop = crop
        self.strict = strict
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.cache_mb = cache_mb
        self._requested_attributes = list(attributes) if attributes is not None else None
        self.attribute_names: tuple[str, ...] = self._resolve_attribute_names()
        self.train_set: Dataset | None = None
        self._val_set: Dataset | None = None
        self._val_factory: Callable[[], Dataset | None] | None = None
        self._validating = True
        self._loaders: dict[str, tuple[Dataset, DataLoader]] = {}
        #: what the memory cache holds per split: {"train": {"images": N, "mib": ..., "seconds": ...}} or a reason
        self.cache_info: dict[str, dict[str, Any]] = {}
        if source == "synthetic":  # fail at construction on impossible filters (cheap: nothing is rendered)
            from multifeat.data.synthetic import SyntheticFaces

            SyntheticFaces(num_samples=1, image_size=image_size, seed=seed, require=self.require, **synthetic)

    def _resolve_attribute_names(self) -> tuple[str, ...]:
        req = self._requested_attributes
        if self.source == "synthetic":
            names = tuple(req) if req is not None else ATTRIBUTES
            bad = [a for a in names if a not in ATTRIBUTES]
            if bad:
                raise ConfigError(f"attributes: unknown name(s) {bad} for synthetic faces; valid names: {', '.join(ATTRIBUTES)}")
            return names
        if self.source == "folder":
            labels = dict(self.folder_attrs or {})
            if req is None:
                return tuple(labels)
            missing = [a for a in req if a not in labels]
            if missing:
                raise ConfigError(f"attributes {missing} have no label for a folder source; give them in folder_attrs, e.g. {{'{missing[0]}': 1}}")
            return tuple(req)
        return tuple(req) if req is not None else ATTRIBUTES  # CelebA checks names against its label file

    # -- datasets -------------------------------------------------------------------------------
    def build_dataset(self, split: str = "all") -> Dataset:
        """The full dataset of this configuration (``split`` is used by CelebA's official partitions)."""
        if self.source == "synthetic":
            from multifeat.data.synthetic import SyntheticFaces

            return _SelectAttrs(
                SyntheticFaces(num_samples=self.num_samples, image_size=self.image_size, seed=self.seed,
                               require=self.require, **self.synthetic),
                self.attribute_names,
            )
        if self.source == "celeba":
            from multifeat.data.celeba import CelebADataset

            return CelebADataset(self.root, image_size=self.image_size, attributes=list(self.attribute_names),
                                 require=self.require, derived=self.derived, split=split,
                                 val_fraction=self.val_fraction, seed=self.seed, crop=self.crop)
        from multifeat.data.folder import ImageFolderDataset

        ds = ImageFolderDataset(self.root, image_size=self.image_size, attrs=self.folder_attrs,
                                attribute_names=list(self.attribute_names), strict=self.strict, crop=self.crop)
        if self.require:
            labels = {k: bool(v) for k, v in (self.folder_attrs or {}).items()}
            from multifeat.data.common import parse_require

            for name, want in parse_require(self.require, tuple(labels) or ("(none)",)).items():
                if labels[name] != want:
                    raise ConfigError(f"require {{'{name}': {want}}} matches no image: folder_attrs labels every image {name}={int(labels[name])}")
        return ds

    @property
    def val_set(self) -> Dataset | None:
        """The validation split, built on first use; None when there is none or the Trainer does not validate."""
        if self._val_set is None and self._val_factory is not None and self._validating:
            self._val_set = self._val_factory()
            self._val_factory = None
        return self._val_set

    @val_set.setter
    def val_set(self, value: Dataset | None) -> None:
        self._val_set = value
        self._val_factory = None

    def _will_validate(self, stage: str | None) -> bool:
        """Whether the attached Trainer will ask for validation data (True when unknown)."""
        if self.val_fraction == 0:
            return False
        trainer = getattr(self, "trainer", None)
        if stage == "validate" or trainer is None:
            return True
        if stage in ("test", "predict"):
            return False
        limit = getattr(trainer, "limit_val_batches", 1.0)
        if limit is not None and float(limit) == 0:
            return False
        module = getattr(trainer, "lightning_module", None)
        if module is not None:
            from lightning.pytorch.utilities.model_helpers import is_overridden

            return is_overridden("validation_step", module)
        return True

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            if stage == "validate":
                self._validating = self.val_fraction > 0
            return
        self._validating = self._will_validate(stage)
        if self.source == "celeba":
            from multifeat.data.celeba import has_official_partition

            if has_official_partition(self.root):
                self._setup_official()
                return
        full = self.build_dataset("all")
        train_idx, val_idx = split_indices(len(full), self.val_fraction, self.seed)
        self.train_set = Subset(full, train_idx)
        self._val_factory = (lambda: Subset(full, val_idx)) if val_idx else None

    def _setup_official(self) -> None:
        """CelebA with ``list_eval_partition``: the official train/valid splits, or a seeded split of the
        matching train+valid images when a needed official split has none (with a DataWarning)."""
        full = self.build_dataset("all")
        parts = full.partitions
        tr, va = np.flatnonzero(parts == 0), np.flatnonzero(parts == 1)
        need_val = self._validating
        if len(tr) > 0 and (len(va) > 0 or not need_val):
            self.train_set = full.subset(tr)
            if self.val_fraction > 0:
                self._val_factory = lambda: self._official_valid(full, va)
            return
        pool = np.flatnonzero((parts == 0) | (parts == 1))
        counts = f"{len(tr)} in train, {len(va)} in valid, {int((parts == 2).sum())} in test"
        if len(pool) == 0:
            raise DataError(f"no CelebA image matches require={self.require} in the official train or valid split "
                            f"of '{full.base}' ({counts}); the test split is kept for evaluation")
        t_idx, v_idx = split_indices(len(pool), self.val_fraction if need_val else 0.0, self.seed)
        if need_val and not v_idx:
            raise DataError(f"no CelebA image matches require={self.require} in split 'valid' and the {len(pool)} "
                            f"matching train+valid image(s) are too few to hold one out ({counts}); "
                            "add images, or set val_fraction: 0 / trainer.limit_val_batches: 0")
        empty = "train" if len(tr) == 0 else "valid"
        warnings.warn(
            f"CelebA under '{full.base}': the official {empty} split holds no image matching require={self.require} "
            f"({counts}); using a seeded split (val_fraction={self.val_fraction if need_val else 0}, seed={self.seed}) "
            f"of the {len(pool)} matching train+valid images instead: {len(t_idx)} train, {len(v_idx)} valid",
            DataWarning, stacklevel=3)
        self.train_set = full.subset(pool[t_idx])
        self._val_factory = (lambda: full.subset(pool[v_idx])) if v_idx else None

    def _official_valid(self, full, va) -> Dataset:
        if len(va) == 0:
            raise DataError(f"no CelebA image matches require={self.require} in split 'valid' of '{full.base}' "
                            f"({int((full.partitions == 0).sum())} matching images in train); the module was set up "
                            "without validation, so the train split is already in use; set val_fraction: 0 or "
                            "trainer.limit_val_batches: 0, or use a copy whose valid split holds matching images")
        return full.subset(va)

    # -- loaders --------------------------------------------------------------------------------
    def _cached(self, ds: Dataset, split: str) -> tuple[Dataset, bool]:
        """``ds`` decoded into a :class:`MemoryCache` when it is a real source that fits ``cache_mb``."""
        if self.source == "synthetic" or self.cache_mb == 0 or len(ds) == 0:
            return ds, False
        need = cache_bytes(len(ds), self.image_size)
        if need > self.cache_mb * (1 << 20):
            self.cache_info[split] = {"cached": False, "images": len(ds), "mib": need / (1 << 20)}
            rank_zero_info(f"{self.source} {split} split: not caching {len(ds)} decoded images ({fmt_mib(need)} > "
                           f"cache_mb={self.cache_mb}); they are decoded every epoch with num_workers={self.num_workers}")
            return ds, False
        cache = MemoryCache(ds, num_workers=self.num_workers)
        self.cache_info[split] = {"cached": True, "images": len(cache), "mib": cache.nbytes / (1 << 20),
                                  "seconds": cache.seconds}
        rank_zero_info(f"{self.source} {split} split: cached {len(cache)} images decoded once as uint8 "
                       f"{self.image_size}x{self.image_size} ({fmt_mib(cache.nbytes)} of cache_mb={self.cache_mb}, "
                       f"{cache.seconds:.1f} s); batches come from memory in the main process"
                       + (f" (num_workers={self.num_workers} only decoded them)" if self.num_workers else ""))
        return cache, True

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        drop_last = bool(train and self.drop_last and len(ds) >= self.batch_size)
        if train and self.drop_last and len(ds) < self.batch_size:
            warnings.warn(f"the training set has {len(ds)} images, fewer than batch_size={self.batch_size}; "
                          "keeping the incomplete batch", DataWarning, stacklevel=3)
        ds, cached = self._cached(ds, "train" if train else "val")
        workers = 0 if cached else self.num_workers
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        """The training loader; built once and returned again on later calls (a Trainer that reloads
        loaders every epoch keeps its workers, cache and shuffling stream)."""
        self.setup("fit")
        ds, loader = self._loaders.get("train", (None, None))
        if ds is not self.train_set:
            loader = self._loader(self.train_set, train=True)
            self._loaders["train"] = (self.train_set, loader)
        return loader

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        self._validating = self.val_fraction > 0
        val = self.val_set
        if val is None:
            return []
        ds, loader = self._loaders.get("val", (None, None))
        if ds is not val:
            loader = self._loader(val, train=False)
            self._loaders["val"] = (val, loader)
        return loader

    def num_batches_per_epoch(self) -> int:
        self.setup("fit")
        n = len(self.train_set)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else math.ceil(n / self.batch_size)


class _SelectAttrs(Dataset):
    """Keep only the named attributes (in that order) of a SyntheticFaces item; batches stay vectorised."""

    def __init__(self, base, names: tuple[str, ...]) -> None:
        self.base = base
        self.names = names
        self._cols = None if tuple(names) == ATTRIBUTES else torch.tensor([ATTRIBUTES.index(a) for a in names], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.base)

    def _fix(self, item: dict) -> dict:
        if self._cols is not None:
            item["attrs"] = item["attrs"].index_select(0, self._cols)
        return item

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [self._fix(it) for it in self.base.__getitems__(indices)]

    def __getitem__(self, index: int) -> dict:
        return self._fix(self.base[index])

    def __getattr__(self, name: str):  # expose the base dataset's helpers (params, masks, ...)
        if name in ("base", "names", "_cols"):
            raise AttributeError(name)
        return getattr(self.base, name)
