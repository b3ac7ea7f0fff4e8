"""read_image / read_mask: every mode becomes RGB uint8, bad files raise DatasetError naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgad.data.images import IMAGE_EXTENSIONS, DatasetError, is_image_file, read_image, read_mask


def _rgb(h: int = 6, w: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_rgb(arr: np.ndarray, h: int = 6, w: int = 8) -> None:
    assert arr.dtype == np.uint8
    assert arr.shape == (h, w, 3)


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    _check_rgb(out)
    np.testing.assert_array_equal(out, a)


def test_grey_l_becomes_three_equal_channels(tmp_path: Path) -> None:
    g = _rgb()[..., 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    _check_rgb(out)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_grey_alpha_la(tmp_path: Path) -> None:
    g = _rgb()[..., :2]
    Image.fromarray(g, mode="LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    _check_rgb(out)
    np.testing.assert_array_equal(out[..., 1], g[..., 0])


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    a = np.dstack([_rgb(), np.full((6, 8), 7, np.uint8)])
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    _check_rgb(out)
    np.testing.assert_array_equal(out, a[..., :3])


@pytest.mark.parametrize("transparency", [False, True])
def test_palette(tmp_path: Path, transparency: bool) -> None:
    img = Image.new("P", (8, 6))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putpixel((1, 1), 1)
    img.putpixel((2, 2), 2)
    kwargs = {"transparency": 0} if transparency else {}
    img.save(tmp_path / "p.png", **kwargs)
    out = read_image(tmp_path / "p.png")
    _check_rgb(out)
    assert tuple(out[1, 1]) == (255, 0, 0)
    assert tuple(out[2, 2]) == (0, 255, 0)
    assert tuple(out[0, 0]) == (0, 0, 0)


def test_16bit_png_scaled_to_8bit(tmp_path: Path) -> None:
    a = np.array([[0, 257, 65535, 32768], [1000, 20000, 40000, 65280]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    out = read_image(tmp_path / "d.png")
    _check_rgb(out, 2, 4)
    expected = np.rint(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 2], expected)
    assert out[0, 2, 0] == 255 and out[0, 0, 0] == 0 and out[0, 1, 0] == 1


def test_mode_1_bilevel(tmp_path: Path) -> None:
    img = Image.new("1", (8, 6), 0)
    img.putpixel((3, 2), 1)
    img.save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    _check_rgb(out)
    assert tuple(out[2, 3]) == (255, 255, 255)
    assert out.sum() == 3 * 255


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    out = read_image(tmp_path / "c.jpg")
    _check_rgb(out)
    r, g, b = out[3, 3].astype(int)
    assert r > 200 and g < 60 and b < 60  # cyan/magenta/yellow = 0/255/255 -> red


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".jpeg"])
def test_other_formats(tmp_path: Path, ext: str) -> None:
    Image.fromarray(_rgb()).save(tmp_path / f"x{ext}")
    _check_rgb(read_image(tmp_path / f"x{ext}"))


def test_truncated_png_raises_naming_file(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "ok.png"
    )
    data = (tmp_path / "ok.png").read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated.png"):
        read_image(bad)


def test_not_an_image_and_missing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_text("hello")
    with pytest.raises(DatasetError, match="junk.png"):
        read_image(junk)
    with pytest.raises(DatasetError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    with pytest.raises(DatasetError, match="nothere_mask.png"):
        read_mask(tmp_path / "nothere_mask.png")


def test_image_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)
    for name in ["a.png", "a.JPG", "a.Jpeg", "b/c.TIFF", "x.bmp"]:
        assert is_image_file(Path(name)), name
    for name in ["a.txt", "a", "a.png.bak", "a.gif", "README"]:
        assert not is_image_file(name), name


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("value", [1, 255, 37])
def test_mask_two_levels_grey(tmp_path: Path, value: int) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 2:5] = value
    Image.fromarray(m).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", expected_size=(8, 6))
    assert out.dtype == np.uint8 and out.shape == (6, 8)
    np.testing.assert_array_equal(out, (m > 0).astype(np.uint8))


def test_mask_rgb_and_bilevel_and_16bit(tmp_path: Path) -> None:
    m = np.zeros((6, 8), bool)
    m[2:4, 1:3] = True
    Image.fromarray(np.dstack([m * 255] * 3).astype(np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(m).convert("1").save(tmp_path / "one.png")
    Image.fromarray((m * 65535).astype(np.uint16)).save(tmp_path / "d16.png")
    Image.fromarray(np.dstack([m * 255, m * 0, m * 0]).astype(np.uint8)).save(tmp_path / "red.png")
    for name in ["rgb.png", "one.png", "d16.png", "red.png"]:
        out = read_mask(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (6, 8), name
        np.testing.assert_array_equal(out, m.astype(np.uint8), err_msg=name)


def test_mask_single_level(tmp_path: Path) -> None:
    Image.new("L", (8, 6), 0).save(tmp_path / "empty.png")
    Image.new("L", (8, 6), 255).save(tmp_path / "full.png")
    assert read_mask(tmp_path / "empty.png").sum() == 0
    assert read_mask(tmp_path / "full.png").sum() == 48


def test_mask_not_binary(tmp_path: Path) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[0, 0], m[1, 1] = 128, 255
    Image.fromarray(m).save(tmp_path / "grey_mask.png")
    with pytest.raises(DatasetError, match=r"grey_mask\.png.*not binary") as err:
        read_mask(tmp_path / "grey_mask.png")
    assert "128" in str(err.value) and "255" in str(err.value)


def test_mask_rgb_two_colours_not_binary(tmp_path: Path) -> None:
    a = np.zeros((6, 8, 3), np.uint8)
    a[0, 0] = (255, 0, 0)
    a[1, 1] = (0, 100, 0)
    Image.fromarray(a).save(tmp_path / "colours.png")
    with pytest.raises(DatasetError, match="not binary"):
        read_mask(tmp_path / "colours.png")


def test_mask_size_mismatch(tmp_path: Path) -> None:
    Image.new("L", (8, 6), 0).save(tmp_path / "small_mask.png")
    with pytest.raises(DatasetError, match=r"small_mask\.png") as err:
        read_mask(tmp_path / "small_mask.png", expected_size=(16, 12))
    assert "8x6" in str(err.value) and "16x12" in str(err.value)


def test_truncated_mask(tmp_path: Path) -> None:
    m = (np.random.default_rng(2).random((64, 64)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(m).save(tmp_path / "m.png")
    data = (tmp_path / "m.png").read_bytes()
    (tmp_path / "cut_mask.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut_mask.png"):
        read_mask(tmp_path / "cut_mask.png")
