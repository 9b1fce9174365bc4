"""Shared test settings: never touch the network, keep W&B offline and quiet, small thread pools."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("WANDB_CONSOLE", "off")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny test networks run fastest single-threaded (and do not oversubscribe a busy machine).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # reference outputs of official code, shipped with the tests


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def fixtures_dir() -> Path:
    if not (FIXTURES / "stylegan2ada").is_dir() or not (FIXTURES / "gpen").is_dir():
        pytest.fail(f"reference fixtures missing under {FIXTURES}: the checkout is incomplete (see tests/fixtures/README.md)")
    return FIXTURES


@pytest.fixture(autouse=True)
def _no_wandb_run_leaks_between_tests(monkeypatch):
    """Lightning's WandbLogger reuses a W&B run left open in the process, and a process that used
    W&B points its children at its service: close any open run and drop that pointer around each
    test so every test's run files land where that test asks."""
    import sys

    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
