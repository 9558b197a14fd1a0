"""Reading photographs from disk as 8-bit RGB, whatever their file mode.

Every classifier backend expects an upright 8-bit RGB picture. Real folders
hold grayscale scans, palette GIFs, CMYK JPEGs, transparent PNGs and 16-bit
or floating-point TIFFs, plus the odd corrupt or truncated file. This module
turns all of those into ``PIL.Image.Image`` objects in mode ``"RGB"`` (alpha
composited on white, high bit depths scaled rather than clipped) and turns
every unreadable file into a :class:`~texplain.errors.BadImageError` that
names the file, so that a folder run can skip it and report it. Only regular
files are read: a FIFO or a device named ``x.png`` is refused, not waited on.
At most :data:`MAX_PIXELS` pixels are decoded from one file: a larger JPEG is
decoded at a half, a quarter or an eighth of its size, any other larger
image is refused before it is decoded.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from texplain.errors import BadImageError, TexplainError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)
"""File suffixes (lower case, with the dot) treated as images; matching ignores case."""

MAX_PIXELS = 50_000_000
"""The most pixels decoded from one image: 50 megapixels (8660 × 5773), 150 MB as 8-bit RGB.

A JPEG above it is decoded at the first of 1/2, 1/4, 1/8 of its size that
fits (the classifier shrinks it further anyway); any other image above it
(a 13000 × 13000 PNG, 169 megapixels) is a :class:`BadImageError` naming its
size. Pillow itself refuses images above twice its own
``Image.MAX_IMAGE_PIXELS`` (179 megapixels by default) before they are read.
"""

_WHITE = (255, 255, 255, 255)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
"""What Pillow raises on corrupt input: its decoders are not consistent about the type."""


class _Unreadable(Exception):
    """Internal: the short reason a file cannot be decoded, without the path."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` names an image by its suffix and is not a hidden file (``._x.jpg``)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def load_rgb(path: str | Path) -> Image.Image:
    """Open, fully decode and return ``path`` as an upright 8-bit RGB image.

    Raises :class:`BadImageError` ``"<path>: <problem>"`` for a missing,
    unreadable, truncated or unconvertible file.
    """
    path = Path(path)
    try:
        return _decode(path)
    except _Unreadable as err:
        raise BadImageError(f"{path}: {err}") from err.__cause__


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode ``path`` as :func:`load_rgb` does, upright but in its own mode (a mask's ``L`` or ``I;16``)."""
    path = Path(path)
    try:
        return _open_upright(path)
    except _Unreadable as err:
        raise BadImageError(f"{path}: {err}") from err.__cause__


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """Decode an image held in memory (a WebDataset or Parquet sample) as :func:`load_rgb` reads a file.

    ``name`` names the image in the :class:`BadImageError` of corrupt bytes.
    """
    try:
        return _decode(io.BytesIO(data))
    except _Unreadable as err:
        raise BadImageError(f"{name}: {err}") from err.__cause__


def image_files(folder: str | Path, recursive: bool = True, skip: str | Path | None = None) -> list[Path]:
    """Sorted image files under ``folder`` (possibly none); hidden files and folders are left out.

    So is everything under ``skip``: a command's own output folder inside
    its input folder, whose word clouds or hidden copies are not inputs.
    """
    folder = Path(folder)
    skipped = inside(folder, skip)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path
        for path in candidates
        if is_image_file(path)
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and not (skipped is not None and path.relative_to(folder).is_relative_to(skipped))
        and path.is_file()
    )


def inside(folder: Path, other: str | Path | None) -> Path | None:
    """``other`` relative to ``folder`` when it lies inside it (compared resolved), else None (``folder`` itself too)."""
    if other is None:
        return None
    other, folder = Path(other).resolve(), folder.resolve()
    return other.relative_to(folder) if other != folder and other.is_relative_to(folder) else None


def find_images(folder: str | Path, recursive: bool = True, skip: str | Path | None = None) -> list[Path]:
    """Sorted image files under ``folder`` but not under ``skip``; a missing folder, a file, or no images is an error."""
    folder = Path(folder)
    if not folder.exists():
        raise TexplainError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise TexplainError(f"{folder}: not a folder")
    found = image_files(folder, recursive, skip)
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        where = "in it or its sub-folders" if recursive else "in it"
        raise TexplainError(f"{folder}: no image files {where} (looked for {suffixes})")
    return found


def images_in(target: str | Path, skip: str | Path | None = None) -> list[Path]:
    """The images a command was pointed at: one file as given, or the image files under a folder (not under ``skip``)."""
    target = Path(target)
    if target.is_dir():
        return find_images(target, skip=skip)
    if not target.exists():
        raise TexplainError(f"{target}: no such file or folder")
    return [target]


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file: a FIFO or a device would block or never end.

    The check is made on the opened file (opened without blocking), so the
    file cannot be swapped between the check and the read.
    """
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(handle).st_mode
    if not stat.S_ISREG(mode):
        os.close(handle)
        raise _Unreadable("is a folder, not an image" if stat.S_ISDIR(mode) else "not a regular file")
    return os.fdopen(handle, "rb")


def _decode(path: Path | io.BytesIO) -> Image.Image:
    """Open, load, rotate upright by EXIF and convert ``path`` (or bytes in memory) to RGB; raise :class:`_Unreadable`."""
    upright = _open_upright(path)
    try:
        return _to_rgb(upright)
    except (ValueError, OSError) as err:
        raise _Unreadable(f"cannot convert mode {upright.mode} to RGB ({_short(err)})") from err


def _open_upright(path: Path | io.BytesIO) -> Image.Image:
    """Open, load and rotate upright by EXIF ``path`` (or bytes in memory); raise :class:`_Unreadable`.

    Pillow's warnings about a damaged file it could still read are logged in
    one line each; its decompression-bomb warning is dropped, since
    :data:`MAX_PIXELS` bounds what is decoded.
    """
    try:
        source = _open_regular(path) if isinstance(path, Path) else path
        with source as file, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(file) as opened:
                _bound(opened)
                opened.load()
                upright = ImageOps.exif_transpose(opened)
        for warning in caught:
            if not issubclass(warning.category, Image.DecompressionBombWarning):
                log.warning("%s: %s", path, _short(warning.message))
    except FileNotFoundError as err:
        raise _Unreadable("no such file") from err
    except IsADirectoryError as err:
        raise _Unreadable("is a folder, not an image") from err
    except PermissionError as err:
        raise _Unreadable("permission denied") from err
    except UnidentifiedImageError as err:
        raise _Unreadable("not a readable image (unrecognised format)") from err
    except _DECODE_ERRORS as err:
        raise _Unreadable(f"not a readable image ({_short(err)})") from err
    return upright


def _bound(image: Image.Image) -> None:
    """Keep what ``image`` will decode within :data:`MAX_PIXELS`: a JPEG at a reduced size, anything else refused."""
    width, height = image.size
    if width * height > MAX_PIXELS and image.format == "JPEG":
        scale = next((s for s in (2, 4, 8) if -(-width // s) * -(-height // s) <= MAX_PIXELS), 8)
        image.draft(None, (max(1, width // scale), max(1, height // scale)))
    if image.size[0] * image.size[1] > MAX_PIXELS:
        raise _Unreadable(f"{width}×{height} pixels, more than the {MAX_PIXELS:,} pixels this reads from one image")


def _short(err: BaseException) -> str:
    """The first line of an exception's message, at most 120 characters, or its type name."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit ``"RGB"``."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _on_white(image.convert("RGBA"))
    if mode.startswith("I") or mode == "F":
        return _scale_to_8bit(image).convert("RGB")
    return image.convert("RGB")


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite an ``"RGBA"`` image over white, so transparent pixels read as background."""
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Map a single-channel 16-bit, 32-bit integer or float image to ``"L"`` without clipping.

    ``I;16*`` modes span 0..65535. For ``I`` and ``F`` the value range is
    guessed from the extrema: ``I`` within 0..255 is 8-bit data and within
    0..65535 is 16-bit data; ``F`` within 0..1 is unit-scaled and within
    0..255 is 8-bit-scaled; anything else is stretched from its minimum to
    its maximum.
    """
    is_16bit = image.mode.startswith("I;16")
    as_float = image.convert("I").convert("F") if image.mode != "F" else image
    low, high = as_float.getextrema()
    if is_16bit or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        low, high = 0.0, 65535.0
    elif image.mode == "I" and low >= 0 and high <= 255:
        low, high = 0.0, 255.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    elif image.mode == "F" and low >= 0 and high <= 255:
        low, high = 0.0, 255.0
    scale = 255.0 / (high - low) if high > low else 0.0
    offset = 0.5 - low * scale
    return as_float.point(lambda value: value * scale + offset).convert("L")
