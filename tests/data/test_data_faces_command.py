"""`multifeat faces`: the labelled grid of attribute combinations."""

import numpy as np
from PIL import Image

from multifeat.cli import main as cli_main
from multifeat.commands.faces import combination_label, draw_grid, main
from multifeat.data import SyntheticFaces
from multifeat.utils.images import to_uint8


def test_grid_file_and_contents(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["--out", str(out), "--size", "16", "--samples", "2", "--seed", "3"]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    ref = np.asarray(draw_grid(16, 2, 3))
    assert np.array_equal(img, ref)
    # find every face of the (bald, beard, glasses, smiling) combination in the grid, pixel for pixel
    for combo in [(False, False, False, False), (True, True, False, True), (True, False, True, False)]:
        ds = SyntheticFaces(num_samples=2, image_size=16, seed=3, require=dict(zip(("bald", "beard", "eyeglasses", "smiling"), combo)))
        for k in range(2):
            face = to_uint8(ds[k]["image"]).numpy()
            hits = [(y, x) for y in range(img.shape[0] - 15) for x in range(img.shape[1] - 15)
                    if img[y, x, 0] == face[0, 0, 0] and np.array_equal(img[y : y + 16, x : x + 16], face)]
            assert hits, (combo, k)


def test_labels():
    assert combination_label({"bald": True, "beard": True, "eyeglasses": False, "smiling": True}) == "bald+beard+smiling"
    assert combination_label({"bald": False, "beard": False, "eyeglasses": False, "smiling": False}) == "none"


def test_cli_dispatch_and_errors(tmp_path, capsys):
    assert cli_main(["faces", "--out", str(tmp_path / "g.png"), "--size", "16", "--samples", "1"]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert cli_main(["faces", "--out", str(tmp_path / "h.png"), "--size", "48"]) == 2
    assert "power of two" in capsys.readouterr().err
