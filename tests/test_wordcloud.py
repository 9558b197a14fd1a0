"""Word-cloud PNGs: real images, red only for highlighted words, deterministic bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from texplain.errors import TexplainError
from texplain.report.wordcloud import draw_word_cloud

FREQUENCIES = {"dog": 0.9, "grass": 0.6, "ball": 0.4, "park": 0.2, "tree": 0.1}


def _red_pixels(path: Path) -> int:
    """Number of strongly red pixels (the highlight colour), ignoring anti-aliased greys."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((red > 150) & (green < 100) & (blue < 100)).sum())


def test_writes_a_png_of_the_requested_size(tmp_path: Path) -> None:
    target = tmp_path / "clouds" / "cloud.png"
    returned = draw_word_cloud(FREQUENCIES, str(target), width=320, height=160)
    assert returned == target
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.size == (320, 160)
        pixels = np.asarray(image.convert("L"))
    assert pixels.max() == 255, "background should be white"
    assert pixels.min() < 100, "some dark text should be drawn"
    assert [p.name for p in target.parent.iterdir()] == ["cloud.png"], "no temporary file left"


def test_highlighted_word_is_red_and_nothing_is_red_otherwise(tmp_path: Path) -> None:
    plain = draw_word_cloud(FREQUENCIES, tmp_path / "plain.png", width=320, height=160)
    highlighted = draw_word_cloud(
        FREQUENCIES, tmp_path / "red.png", highlight=["Dog"], width=320, height=160
    )
    assert _red_pixels(plain) == 0
    assert _red_pixels(highlighted) > 100


def test_highlighting_an_absent_word_draws_no_red(tmp_path: Path) -> None:
    path = draw_word_cloud(FREQUENCIES, tmp_path / "c.png", highlight="cat", width=320, height=160)
    assert _red_pixels(path) == 0


def test_same_inputs_and_seed_give_identical_bytes(tmp_path: Path) -> None:
    reordered = dict(reversed(list(FREQUENCIES.items())))
    first = draw_word_cloud(FREQUENCIES, tmp_path / "a.png", highlight=["dog"], seed=3)
    second = draw_word_cloud(reordered, tmp_path / "b.png", highlight=["dog"], seed=3)
    other_seed = draw_word_cloud(FREQUENCIES, tmp_path / "c.png", highlight=["dog"], seed=4)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other_seed.read_bytes()


def test_overwrites_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "cloud.png"
    target.write_bytes(b"old")
    draw_word_cloud(FREQUENCIES, target, width=200, height=100)
    assert target.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("frequencies", [{}, {"dog": 0.0}])
def test_nothing_to_draw_raises_naming_the_path(tmp_path: Path, frequencies: dict) -> None:
    target = tmp_path / "empty.png"
    with pytest.raises(TexplainError, match="nothing to draw") as caught:
        draw_word_cloud(frequencies, target)
    assert str(target) in str(caught.value)
    assert not target.exists()


@pytest.mark.parametrize(
    "frequencies, size",
    [({"dog": -0.1}, (200, 100)), ({"dog": float("nan")}, (200, 100)), (FREQUENCIES, (0, 100))],
)
def test_bad_values_raise(tmp_path: Path, frequencies: dict, size: tuple[int, int]) -> None:
    with pytest.raises(TexplainError):
        draw_word_cloud(frequencies, tmp_path / "bad.png", width=size[0], height=size[1])
