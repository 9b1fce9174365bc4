"""CelebA reader on generated trees: both label layouts, partial copies, malformed rows, filters."""

import warnings

import numpy as np
import pytest
import torch
from celeba_fixtures import CELEBA_COLUMNS, make_celeba

from multifeat.data import AttributeDataModule, CelebADataset, DataWarning
from multifeat.errors import DataError


def col(truth, name):
    return truth["values"][:, CELEBA_COLUMNS.index(name)] == 1


def expected_default_attrs(truth):
    """bald, beard = Goatee or Mustache or not No_Beard, eyeglasses, smiling (worked out independently)."""
    beard = col(truth, "Goatee") | col(truth, "Mustache") | ~col(truth, "No_Beard")
    return np.stack([col(truth, "Bald"), beard, col(truth, "Eyeglasses"), col(truth, "Smiling")], 1).astype(np.float32)


@pytest.mark.parametrize("layout", ["official", "csv"])
def test_labels_images_and_crop(tmp_path, layout):
    truth = make_celeba(tmp_path, n=12, layout=layout)
    ds = CelebADataset(tmp_path, image_size=8)
    assert len(ds) == 12 and ds.files == truth["files"]
    assert np.array_equal(ds.labels.numpy(), expected_default_attrs(truth))
    for i in (0, 5, 11):
        item = ds[i]
        assert item["image"].shape == (3, 8, 8) and item["index"] == i
        rgb = (item["image"] + 1) * 127.5
        # centre crop keeps only the solid centre colour (blue bands above/below are cut away)
        want = torch.tensor(truth["colours"][i], dtype=torch.float32).view(3, 1, 1)
        assert (rgb - want).abs().max() < 12, (i, rgb.mean((1, 2)))


def test_root_may_be_the_celeba_folder_itself(celeba_tree):
    truth, root = celeba_tree
    assert len(CelebADataset(root / "celeba", image_size=8)) == len(truth["files"])


def test_raw_columns_and_order(celeba_tree):
    truth, root = celeba_tree
    ds = CelebADataset(root, image_size=8, attributes=["Male", "bald", "Young"])
    want = np.stack([col(truth, "Male"), col(truth, "Bald"), col(truth, "Young")], 1).astype(np.float32)
    assert np.array_equal(ds.labels.numpy(), want)
    assert ds[0]["attrs"].tolist() == want[0].tolist()


def test_custom_derived_group(celeba_tree):
    truth, root = celeba_tree
    ds = CelebADataset(root, image_size=8, attributes=["beard", "hairless"],
                       derived={"hairless": ["Bald", "Receding_Hairline"], "beard": ["Goatee"]})
    want = np.stack([col(truth, "Goatee"), col(truth, "Bald") | col(truth, "Receding_Hairline")], 1)
    assert np.array_equal(ds.labels.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("flag_true, flag_false", [(1, -1), (True, False), ("true", "false")])
def test_require_filter(celeba_tree, flag_true, flag_false):
    truth, root = celeba_tree
    ds = CelebADataset(root, image_size=8, require={"Male": flag_false, "beard": flag_true})
    beard = expected_default_attrs(truth)[:, 1].astype(bool)
    keep = ~col(truth, "Male") & beard
    assert 0 < keep.sum() < len(keep)
    assert ds.files == [f for f, k in zip(truth["files"], keep) if k]


def test_filter_matching_nothing(tmp_path):
    truth = make_celeba(tmp_path, n=6)
    # make a column all -1 to be sure
    p = truth["base"] / "list_attr_celeba.txt"
    lines = p.read_text().splitlines()
    j = CELEBA_COLUMNS.index("Wearing_Hat")
    for k in range(2, len(lines)):
        toks = lines[k].split()
        toks[j + 1] = "-1"
        lines[k] = " ".join(toks)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="no CelebA image matches"):
        CelebADataset(tmp_path, require={"Wearing_Hat": 1})


def test_unknown_attribute_lists_valid_names(celeba_tree):
    _, root = celeba_tree
    with pytest.raises(DataError, match="unknown attribute 'hat'") as e:
        CelebADataset(root, attributes=["bald", "hat"])
    msg = str(e.value)
    assert "Wearing_Hat" in msg and "beard" in msg and "5_o_Clock_Shadow" in msg
    with pytest.raises(DataError, match="unknown attribute 'Hatless'"):
        CelebADataset(root, require={"Hatless": 1})
    with pytest.raises(DataError, match="unknown CelebA column 'Nope'"):
        CelebADataset(root, derived={"x": ["Nope"]}, attributes=["x"])


def test_partial_copy_fewer_images_than_rows(tmp_path):
    truth = make_celeba(tmp_path, n=10)
    for f in truth["files"][:3]:
        (truth["base"] / "img_align_celeba" / f).unlink()
    with pytest.warns(DataWarning, match=r"7 image files, 10 label rows.*3 rows without an image, 0 images without a row"):
        ds = CelebADataset(tmp_path, image_size=8)
    assert ds.files == truth["files"][3:]
    assert (ds.num_image_files, ds.num_label_rows) == (7, 10)
    assert np.array_equal(ds.labels.numpy(), expected_default_attrs(truth)[3:])


def test_partial_copy_fewer_rows_than_images(tmp_path):
    truth = make_celeba(tmp_path, n=10)
    p = truth["base"] / "list_attr_celeba.txt"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:2] + lines[2:8]) + "\n")  # 6 rows left, count line still says 10
    with pytest.warns(DataWarning) as rec:
        ds = CelebADataset(tmp_path, image_size=8)
    text = " | ".join(str(w.message) for w in rec)
    assert "declares 10 images but 6 rows" in text
    assert "10 image files, 6 label rows" in text and "4 images without a row" in text
    assert ds.files == truth["files"][:6]


@pytest.mark.parametrize("layout", ["official", "csv"])
@pytest.mark.parametrize("kind", ["too_few", "bad_value"])
def test_malformed_row_names_file_and_line(tmp_path, layout, kind):
    truth = make_celeba(tmp_path, n=8, layout=layout)
    p = truth["base"] / ("list_attr_celeba.txt" if layout == "official" else "list_attr_celeba.csv")
    lines = p.read_text().splitlines()
    k = 5  # 0-based -> file line 6
    sep = " " if layout == "official" else ","
    toks = lines[k].split() if layout == "official" else lines[k].split(",")
    if kind == "too_few":
        toks = toks[:-2]
    else:
        toks[3] = "2"
    lines[k] = sep.join(toks)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{p.name}:6: "):
        CelebADataset(tmp_path)


def test_bad_count_line_and_partition_line(tmp_path):
    truth = make_celeba(tmp_path, n=6)
    p = truth["base"] / "list_attr_celeba.txt"
    text = p.read_text().splitlines()
    p.write_text("\n".join(["six"] + text[1:]) + "\n")
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:1: expected the number of images"):
        CelebADataset(tmp_path)
    p.write_text("\n".join(text) + "\n")
    q = truth["base"] / "list_eval_partition.txt"
    q.write_text("000001.jpg 0\n000002.jpg 7\n")
    with pytest.raises(DataError, match=r"list_eval_partition.txt:2: "):
        CelebADataset(tmp_path, split="train")


@pytest.mark.parametrize("layout", ["official", "csv"])
def test_official_partition(tmp_path, layout):
    truth = make_celeba(tmp_path, n=12, layout=layout)
    for name, code in (("train", 0), ("valid", 1), ("test", 2)):
        ds = CelebADataset(tmp_path, image_size=8, split=name)
        assert ds.files == [f for f, p in zip(truth["files"], truth["parts"]) if p == code]


def test_seeded_split_without_partition(tmp_path):
    truth = make_celeba(tmp_path, n=20, partition=False)
    tr = CelebADataset(tmp_path, image_size=8, split="train", val_fraction=0.25, seed=3)
    va = CelebADataset(tmp_path, image_size=8, split="valid", val_fraction=0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15
    assert sorted(tr.files + va.files) == truth["files"]
    assert CelebADataset(tmp_path, image_size=8, split="valid", val_fraction=0.25, seed=3).files == va.files
    assert CelebADataset(tmp_path, image_size=8, split="valid", val_fraction=0.25, seed=4).files != va.files
    with pytest.raises(DataError, match="list_eval_partition"):
        CelebADataset(tmp_path, split="test")


def test_missing_tree_and_labels(tmp_path):
    with pytest.raises(DataError, match="CelebA not found"):
        CelebADataset(tmp_path / "nowhere")
    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(DataError, match="list_attr_celeba"):
        CelebADataset(tmp_path)


def test_datamodule_celeba(tmp_path):
    truth = make_celeba(tmp_path, n=12)
    dm = AttributeDataModule(source="celeba", root=str(tmp_path), image_size=8, batch_size=4, attributes=["smiling", "bald"])
    dm.setup()
    # official partition: train = parts 0
    assert len(dm.train_set) == 4 and len(dm.val_set) == 4
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["attrs"].shape == (4, 2)
    idx = batch["index"].tolist()
    files = [dm.val_set.files[i] for i in idx]
    rows = [truth["files"].index(f) for f in files]
    want = np.stack([col(truth, "Smiling"), col(truth, "Bald")], 1)[rows].astype(np.float32)
    assert np.array_equal(batch["attrs"].numpy(), want)


def test_no_warning_for_complete_copy(celeba_tree):
    _, root = celeba_tree
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CelebADataset(root, image_size=8)
