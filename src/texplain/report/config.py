"""The report room's settings: what the data-set report shows.

They live apart from :mod:`.html_report` so that the command line reads
their defaults without loading the image libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

from texplain.errors import TexplainError


@dataclass
class ReportConfig:
    """What goes into the report.

    title: the page title. findings: lines shown first on the overview (the
    demo's verdict per class). images_per_class: example images per class and
    split with a drill-down (suspect examples come on top). thumbnail: the
    longest side of copied images, in pixels. seed: word-cloud layout.
    """

    title: str = "texplain: what the classifier's features say"
    findings: tuple[str, ...] = ()
    images_per_class: int = 6
    thumbnail: int = 192
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images_per_class < 0 or self.thumbnail < 16:
            raise TexplainError("report: images_per_class must be >= 0 and thumbnail >= 16")
