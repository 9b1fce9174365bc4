"""Command line: ``multifeat`` and ``lightning`` (the lightning package ships no ``lightning`` command).

``fit``/``validate``/``test``/``predict`` are Lightning's ``LightningCLI`` in subclass mode: any
LightningModule / LightningDataModule of this package (or of yours, by full ``class_path``) can be
named in a YAML config::

    multifeat fit --config experiments/phase1.yaml
    lightning fit --config experiments/phase3.yaml --trainer.max_epochs 5

The package's own commands (``pipeline``, ``generate``, ``mix``, ``evaluate``, ``bench``, ``faces``)
live in ``multifeat/commands/<name>.py``, each with a ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# Package commands: name -> (module, one-line help). Imported lazily so `--help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("multifeat.commands.pipeline", "Method A end to end: phase 1 -> 2 -> 3 -> evaluation in one run folder"),
    "generate": ("multifeat.commands.generate", "sample images (and a grid) from any generator checkpoint"),
    "mix": ("multifeat.commands.mix", "Method B: project target images and style-mix them"),
    "evaluate": ("multifeat.commands.evaluate", "measure feature rates, joint rate, FID/KID and diversity"),
    "bench": ("multifeat.commands.bench", "the MultiFeat-Synth benchmark: all methods, several seeds"),
    "faces": ("multifeat.commands.faces", "draw a labelled grid of SyntheticFaces attribute combinations"),
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
    """Trainer defaults for the CLI: run folder under runs/, W&B logger (offline unless logged in)."""
    return {
        "default_root_dir": "runs",
        "logger": {"class_path": "multifeat.loggers.WandbLogger", "init_args": {"save_dir": "runs"}},
    }


def build_cli(args: list[str] | None = None, run: bool = True):
    """Construct the LightningCLI (exposed for tests and notebooks)."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    from jsonargparse import DefaultHelpFormatter

    class KeepLineBreaks(DefaultHelpFormatter):
        def _fill_text(self, text, width, indent):
            return "".join(indent + line for line in text.splitlines(keepends=True))

    _register_package_classes()

    class MultifeatCLI(LightningCLI):
        def init_parser(self, **kwargs: Any):
            parser = super().init_parser(**kwargs)
            parser.epilog = _commands_epilog()
            return parser

    return MultifeatCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"formatter_class": KeepLineBreaks},
        args=args,
        run=run,
    )


def main(argv: list[str] | None = None) -> int:
    from multifeat.errors import MultifeatError

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
        try:
            return int(module.main(argv[1:]) or 0)
        except MultifeatError as e:
            print(f"{prog} {argv[0]}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prog} {argv[0]}: interrupted", file=sys.stderr)
            return 130
    try:
        build_cli(argv if explicit else None)
    except MultifeatError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # jsonargparse exits on --help and on bad arguments
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
