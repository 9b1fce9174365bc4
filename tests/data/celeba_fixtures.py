"""Small CelebA-like trees generated on the fly (tiny JPEGs + label files)."""

from pathlib import Path

import numpy as np
from PIL import Image

CELEBA_COLUMNS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def make_celeba(root: Path, n: int = 12, layout: str = "official", seed: int = 0, partition: bool = True,
                size=(24, 32)) -> dict:
    """Write ``root/celeba`` with ``n`` JPEGs and labels; return the ground truth.

    Each image is a solid colour (index-coded) inside its centre square and blue above/below it, so
    a correct centre crop sees only the solid colour.
    """
    rng = np.random.default_rng(seed)
    base = root / "celeba"
    img_dir = base / "img_align_celeba"
    img_dir.mkdir(parents=True)
    values = rng.choice([-1, 1], size=(n, len(CELEBA_COLUMNS)))
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    colours = []
    w, h = size
    for i, f in enumerate(files):
        colour = (40 + 15 * (i % 12), 200 - 10 * (i % 12), 90)
        colours.append(colour)
        arr = np.zeros((h, w, 3), np.uint8)
        arr[:] = (0, 0, 255)
        top = (h - w) // 2
        arr[top : top + w] = colour
        Image.fromarray(arr).save(img_dir / f, quality=100, subsampling=0)
    if layout == "official":
        lines = [str(n), " ".join(CELEBA_COLUMNS)]
        lines += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
        (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    else:
        lines = ["image_id," + ",".join(CELEBA_COLUMNS)]
        lines += [f + "," + ",".join(str(v) for v in row) for f, row in zip(files, values)]
        (base / "list_attr_celeba.csv").write_text("\n".join(lines) + "\n")
    parts = [i % 3 for i in range(n)]
    if partition:
        if layout == "official":
            (base / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, parts)))
        else:
            (base / "list_eval_partition.csv").write_text("image_id,partition\n" + "".join(f"{f},{p}\n" for f, p in zip(files, parts)))
    return {"files": files, "values": values, "colours": colours, "parts": parts, "base": base}
