"""ImageFolderDataset: mode conversions, bad files, strict mode, small images, missing folders."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from multifeat.data import AttributeDataModule, DataWarning, ImageFolderDataset
from multifeat.errors import ConfigError, DataError


def rgb_of(item):
    """Item image back to uint8-range floats [3,H,W]."""
    return ((item["image"] + 1) * 127.5).round()


def solid(mode, size, value):
    return Image.new(mode, (size, size), value)


def write_good(folder, n=3, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        solid("RGB", size, (10 * i, 100, 200)).save(folder / f"good{i}.png")


def noise_jpeg_bytes(size=64):
    arr = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def truncated_jpeg_bytes():
    """The first half of a valid JPEG: the header parses, the pixel data ends early."""
    data = noise_jpeg_bytes()
    return data[: len(data) // 2]


def load_only(path, size=8):
    ds = ImageFolderDataset(path.parent, image_size=size)
    [i] = [k for k, f in enumerate(ds.files) if f.name == path.name]
    return rgb_of(ds[i])


@pytest.mark.parametrize("name, make, want", [
    ("grey.png", lambda: solid("L", 8, 77), (77, 77, 77)),
    ("bits.png", lambda: solid("1", 8, 1), (255, 255, 255)),
    ("rgba_clear.png", lambda: solid("RGBA", 8, (255, 0, 0, 0)), (255, 255, 255)),  # over white
    ("rgba_opaque.png", lambda: solid("RGBA", 8, (0, 0, 255, 255)), (0, 0, 255)),
    ("rgba_half.png", lambda: solid("RGBA", 8, (0, 255, 0, 128)), (127, 255, 127)),
    ("la.png", lambda: solid("LA", 8, (0, 0)), (255, 255, 255)),
    ("bmp.bmp", lambda: solid("RGB", 8, (1, 2, 3)), (1, 2, 3)),
    ("webp.webp", lambda: solid("RGB", 8, (200, 50, 20)), (200, 50, 20)),
])
def test_mode_conversions(tmp_path, name, make, want):
    img = make()
    if name.endswith(".webp"):
        img.save(tmp_path / name, lossless=True)
    else:
        img.save(tmp_path / name)
    got = load_only(tmp_path / name)
    assert (got - torch.tensor(want, dtype=torch.float32).view(3, 1, 1)).abs().max() <= 1.0, got[:, 0, 0]


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 1)
    p.save(tmp_path / "pal.png")
    got = load_only(tmp_path / "pal.png")
    assert got[:, 0, 0].tolist() == [200, 100, 50] and got[:, 4, 4].tolist() == [10, 20, 30]
    p.save(tmp_path / "pal_t.png", transparency=0)
    got = load_only(tmp_path / "pal_t.png")
    assert got[:, 0, 0].tolist() == [200, 100, 50] and got[:, 4, 4].tolist() == [255, 255, 255]


def test_cmyk_jpeg(tmp_path):
    solid("CMYK", 16, (0, 255, 255, 0)).save(tmp_path / "red.jpg", quality=100)
    solid("CMYK", 16, (0, 0, 0, 128)).save(tmp_path / "grey.jpg", quality=100)
    red = load_only(tmp_path / "red.jpg", size=16)
    grey = load_only(tmp_path / "grey.jpg", size=16)
    assert (red - torch.tensor([255.0, 0, 0]).view(3, 1, 1)).abs().max() <= 4
    assert (grey - 127).abs().max() <= 4


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.zeros((8, 8), np.uint16)
    arr[0, 0], arr[0, 1], arr[0, 2] = 65535, 0x8080, 0x00FF
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    got = load_only(tmp_path / "deep.png")
    assert got[:, 0, 0].tolist() == [255] * 3
    assert got[:, 0, 1].tolist() == [128] * 3
    assert got[:, 0, 2].tolist() == [0] * 3  # 255/65535 is (almost) black, not white


def make_bad_files(folder):
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes_as.png").write_text("this is text, not a picture\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "truncated.jpg").write_bytes(truncated_jpeg_bytes())


def test_bad_files_skipped_with_one_warning(tmp_path):
    write_good(tmp_path)
    make_bad_files(tmp_path)
    (tmp_path / "readme.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"junk")  # hidden: ignored, not reported
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = ImageFolderDataset(tmp_path, image_size=8)
    msgs = [str(w.message) for w in rec if issubclass(w.category, DataWarning)]
    assert len(msgs) == 1, msgs
    assert "skipped 3 unreadable file(s)" in msgs[0]
    for name in ("corrupt.jpg", "zero.png", "notes_as.png"):
        assert name in msgs[0]
    assert ".hidden" not in msgs[0] and "readme" not in msgs[0]
    # the truncated JPEG passes the cheap header scan, fails at load, is replaced by the next image
    names = [f.name for f in ds.files]
    assert names == ["good0.png", "good1.png", "good2.png", "truncated.jpg"]
    with pytest.warns(DataWarning, match="truncated.jpg"):
        item = ds[3]
    assert torch.equal(item["image"], ds[0]["image"]) and item["index"] == 3


def test_full_scan_catches_truncated_files_at_setup(tmp_path):
    write_good(tmp_path)
    make_bad_files(tmp_path)
    with pytest.warns(DataWarning, match=r"skipped 4 unreadable file\(s\).*truncated.jpg"):
        ds = ImageFolderDataset(tmp_path, image_size=8, scan="full")
    assert len(ds) == 3


@pytest.mark.parametrize("bad", ["corrupt.jpg", "zero.png", "notes_as.png"])
def test_strict_mode_raises_naming_the_file(tmp_path, bad):
    write_good(tmp_path)
    make_bad_files(tmp_path)
    for other in ("corrupt.jpg", "zero.png", "notes_as.png"):
        if other != bad:
            (tmp_path / other).unlink()
    with pytest.raises(DataError, match=bad):
        ImageFolderDataset(tmp_path, image_size=8, strict=True)


def test_strict_mode_truncated_at_load(tmp_path):
    write_good(tmp_path, n=1)
    (tmp_path / "t.jpg").write_bytes(truncated_jpeg_bytes())
    ds = ImageFolderDataset(tmp_path, image_size=8, strict=True)
    with pytest.raises(DataError, match="t.jpg"):
        ds[[f.name for f in ds.files].index("t.jpg")]


def test_small_images_are_upscaled_with_a_warning(tmp_path):
    write_good(tmp_path, n=2, size=16)
    solid("RGB", 4, (0, 0, 0)).save(tmp_path / "tiny.png")
    with pytest.warns(DataWarning, match=r"1 image\(s\) .* smaller than 16 px .*tiny.png \(4x4\)"):
        ds = ImageFolderDataset(tmp_path, image_size=16)
    assert ds.upscaled and ds[[f.name for f in ds.files].index("tiny.png")]["image"].shape == (3, 16, 16)
    with pytest.raises(DataError, match="tiny.png"):
        ImageFolderDataset(tmp_path, image_size=16, strict=True)


def test_recursive_sorted_and_crop_resize(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    img = np.zeros((32, 16, 3), np.uint8)
    img[:, :] = (0, 0, 255)
    img[8:24] = (255, 0, 0)  # centre square red, bands blue
    Image.fromarray(img).save(tmp_path / "b" / "x.PNG")
    Image.fromarray(img).save(tmp_path / "a" / "deep" / "y.png")
    ds = ImageFolderDataset(tmp_path, image_size=8)
    assert [f.relative_to(tmp_path).as_posix() for f in ds.files] == ["a/deep/y.png", "b/x.PNG"]
    got = rgb_of(ds[0])
    assert (got - torch.tensor([255.0, 0, 0]).view(3, 1, 1)).abs().max() <= 1


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"empty'? contains no images"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "x.png").write_bytes(b"")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no readable images"):
        ImageFolderDataset(tmp_path / "allbad")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderDataset(tmp_path / "file.png")


def test_constant_labels_and_datamodule(tmp_path):
    write_good(tmp_path / "bald", n=10, size=16)
    ds = ImageFolderDataset(tmp_path / "bald", image_size=16, attrs={"bald": 1, "beard": -1}, attribute_names=["beard", "bald"])
    assert ds[0]["attrs"].tolist() == [0.0, 1.0]
    dm = AttributeDataModule(source="folder", root=str(tmp_path / "bald"), image_size=16, folder_attrs={"bald": 1},
                             batch_size=4, val_fraction=0.2)
    assert dm.attribute_names == ("bald",)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["attrs"].tolist() == [[1.0]] * 4
    assert len(dm.train_set) == 8 and len(dm.val_set) == 2
    with pytest.raises(ConfigError, match="folder_attrs"):
        AttributeDataModule(source="folder", root=str(tmp_path), folder_attrs={"bald": 1}, attributes=["beard"])
    with pytest.raises(ConfigError, match="matches no image"):
        AttributeDataModule(source="folder", root=str(tmp_path / "bald"), image_size=16, folder_attrs={"bald": 1},
                            require={"bald": False}).setup()
