"""Images as users have them, from scikit-image's real photos: every mode becomes the RGB a
viewer shows (EXIF orientation applied), and broken files are named errors or counted skips."""

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from gcnet.data.datasets import BadImageError, ImageFolderChecked, _load_rgb


def _load(path) -> np.ndarray:
    return np.asarray(_load_rgb(str(path)))


def test_rgb_and_grayscale(tmp_path):
    rgb, gray = photos.astronaut(), photos.camera()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(_load(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(_load(tmp_path / "g.png"), np.repeat(gray[..., None], 3, -1))


def test_palette_png_is_its_palette_lookup(tmp_path):
    p = Image.fromarray(photos.chelsea()).quantize(32)
    p.save(tmp_path / "p.png")
    lut = np.asarray(p.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(_load(tmp_path / "p.png"), lut[np.asarray(p)])


def test_rgba_is_composited_on_white(tmp_path):
    rgb = photos.coffee()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 255  # left half opaque, right half transparent
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "t.png")
    out = _load(tmp_path / "t.png")
    half = rgb.shape[1] // 2
    np.testing.assert_array_equal(out[:, :half], rgb[:, :half])
    assert (out[:, half:] == 255).all()


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    gray = photos.camera()
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "w.png")  # 0..65535
    assert Image.open(tmp_path / "w.png").mode.startswith("I")
    np.testing.assert_array_equal(_load(tmp_path / "w.png")[..., 0], gray)


def test_cmyk_jpeg(tmp_path):
    rgb = photos.chelsea()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = _load(tmp_path / "c.jpg")
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() < 6


def test_exif_orientation_is_applied(tmp_path):
    rgb = photos.chelsea()  # 300 x 451
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = _load(tmp_path / "r.jpg")
    assert out.shape == (451, 300, 3)
    assert np.abs(out.astype(int) - np.rot90(rgb, -1)).mean() < 3


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jpg", b"", "empty"),
        ("text.png", b"this is not an image\n", "not an image"),
        ("cut.jpg", None, ""),
    ],
)
def test_broken_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:  # a JPEG cut in half (an interrupted download)
        Image.fromarray(photos.astronaut()).save(tmp_path / "full.jpg")
        content = (tmp_path / "full.jpg").read_bytes()[:4000]
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=f"cannot read image {path}.*{message}"):
        _load_rgb(str(path))


def test_an_image_folder_counts_what_it_skips(tmp_path):
    good = tmp_path / "val" / "cat"
    good.mkdir(parents=True)
    Image.fromarray(photos.chelsea()).save(good / "ok.jpg")
    (good / "empty.jpg").write_bytes(b"")
    (good / "text.png").write_text("hello")
    ds = ImageFolderChecked(str(tmp_path / "val"), skip_bad_images=True)
    items = [ds[i] for i in range(len(ds))]
    assert sum(x is None for x in items) == 2 and len(items) == 3
    strict = ImageFolderChecked(str(tmp_path / "val"))
    with pytest.raises(BadImageError, match="empty.jpg"):
        [strict[i] for i in range(len(strict))]
