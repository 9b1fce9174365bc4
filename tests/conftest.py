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


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Evaluators and immature-generator banks that tests train without naming a folder go to a folder
    of this test session, never to the user's ``~/.cache/multifeat``."""
    old = os.environ.get("MULTIFEAT_CACHE")
    os.environ["MULTIFEAT_CACHE"] = str(tmp_path_factory.mktemp("multifeat-cache"))
    yield
    if old is None:
        os.environ.pop("MULTIFEAT_CACHE", None)
    else:
        os.environ["MULTIFEAT_CACHE"] = old


@pytest.fixture(scope="session")
def _immature_bank_16(tmp_path_factory) -> Path:
    from multifeat.eval.immature import immature_bank

    folder = tmp_path_factory.mktemp("immature16")
    immature_bank(16, cache_dir=folder, log=None)
    (path,) = folder.glob("immature-S16-*.pt")
    return path


@pytest.fixture(scope="session")
def immature_bank_16(_immature_bank_16):
    """``put(folder)`` copies the default 16-px immature-generator bank (trained once per session, about
    a minute and a half) into ``folder``, where an evaluator trained with the default recipe looks for
    it: whole-pipeline tests then do not each train the same deterministic bank again."""
    import shutil

    def put(folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(_immature_bank_16, folder / _immature_bank_16.name))

    return put


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
