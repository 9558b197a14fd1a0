"""A world folder on disk, laid out as a user's data set: the scenes' PNGs, ``captions.jsonl`` and ``labels.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from texplain.atomic import write_text, writing
from texplain.demo.scenes import Scene
from texplain.errors import TexplainError


def _write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """One JSON object per line, UTF-8, written atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_text(path, text)


def _save_png(image: Image.Image, path: Path) -> None:
    """A fast-compressed PNG, written atomically."""
    with writing(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)


def write_world(scenes: Sequence[Scene], folder: str | Path, background_only: bool = False) -> Path:
    """Write the scenes as PNGs plus ``captions.jsonl`` and ``labels.jsonl``; return the folder.

    Images go to ``images/<split>/<index>_<class>_<background>.png``;
    ``captions.jsonl`` has ``{"image", "caption", "split"}`` per caption and
    ``labels.jsonl`` has ``{"path", "label", "split", "group", "background",
    "planted"}`` per image, paths relative to ``folder``. Every file is
    written atomically and the JSONL files last, so they never name a missing
    image. With ``background_only`` the images are the Only-BG renders and no
    captions are written, since the captions describe objects that are gone.
    """
    if not scenes:
        raise TexplainError("there are no scenes to write")
    folder = Path(folder)
    captions, labels = [], []
    for index, scene in enumerate(scenes):
        relative = f"images/{scene.split}/{index:06d}_{scene.label}_{scene.background}.png"
        image = scene.render_background_only() if background_only else scene.render()
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        _save_png(image, folder / relative)
        captions.extend({"image": relative, "caption": caption, "split": scene.split} for caption in scene.captions)
        labels.append(
            {
                "path": relative,
                "label": scene.label,
                "split": scene.split,
                "group": scene.group,
                "background": scene.background,
                "planted": scene.planted,
            }
        )
    if not background_only:
        _write_jsonl(folder / "captions.jsonl", captions)
    _write_jsonl(folder / "labels.jsonl", labels)
    return folder
