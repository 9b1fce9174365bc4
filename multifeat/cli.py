"""Command line: ``multifeat`` and ``lightning`` (the lightning package ships no ``lightning`` command).

``fit``/``validate``/``test``/``predict`` are Lightning's ``LightningCLI`` in subclass mode: any
LightningModule / LightningDataModule of this package (or of yours, by full ``class_path``) can be
named in a YAML config::

    multifeat fit --config experiments/phase1.yaml
    lightning fit --config experiments/phase3.yaml --trainer.max_epochs 5 --model.init_args.snapshot_epoch 3

The package's own commands (``pipeline``, ``generate``, ``mix``, ``evaluate``, ``bench``, ``faces``)
live in ``multifeat/commands/<name>.py``, each with a ``main(argv) -> int``.

Lazy loading: this module imports only the standard library and :mod:`multifeat.errors` at load
time, so that ``multifeat --help`` and every command start without paying for the others. A package
command's module is imported when it is named (:data:`COMMANDS`); the Lightning commands' machinery
(``lightning``, ``jsonargparse``, the checkpoint reader, the interrupt callback, all of which import
torch) is imported inside the functions that build the ``LightningCLI`` (:func:`build_cli`,
:func:`_parser_class`, :func:`trainer_defaults`, :func:`_merge_ckpt_hparams`). These are the only
function-level imports of the module.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multifeat.errors import CheckpointError, ConfigError, MultifeatError

# Package commands: name -> (module, one-line help). Imported lazily so `--help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("multifeat.commands.pipeline", "Method A end to end: phase 1 -> 2 -> 3 -> evaluation in one run folder"),
    "generate": ("multifeat.commands.generate", "sample images (and a grid) from any generator checkpoint"),
    "mix": ("multifeat.commands.mix", "Method B: project target images and style-mix them"),
    "evaluate": ("multifeat.commands.evaluate", "measure feature rates, joint rate, FID/KID and diversity"),
    "bench": ("multifeat.commands.bench", "the MultiFeat-Synth benchmark: all methods, several seeds"),
    "faces": ("multifeat.commands.faces", "draw labelled face grids: SyntheticFaces combinations or real CelebA faces"),
    "forgetting": ("multifeat.commands.forgetting", "Method A's forgetting curves: rates of G3 through a long phase 3"),
}

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _commands_epilog() -> str:
    lines = ["package commands (run `multifeat COMMAND --help`):"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("configs: experiments/*.yaml; default logger: W&B, offline without an account")
    return "\n".join(lines)


def _register_package_classes() -> None:
    """Import the package's modules so class_path can name them by short name too."""
    for mod in ("multifeat.phases", "multifeat.data", "multifeat.callbacks", "multifeat.loggers"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a sub-package not present in this build
            if e.name != mod:
                raise


def trainer_defaults() -> dict[str, Any]:
    """Trainer defaults for the CLI: run folder under runs/, W&B logger (offline unless logged in),
    checkpoints written atomically (:class:`multifeat.io.atomic_checkpoint_io.AtomicCheckpointIO`),
    SIGTERM/SIGINT saved as a resumable checkpoint (:class:`multifeat.callbacks.interrupt.InterruptCheckpoint`,
    added to the configured callbacks)."""
    from multifeat.callbacks.interrupt import InterruptCheckpoint

    return {
        "default_root_dir": "runs",
        "plugins": [{"class_path": "multifeat.io.atomic_checkpoint_io.AtomicCheckpointIO"}],
        "logger": {"class_path": "multifeat.loggers.WandbLogger", "init_args": {"save_dir": "runs"}},
        "callbacks": [InterruptCheckpoint()],
    }


def _merge_ckpt_hparams(cli) -> None:
    """``--ckpt_path``: check the checkpoint and take its model hyper-parameters (as Lightning does).

    Differences from Lightning's own step: the file is read with
    :func:`multifeat.io.checkpoints.load_checkpoint` (weights-only, clear errors); a checkpoint of
    another phase than the configured model is refused by name; recorded values that are not
    ``__init__`` arguments (e.g. ``custom_generator``) are left out instead of breaking the parse.
    """
    from multifeat.io.checkpoints import _import_class, checkpoint_meta, load_checkpoint

    sub = cli.config.get("subcommand")
    if not sub:
        return
    ckpt_path = cli.config[sub].get("ckpt_path")
    if not ckpt_path or not (Path(ckpt_path).exists() or Path(ckpt_path).suffix == ".ckpt"):
        return  # "last", "best", "hpc", remote paths: Lightning resolves them later
    ckpt = load_checkpoint(ckpt_path)
    model_cfg = cli.config[sub].get("model")
    class_path = getattr(model_cfg, "class_path", None) if model_cfg is not None else None
    cls = None
    if class_path:
        try:
            cls = _import_class(class_path) if class_path.startswith("multifeat.") else None
        except CheckpointError:
            cls = None
    meta = checkpoint_meta(ckpt)
    want = getattr(cls, "phase", None)
    if want is not None and meta.get("phase") not in (None, want):
        raise CheckpointError(
            f"--ckpt_path '{ckpt_path}' is a {meta.get('phase')} checkpoint ({meta.get('class_path')}); "
            f"the configured model {cls.__name__} needs a {want} checkpoint"
        )
    size = meta.get("image_size")
    data_cfg = cli.config[sub].get("data")
    data_size = getattr(getattr(data_cfg, "init_args", None), "image_size", None) if data_cfg is not None else None
    if size is not None and data_size is not None and int(size) != int(data_size):
        raise CheckpointError(
            f"--ckpt_path '{ckpt_path}' holds a model for {size}x{size} images but the data module serves "
            f"{data_size}x{data_size} images; set data image_size: {size} (or start a new run)"
        )
    hparams = dict(ckpt.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    hparams.pop("_class_path", None)
    if not hparams or cls is None:
        return
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        hparams = {k: v for k, v in hparams.items() if k in params and k != "self"}
    try:
        cli.config = cli.parser.parse_object({sub: {"model": {"class_path": class_path, "init_args": hparams}}}, cli.config)
    except SystemExit:
        sys.stderr.write(f"the hyper-parameters recorded in --ckpt_path '{ckpt_path}' do not fit {class_path}\n")
        raise


#: top-level packages whose classes the help does not list one by one when there are more than
#: :data:`MAX_LISTED_FRAMEWORK_CLASSES` of them (every ``torch.nn.Module`` subclass of torch,
#: torchvision and torchmetrics: ~750 names); they are counted instead and still accepted by ``class_path``.
MAX_LISTED_FRAMEWORK_CLASSES = 40
FRAMEWORK_PACKAGES = ("torch", "torchvision", "torchaudio", "torchmetrics", "lightning", "pytorch_lightning",
                      "lightning_fabric", "timm", "transformers")

_KNOWN = ", known subclasses: "


def shorten_known_subclasses(help_text: str) -> str:
    """Shorten a ``known subclasses: ...`` help list that names more than
    :data:`MAX_LISTED_FRAMEWORK_CLASSES` classes of :data:`FRAMEWORK_PACKAGES`: the classes of this
    package (and of any other package) stay listed, the framework ones are counted."""
    start = help_text.find(_KNOWN)
    if start < 0:
        return help_text
    end = help_text.rfind(")")
    if end < start:
        end = len(help_text)
    names = [n.strip() for n in help_text[start + len(_KNOWN) : end].split(",") if n.strip()]
    kept = [n for n in names if n.split(".", 1)[0] not in FRAMEWORK_PACKAGES]
    if len(names) - len(kept) <= MAX_LISTED_FRAMEWORK_CLASSES:
        return help_text
    hidden = sorted({n.split(".", 1)[0] for n in names if n not in kept})
    listed = ", ".join(kept) if kept else "none outside the frameworks"
    if hidden:
        listed += (f"; {len(names) - len(kept)} more from {'/'.join(hidden)} not listed, "
                   "any of them (or a class of yours) works by full class_path")
    return help_text[:start] + _KNOWN + listed + help_text[end:]


def _link_attributes(config: Any) -> None:
    """``data.init_args.attributes`` follows ``model.init_args.attributes`` when it is not set.

    A model with an ``attributes`` argument (ConditionalGAN, AttributeEvaluator) names the label
    columns it conditions on / predicts; the data module's ``attributes`` names the columns it
    serves. Both are logged as hyper-parameters under the same key, and Lightning refuses two
    different values. Left unset (null), the data module serves exactly the model's columns; set
    to another list it is kept, and :func:`_check_hparams_agree` reports the difference.
    """
    model, data = config.get("model"), config.get("data")
    margs = getattr(model, "init_args", None) if model is not None else None
    dargs = getattr(data, "init_args", None) if data is not None else None
    if margs is None or dargs is None or "attributes" not in dargs or "attributes" not in margs:
        return
    if dargs.get("attributes") is None and margs.get("attributes") is not None:
        dargs["attributes"] = list(margs["attributes"])


def _check_hparams_agree(trainer, model, datamodule) -> None:
    """Refuse, with a one-line :class:`~multifeat.errors.ConfigError`, the model / data
    hyper-parameters that Lightning would refuse to merge for the logger (same key, different value)."""
    if datamodule is None or not trainer.loggers:
        return
    if not (getattr(model, "_log_hyperparams", False) and getattr(datamodule, "_log_hyperparams", False)):
        return
    mh, dh = model.hparams_initial, datamodule.hparams_initial
    bad = []
    for key in sorted(set(mh) & set(dh)):
        if key.startswith("_"):
            continue
        a, b = mh[key], dh[key]
        try:
            differ = type(a) is not type(b) or bool(a != b)
        except (RuntimeError, TypeError, ValueError):  # tensors/arrays: Lightning compares identity
            differ = a is not b
        if differ:
            bad.append(f"model.init_args.{key}={a!r} but data.init_args.{key}={b!r}")
    if bad:
        raise ConfigError(
            "; ".join(bad) + ": the model and the data module record these under the same name, so they must be "
            "equal (set both to the same value)"
        )


_PARSER_CLASS = None


def _parser_class():
    """LightningArgumentParser whose help (also the ``--model.help CLASS`` help, which builds a
    parser of the same class) lists this package's classes instead of every ``torch.nn`` class."""
    global _PARSER_CLASS
    if _PARSER_CLASS is not None:
        return _PARSER_CLASS
    from jsonargparse import DefaultHelpFormatter
    from lightning.pytorch.cli import LightningArgumentParser

    class MultifeatHelpFormatter(DefaultHelpFormatter):
        def _fill_text(self, text, width, indent):  # keep the line breaks of the epilog
            return "".join(indent + line for line in text.splitlines(keepends=True))

        def _get_help_string(self, action) -> str:
            return shorten_known_subclasses(super()._get_help_string(action))

    class MultifeatArgumentParser(LightningArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", MultifeatHelpFormatter)
            super().__init__(*args, **kwargs)

    _PARSER_CLASS = MultifeatArgumentParser
    return _PARSER_CLASS


def build_cli(args: list[str] | None = None, run: bool = True):
    """Construct the LightningCLI (exposed for tests and notebooks)."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    _register_package_classes()

    class MultifeatCLI(LightningCLI):
        def init_parser(self, **kwargs: Any):
            parser = super().init_parser(**kwargs)
            parser.epilog = _commands_epilog()
            return parser

        def _parse_ckpt_path(self) -> None:
            _merge_ckpt_hparams(self)

        def before_instantiate_classes(self) -> None:
            sub = self.config.get("subcommand")
            _link_attributes(self.config[sub] if sub else self.config)

        def before_fit(self) -> None:
            _check_hparams_agree(self.trainer, self.model, self.datamodule)

    return MultifeatCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_class=_parser_class(),
        args=args,
        run=run,
    )


def user_error(exc: BaseException):
    """The :class:`~multifeat.errors.MultifeatError` behind ``exc`` (itself, or one in its
    ``__cause__``/``__context__`` chain, e.g. raised inside jsonargparse or ``trainer.fit``), or None."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MultifeatError):
            return e
        todo += [e.__cause__, e.__context__]
    return None


def _run_reporting(run: Callable[[], int], label: str, catch_exit: bool = False) -> int:
    """Run one command; a user error (a :class:`MultifeatError` anywhere in the exception chain) becomes a
    one-line ``<label>: error: ...`` and exit code 2, Ctrl-C exit code 130; anything else propagates.
    ``catch_exit``: also turn a ``SystemExit`` (jsonargparse exits on --help and on bad arguments) into
    its exit code, reporting a user error behind it."""
    try:
        return run()
    except SystemExit as e:
        if not catch_exit:
            raise
        found = user_error(e)
        if found is not None:
            print(f"{label}: error: {found}", file=sys.stderr)
            return 2
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except KeyboardInterrupt:
        print(f"{label}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... --print-config | head`): stop quietly, as Unix tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        except OSError:
            pass
        return 141
    except Exception as e:
        found = user_error(e)
        if found is None:
            raise
        print(f"{label}: error: {found}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) or "multifeat"
    if argv and argv[0] in COMMANDS:
        module_name, _ = COMMANDS[argv[0]]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                print(f"{prog}: the '{argv[0]}' command is not available in this build", file=sys.stderr)
                return 2
            raise
        return _run_reporting(lambda: int(module.main(argv[1:]) or 0), f"{prog} {argv[0]}")

    def lightning_subcommand() -> int:
        build_cli(argv if explicit else None)
        return 0

    return _run_reporting(lightning_subcommand, prog, catch_exit=True)


if __name__ == "__main__":
    sys.exit(main())
