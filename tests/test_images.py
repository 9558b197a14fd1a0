"""Every Pillow mode becomes 8-bit RGB with the right pixels; bad files name themselves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from texplain.data.images import (
    IMAGE_SUFFIXES,
    find_images,
    images_in,
    load_rgb,
)
from texplain.errors import BadImageError, TexplainError


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def test_suffixes_cover_the_common_formats():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"} <= IMAGE_SUFFIXES


def test_rgb_png_round_trips_exactly(tmp_path):
    values = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)
    path = _save(Image.fromarray(values, "RGB"), tmp_path / "a.png")
    assert (_pixels(load_rgb(path)) == values).all()


def test_grayscale_and_bilevel_become_gray_rgb(tmp_path):
    gray = _save(Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8), "L"), tmp_path / "g.png")
    assert _pixels(load_rgb(gray)).tolist() == [[[0] * 3, [100] * 3, [255] * 3]]
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    path = _save(bilevel, tmp_path / "b.png")
    assert _pixels(load_rgb(path)).tolist() == [[[0] * 3, [255] * 3]]


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 200, 10, 10] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    path = _save(image, tmp_path / "p.gif", transparency=0)
    assert _pixels(load_rgb(path)).tolist() == [[[255, 255, 255], [200, 10, 10]]]


def test_palette_without_transparency_uses_the_palette(tmp_path):
    image = Image.new("P", (1, 1))
    image.putpalette([12, 34, 56] + [0] * 765)
    path = _save(image, tmp_path / "p.png")
    assert _pixels(load_rgb(path)).tolist() == [[[12, 34, 56]]]


def test_rgba_transparent_pixel_becomes_white_and_half_alpha_blends(tmp_path):
    values = np.array([[[10, 20, 30, 0], [0, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    path = _save(Image.fromarray(values, "RGBA"), tmp_path / "t.png")
    pixels = _pixels(load_rgb(path))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [0, 0, 0]
    assert np.abs(pixels[0, 2] - 127).max() <= 1


def test_la_transparent_pixel_becomes_white(tmp_path):
    values = np.array([[[0, 0], [50, 255]]], dtype=np.uint8)
    path = _save(Image.fromarray(values, "LA"), tmp_path / "la.png")
    assert _pixels(load_rgb(path)).tolist() == [[[255] * 3, [50] * 3]]


def test_cmyk_known_colours(tmp_path):
    image = Image.new("CMYK", (3, 1))
    image.putpixel((0, 0), (0, 255, 255, 0))
    image.putpixel((1, 0), (255, 0, 0, 0))
    image.putpixel((2, 0), (0, 0, 0, 255))
    path = _save(image, tmp_path / "c.tif")
    expected = np.array([[[255, 0, 0], [0, 255, 255], [0, 0, 0]]])
    assert np.abs(_pixels(load_rgb(path)) - expected).max() <= 2


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_is_scaled_not_clipped(tmp_path, mode):
    values = np.array([[0, 32768, 65535]], dtype="<u2" if mode == "I;16" else ">u2")
    path = _save(Image.frombytes(mode, (3, 1), values.tobytes()), tmp_path / "s.tif")
    gray = _pixels(load_rgb(path))[0, :, 0].tolist()
    assert gray[0] == 0 and abs(gray[1] - 128) <= 1 and gray[2] == 255


def test_16bit_png_is_scaled(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "s.png")
    assert _pixels(load_rgb(path))[0, :, 0].tolist() == [0, 128, 255]


def test_32bit_integer_holding_16bit_values_is_scaled(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.int32)
    path = _save(Image.fromarray(values, "I"), tmp_path / "i.tif")
    assert _pixels(load_rgb(path))[0, :, 0].tolist() == [0, 128, 255]


def test_float_unit_range_is_scaled(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = _save(Image.fromarray(values, "F"), tmp_path / "f.tif")
    assert _pixels(load_rgb(path))[0, :, 0].tolist() == [0, 128, 255]


def test_float_wide_range_is_stretched(tmp_path):
    values = np.array([[-10.0, 495.0, 1000.0]], dtype=np.float32)
    path = _save(Image.fromarray(values, "F"), tmp_path / "f.tif")
    assert _pixels(load_rgb(path))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(image, tmp_path / "o.jpg", exif=exif)
    assert load_rgb(path).size == (2, 4)


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(BadImageError, match=r"nope\.jpg: no such file"):
        load_rgb(path)


def test_text_file_named_jpg_is_bad(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(BadImageError, match=r"fake\.jpg: not a readable image \(.+\)"):
        load_rgb(path)


def test_truncated_jpeg_is_bad(tmp_path):
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(BadImageError, match=r"cut\.jpg: not a readable image \(.*truncated.*\)") as info:
        load_rgb(path)
    assert "\n" not in str(info.value)


def test_bad_image_error_is_a_texplain_error(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(TexplainError, match=r"x\.png"):
        load_rgb(path)


def test_find_images_sorted_recursive_and_case_insensitive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b.PNG", "a.jpg", "sub/c.JpEg", "notes.txt", ".hidden/d.jpg", "._e.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert find_images(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b.PNG", tmp_path / "sub/c.JpEg"]
    assert find_images(tmp_path, recursive=False) == [tmp_path / "a.jpg", tmp_path / "b.PNG"]


def test_find_images_errors_name_the_folder(tmp_path):
    with pytest.raises(TexplainError, match=r"missing: no such folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("hi")
    with pytest.raises(TexplainError, match=r"empty: no image files"):
        find_images(tmp_path / "empty")


def test_a_folder_reads_good_images_and_names_the_bad(tmp_path):
    _save(Image.new("RGB", (2, 2), (1, 2, 3)), tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not an image")
    _save(Image.new("L", (2, 2), 9), tmp_path / "c.png")
    good, problems = [], []
    for path in find_images(tmp_path):
        try:
            good.append((path.name, load_rgb(path).mode))
        except BadImageError as exc:
            problems.append(str(exc))
    assert good == [("a.png", "RGB"), ("c.png", "RGB")]
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'b.jpg'}: not a readable image")


def test_images_in_takes_a_file_or_a_folder(tmp_path):
    one = _save(Image.new("RGB", (2, 2)), tmp_path / "a.png")
    assert images_in(one) == [one]
    assert images_in(tmp_path) == [one]
    with pytest.raises(TexplainError, match="no such file or folder"):
        images_in(tmp_path / "gone.png")
