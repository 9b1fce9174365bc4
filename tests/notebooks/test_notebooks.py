"""The quickstart and Method A notebooks: stored clean, and executed end to end at tiny size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MINE = ("quickstart.ipynb", "method_a.ipynb")


def outputs_text(nb) -> str:
    """All stream and plain-text outputs of an executed notebook, in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def displayed_pngs(nb) -> int:
    """How many PNG images an executed notebook displayed."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


@pytest.mark.parametrize("name", MINE)
def test_notebook_is_stored_clean_and_reads_the_tiny_switch(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    source = "\n".join(c.source for c in code)
    assert 'os.environ.get("MULTIFEAT_NOTEBOOK_TINY") == "1"' in source
    assert "import matplotlib" not in source  # displays go through PIL files and IPython.display
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.slow
def test_quickstart_runs(execute_notebook):
    nb, folder = execute_notebook("quickstart.ipynb")
    run = folder / "runs" / "notebooks" / "quickstart"
    text = outputs_text(nb)
    assert "tiny=True" in text
    assert re.search(r"global step 6 last losses \{'loss/d': [0-9.]+, 'loss/g': [0-9.]+\}", text), text[-2000:]
    assert "same samples after reloading: True" in text
    assert displayed_pngs(nb) == 2
    for f in ("real_bald.png", "g1_samples.png", "phase1.ckpt", "samples/latest.png", "samples/step_00000003.png",
              "samples/step_00000006.png"):
        assert (run / f).is_file(), f
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


@pytest.mark.slow
def test_method_a_runs(execute_notebook, tmp_path, immature_bank_16):
    # the notebook's judge is trained with the default recipe in runs/notebooks/method_a/evaluator
    immature_bank_16(tmp_path / "runs" / "notebooks" / "method_a" / "evaluator")
    nb, folder = execute_notebook("method_a.ipynb")
    run = folder / "runs" / "notebooks" / "method_a"
    text = outputs_text(nb)
    assert "tiny=True" in text
    # phase 1 filled the bank, phase 2 read it, phase 3 took the snapshot and combined G3 and H with AdaIN
    m = re.search(r"negative bank: (\d+) images from steps \[([0-9, ]+)\]", text)
    assert m and int(m.group(1)) > 0, text[-3000:]
    assert re.search(r"phase 2 training data: .*'bank': [1-9]", text), text[-3000:]
    assert "snapshot taken at epoch 1, AdaIN active: True" in text
    assert "G3 differs from H after the snapshot: True" in text
    assert re.search(r"\| G3 \| \d+ \|", text) and re.search(r"\| G1 \| \d+ \|", text), text[-3000:]
    assert displayed_pngs(nb) >= 3
    for f in ("phase1.ckpt", "phase2.ckpt", "phase3.ckpt", "negatives/index.json", "eval/report.md",
              "eval/metrics.json"):
        assert (run / f).is_file(), f
