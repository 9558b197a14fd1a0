"""The house as docs/architecture.md draws it: imports run down, the tree lists every module, the trace is real."""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "texplain"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
ENTRY_POINTS = {"texplain", "texplain.__main__"}
"""The public API (``__init__``, which imports nothing but names modules) and ``python -m``: above every floor."""
ROOT_HELPERS = "root"


def floors() -> dict[str, int]:
    """Room → floor (higher is further up), from architecture.md's "Floors, top first:" line."""
    line = next(line for line in ARCHITECTURE.splitlines() if "Floors, top first:" in line)
    levels = line.split("Floors, top first:", 1)[1].split("·")
    assert levels[-1].strip().rstrip(".") == "the root helpers", line
    rooms = {ROOT_HELPERS: 0}
    for height, level in enumerate(reversed(levels[:-1]), start=1):
        for room in re.findall(r"`(\w+)`", level):
            rooms[room] = height
    return rooms


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    """The folder a module lives in (its room), or the root helpers for a module directly in the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ROOT_HELPERS


def imports_of(path: Path) -> set[str]:
    """Every texplain module ``path`` imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if _is_module(f"{target}.{alias.name}"))
    return {name for name in found if name == "texplain" or name.startswith("texplain.")}


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative).is_dir()


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_folder_has_a_floor() -> None:
    rooms = floors()
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders - set(rooms) == set(), "a folder the floors of docs/architecture.md do not place"
    assert set(rooms) - folders - {ROOT_HELPERS} == set(), "a floor names a folder that does not exist"


def test_imports_run_down_the_floors() -> None:
    rooms = floors()
    upward = []
    for module, targets in import_graph().items():
        if module in ENTRY_POINTS:
            continue
        for target in targets:
            here, there = room_of(module), room_of(target)
            if here != there and rooms[there] > rooms[here]:
                upward.append(f"{module} → {target} ({here} is below {there})")
    assert upward == []


def test_no_folder_imports_another_round() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module not in ENTRY_POINTS:
            for target in targets:
                if room_of(target) != room_of(module):
                    edges.setdefault(room_of(module), set()).add(room_of(target))
    loops = [loop for room in sorted(edges) if (loop := _path_back(edges, room))]
    assert loops == []


def _path_back(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of folder imports from ``start`` back to itself, if there is one (depth first)."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        room, path = stack.pop()
        for nxt in sorted(edges.get(room, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_checks_see_an_upward_import_and_a_loop(tmp_path) -> None:
    """The graph the checks read is the real one: the five imports that once ran up would be caught."""
    rooms = floors()
    assert rooms["generate"] < rooms["analysis"] < rooms["report"] and rooms["models"] < rooms["generate"]
    assert room_of("texplain.text.words") == "text" and room_of("texplain.statistics") == ROOT_HELPERS
    assert room_of("texplain.demo.run") == "demo"
    assert "texplain.models.features" in import_graph()["texplain.report.explained_images"]
    assert _path_back({"models": {"generate"}, "generate": {"models"}}, "models") == ["models", "generate", "models"]


def documented_modules() -> set[str]:
    """Every module named in architecture.md's tree, as a path under src/texplain."""
    block = ARCHITECTURE.split("```", 2)[1]
    listed, folder = set(), None
    for line in block.splitlines()[2:]:
        if match := re.match(r"^  (\w+)/\s+(.*)$", line):
            folder, rest = match.groups()
            listed.update(f"{folder}/{name}" for name in re.findall(r"[\w/]+\.py", rest))
        elif match := re.match(r"^  ([\w]+\.py)\s", line):
            folder = None
            listed.add(match.group(1))
        elif folder and line.startswith("    "):
            listed.update(f"{folder}/{name}" for name in re.findall(r"[\w/]+\.py", line))
    return listed


def test_the_tree_in_architecture_md_lists_every_module() -> None:
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    package_markers = {f for f in files if f.endswith("/__init__.py") and not f.startswith("cli/")}
    assert documented_modules() == files - package_markers


def test_the_pixels_to_cloud_trace_is_the_call_path(tmp_path, tiny_lm_folder, images) -> None:
    """`texplain explain` on tiny models calls every function architecture.md's trace names, and settles files once."""
    from conftest import tiny_vit
    from texplain import cli
    from texplain.models.classifiers import load_classifier, save_classifier
    from texplain.models.lm import load_lm
    from texplain.models.translator import new_translator, save_translator

    save_classifier(tiny_vit(), tmp_path / "classifier")
    classifier, lm = load_classifier(str(tmp_path / "classifier")), load_lm(str(tiny_lm_folder))
    features, _ = classifier.features_and_logits(classifier.preprocess(load_rgb_image(images[0]))[None])
    save_translator(new_translator(classifier, lm, tuple(features.shape[1:]), prefix_len=3, hidden=16), tmp_path / "t")

    called: Counter[str] = Counter()

    def record(frame, event, arg) -> None:
        if event == "call":
            called[f"{frame.f_globals.get('__name__')}.{frame.f_code.co_qualname}"] += 1

    sys.setprofile(record)
    try:
        code = cli.main(["explain", str(images[0]), "--translator", str(tmp_path / "t"), "--out", str(tmp_path / "out"),
                         "--samples", "4", "--max-words", "6"])
    finally:
        sys.setprofile(None)
    assert code == 0
    named = traced_names()
    assert len(named) > 20
    missing = [name for name in named if not any(c == name or c.startswith(f"{name}.") for c in called)]
    assert missing == []
    assert called["texplain.report.explained_images.output_files"] == 1  # settled once, before the models load


def traced_names() -> list[str]:
    """The texplain functions named in the "One image, from pixels to word cloud" trace, as full dotted names."""
    section = ARCHITECTURE.split("## One image, from pixels to word cloud", 1)[1].split("\nA data set goes", 1)[0]
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir()} | {p.stem for p in PACKAGE.glob("*.py")}
    names = re.findall(r"`([a-z_]+(?:\.\w+)+)`", section)
    return list(dict.fromkeys(f"texplain.{n}" for n in names if n.split(".")[0] in rooms))


def load_rgb_image(path: Path):
    from texplain.data.images import load_rgb

    return load_rgb(path)


@pytest.mark.parametrize("name", ["texplain.generate.sampling.sample_rows", "texplain.text.words.sentence_words"])
def test_the_trace_parser_reads_the_trace(name) -> None:
    assert name in traced_names()
