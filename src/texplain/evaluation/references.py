"""Which images ``texplain evaluate`` measures, each with its human reference captions.

Every captioned image of a split by default, or the images a user names
(a folder or a file), matched to the caption file by path or, where that is
unique, by file name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from texplain.data.captions import read_captions
from texplain.data.images import images_in
from texplain.errors import TexplainError

log = logging.getLogger(__name__)


def select_references(
    captions: Path, images_dir: Path | None = None, split: str | None = None, images: Path | None = None,
    limit: int | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """The images to evaluate with their reference captions, and the given images that have none.

    Every captioned image of ``split`` by default; only those under
    ``images`` (a folder or a file) when given; the first ``limit`` of them.
    """
    references = read_references(captions, images_dir, split)
    missing: list[str] = []
    if images is not None:
        candidates = [str(p) for p in images_in(images)]
        references, missing = match_images(candidates, references, captions)
    if limit is not None:
        if limit < 2:
            raise TexplainError(f"evaluate: --limit {limit}: at least 2 images are needed for the shuffled control")
        references = dict(list(references.items())[:limit])
    return references, missing


def read_references(path: Path, images_dir: Path | None, split: str | None) -> dict[str, list[str]]:
    """Image path → its reference captions, in the file's order."""
    references: dict[str, list[str]] = {}
    for pair in read_captions(path, images_dir, split):
        references.setdefault(str(pair.image), []).append(pair.caption)
    return references


def match_images(
    images: Sequence[str], references: Mapping[str, list[str]], source: os.PathLike | str = "the captions"
) -> tuple[dict[str, list[str]], list[str]]:
    """Pair each image with its references: by path, else by file name when that is unique.

    Returns (image → captions, images without references). None matching at
    all means the ids do not match: a one-line error with an example of each.
    """
    by_path = {os.path.realpath(p): p for p in references}
    names: dict[str, list[str]] = {}
    for p in references:
        names.setdefault(Path(p).name, []).append(p)
    matched, missing = {}, []
    for image in images:
        key = by_path.get(os.path.realpath(image))
        if key is None and len(names.get(Path(image).name, [])) == 1:
            key = names[Path(image).name][0]
        if key is None:
            missing.append(image)
        else:
            matched[image] = list(references[key])
    if not matched:
        example = next(iter(references), "none")
        raise TexplainError(
            f"evaluate: none of the {len(images)} images has reference captions in {source}: the image ids do not "
            f"match (e.g. {Path(images[0]).name if images else 'no image'} vs {Path(example).name})"
        )
    for image in missing:
        log.warning("%s: no reference captions in %s; left out", image, source)
    return matched, missing
