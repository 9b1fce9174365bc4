"""`multifeat faces --celeba`: real faces of one attribute combination and split, on a tiny CelebA-like tree."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multifeat.cli import main as cli_main
from multifeat.commands.faces import main, parse_require_arg, side_by_side, tile
from multifeat.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from celeba_fixtures import CELEBA_COLUMNS, make_celeba  # noqa: E402

PAD, GAP, SIZE = 8, 2, 16  # side_by_side's margin, tile's gap, the face size used below


def _expected(truth, bald: bool, beard: bool, part: int) -> list[int]:
    """Indices of the fixture's faces in split ``part`` with the wanted bald/beard, straight from the label matrix."""
    col = {c: i for i, c in enumerate(CELEBA_COLUMNS)}
    out = []
    for i, row in enumerate(truth["values"]):
        has_beard = row[col["Goatee"]] == 1 or row[col["Mustache"]] == 1 or row[col["No_Beard"]] == -1
        if truth["parts"][i] == part and (row[col["Bald"]] == 1) == bald and has_beard == beard:
            out.append(i)
    return out


@pytest.fixture
def tree(tmp_path):
    truth = make_celeba(tmp_path, n=48, seed=5)
    assert len(_expected(truth, True, True, 2)) >= 3  # the seed gives a few bald-and-bearded test faces
    return tmp_path, truth


def test_draws_exactly_the_matching_faces_of_the_split(tree, tmp_path, capsys):
    root, truth = tree
    want = _expected(truth, True, True, 2)
    out, faces_dir = tmp_path / "real.png", tmp_path / "real_faces"
    assert main(["--celeba", str(root), "--require", "bald=1,beard=1", "--split", "test", "--size", str(SIZE),
                 "--cols", "2", "--out", str(out), "--images-dir", str(faces_dir)]) == 0
    assert f"{len(want)} of the {len(want)} faces" in capsys.readouterr().out
    written = sorted(faces_dir.iterdir())
    assert [p.stem for p in written] == [Path(truth["files"][i]).stem for i in want]
    picture = np.asarray(Image.open(out).convert("RGB"))
    for k, (path, i) in enumerate(zip(written, want)):
        face = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert face.shape == (SIZE, SIZE, 3)
        # the centre crop sees only the fixture's solid colour (JPEG moves it by a few levels)
        assert np.abs(face - np.array(truth["colours"][i])).max() <= 6, path.name
        r, c = divmod(k, 2)
        y, x = PAD + r * (SIZE + GAP), PAD + c * (SIZE + GAP)
        assert np.array_equal(picture[y : y + SIZE, x : x + SIZE], face), k


def test_samples_limits_and_other_combinations(tree, tmp_path):
    root, truth = tree
    want = _expected(truth, False, True, 1)  # bearded faces with hair, validation split
    assert len(want) >= 3
    faces_dir = tmp_path / "f"
    assert main(["--celeba", str(root), "--require", "bald=0,beard=true", "--split", "valid", "--size", str(SIZE),
                 "--samples", "2", "--out", str(tmp_path / "v.png"), "--images-dir", str(faces_dir)]) == 0
    assert [p.stem for p in sorted(faces_dir.iterdir())] == [Path(truth["files"][i]).stem for i in want[:2]]


def test_beside_puts_other_grids_left_of_the_real_faces(tree, tmp_path):
    root, _ = tree
    g = np.zeros((30, 20, 3), np.uint8)
    g[..., 0] = 200
    Image.fromarray(g).save(tmp_path / "g3.png")
    out = tmp_path / "pic.png"
    assert main(["--celeba", str(root), "--size", str(SIZE), "--out", str(out), "--images-dir", str(tmp_path / "r"),
                 "--beside", f"{tmp_path / 'g3.png'}=G3\\njoint 1 %"]) == 0
    pic = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(pic[PAD : PAD + 30, PAD : PAD + 20], g)
    first = np.asarray(Image.open(sorted((tmp_path / "r").iterdir())[0]).convert("RGB"))
    x = PAD + 20 + PAD
    assert np.array_equal(pic[PAD : PAD + SIZE, x : x + SIZE], first)
    # two caption lines under the taller panel: the picture is taller than panel + one line
    assert pic.shape[0] >= PAD + 30 + 2 * 12
    # a three-line caption of the real faces makes the picture one line taller than the two-line one
    out3 = tmp_path / "pic3.png"
    assert main(["--celeba", str(root), "--size", str(SIZE), "--out", str(out3), "--caption", "a\\nb\\nc",
                 "--beside", f"{tmp_path / 'g3.png'}=G3\\njoint 1 %"]) == 0
    assert Image.open(out3).height == pic.shape[0] + 12


def test_tile_and_side_by_side_geometry():
    imgs = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)])
    t = np.asarray(tile(imgs, cols=2, gap=1))
    assert t.shape == (9, 9, 3)
    assert t[0, 0, 0] == 10 and t[0, 5, 0] == 20 and t[5, 0, 0] == 30 and t[5, 5, 0] == 255
    a, b = Image.new("RGB", (5, 7), (1, 2, 3)), Image.new("RGB", (3, 3), (4, 5, 6))
    s = np.asarray(side_by_side([(a, "x"), (b, "y")], pad=2))
    assert s.shape[1] == 2 + 5 + 2 + 3 + 2
    assert tuple(s[2, 2]) == (1, 2, 3) and tuple(s[2, 9]) == (4, 5, 6)


def test_parse_require_arg():
    assert parse_require_arg("bald=1, beard=-1") == {"bald": True, "beard": False}
    assert parse_require_arg("Eyeglasses=true") == {"Eyeglasses": True}
    for bad, msg in [("bald", "NAME=VALUE"), ("bald=maybe", "binary flag"), (",", "names no attribute"), ("=1", "NAME=VALUE")]:
        with pytest.raises(ConfigError, match=msg):
            parse_require_arg(bad)


def test_errors_name_the_problem(tree, tmp_path, capsys):
    root, truth = tree
    base = ["faces", "--celeba", str(root), "--size", str(SIZE), "--out", str(tmp_path / "e.png")]
    assert cli_main(base + ["--require", "wings=1"]) != 0
    assert "unknown attribute 'wings'" in capsys.readouterr().err
    assert cli_main(base + ["--require", "bald=1,Bald=0"]) != 0  # contradictory: nothing matches
    assert "no CelebA image matches" in capsys.readouterr().err
    assert cli_main(base + ["--require", "bald=1", "--beside", str(tmp_path / "missing.png") + "=G1"]) != 0
    assert "missing.png" in capsys.readouterr().err
    assert cli_main(base + ["--require", "bald=1", "--beside", "no-caption"]) != 0
    assert "IMAGE=CAPTION" in capsys.readouterr().err
    assert cli_main(["faces", "--celeba", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n.png")]) != 0
    assert "nowhere" in capsys.readouterr().err
    assert cli_main(["faces", "--out", str(tmp_path / "s.png"), "--beside", "a.png=b"]) == 2
    assert "need --celeba" in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()
