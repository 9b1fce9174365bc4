"""Run a notebook of ``notebooks/`` in a temporary folder with this interpreter's kernel, at tiny size.

The fixture ``execute_notebook(name, timeout=600)`` executes ``notebooks/<name>`` with nbclient in a
kernel that starts ``sys.executable`` (a kernelspec written under the test's temporary folder, not
whatever ``python`` is first on PATH), with the repository on ``PYTHONPATH``,
``MULTIFEAT_NOTEBOOK_TINY=1``, W&B offline and one thread. The kernel's working folder is the test's
``tmp_path``. It returns ``(notebook, tmp_path)``: the executed notebook (outputs filled in) and the
folder its files went to. The timeout (per cell) only stops a hung kernel: timing belongs to benchmarks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def kernel_for_this_python(root: Path) -> str:
    """Write a kernelspec under ``root/kernels`` that starts ``sys.executable``; returns its name."""
    name = "multifeat-notebook-python"
    spec = root / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "multifeat tests", "language": "python",
    }))
    return name


@pytest.fixture
def execute_notebook(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    def run(name: str, timeout: int = 600):
        jupyter = tmp_path / ".jupyter-test"
        kernel = kernel_for_this_python(jupyter)
        monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("MULTIFEAT_NOTEBOOK_TINY", "1")
        monkeypatch.setenv("WANDB_MODE", "offline")
        # an in-process W&B run earlier in the session leaves its service address here; the kernel needs its own
        monkeypatch.delenv("WANDB_SERVICE", raising=False)
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
        return nb, tmp_path

    return run
