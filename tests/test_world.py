"""Tests of the synthetic world: determinism, captions, the shortcut split, Only-BG and writing."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from texplain.demo.captions import BACKGROUND_WORDS, PLURALS
from texplain.demo.config import DEFAULT_SHORTCUT_CLASSES
from texplain.demo.sampling import make_scene
from texplain.demo.scenes import BACKGROUNDS, CLASSES, NOISE_SIGMA
from texplain.demo.splits import PLANTED_BACKGROUNDS, make_caption_world, make_shortcut_split, planted_background
from texplain.demo.world_files import write_world
from texplain.errors import TexplainError


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def split():
    return make_shortcut_split(n_train=600, n_test=360, bias=0.95, seed=3)


def test_same_seed_gives_identical_images_and_captions():
    first, second = make_caption_world(14, seed=5), make_caption_world(14, seed=5)
    assert first == second
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(_pixels(a.render()), _pixels(b.render()))


def test_different_seeds_differ():
    """Another seed draws other scenes from the same distribution: classes still balanced, other places and pixels."""
    first, second = make_caption_world(14, seed=1), make_caption_world(14, seed=2)
    assert Counter(s.label for s in first) == Counter(s.label for s in second) == dict.fromkeys(CLASSES, 2)
    assert [s.captions for s in first] != [s.captions for s in second]
    assert [(s.label, s.background) for s in first] != [(s.label, s.background) for s in second]
    # far more than the pixel noise alone: two noise draws differ by about 1.1 sigma on average
    assert np.abs(_pixels(first[0].render()) - _pixels(second[0].render())).mean() > 4 * NOISE_SIGMA


def test_same_class_and_background_still_differ_by_seed():
    a, b = make_scene("bird", "water", seed=1), make_scene("bird", "water", seed=2)
    assert not np.array_equal(_pixels(a.render()), _pixels(b.render()))


def test_images_have_requested_size_and_mode():
    for size in (32, 64, 96):
        image = make_scene("car", "road", seed=0, size=size).render()
        assert image.mode == "RGB" and image.size == (size, size)
        assert make_scene("car", "road", seed=0, size=size).foreground_mask().shape == (size, size)


def test_captions_name_the_class_and_the_background():
    scenes = make_caption_world(140, seed=0, n_captions=5)
    assert {s.label for s in scenes} == set(CLASSES)
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    for scene in scenes:
        assert len(scene.captions) == 5
        word = scene.label if len(scene.objects) == 1 else PLURALS[scene.label]
        for caption in scene.captions:
            words = caption.split()
            assert word in words, caption
            assert BACKGROUND_WORDS[scene.background] in words, caption
            if len(scene.objects) > 1:
                assert {"two", "three"} & set(words), caption


def test_captions_vary_and_carry_attributes():
    scenes = make_caption_world(70, seed=4)
    captions = [c for s in scenes for c in s.captions]
    assert len(set(captions)) > 0.95 * len(captions)
    assert sum(s.objects[0].colour in " ".join(s.captions) for s in scenes) == len(scenes)


def test_train_split_follows_bias_and_test_is_balanced(split):
    train = [s for s in split if s.split == "train"]
    test = [s for s in split if s.split == "test"]
    assert len(train) == 600 and len(test) == 360
    assert abs(np.mean([s.background == s.planted for s in train]) - 0.95) < 0.02
    groups = Counter(s.group for s in test)
    assert len(groups) == len(DEFAULT_SHORTCUT_CLASSES) ** 2
    assert max(groups.values()) - min(groups.values()) <= 1
    assert Counter(s.label for s in train) == Counter(dict.fromkeys(DEFAULT_SHORTCUT_CLASSES, 200))


def test_items_record_group_and_planted_background(split):
    for scene in split:
        assert scene.group == f"{scene.label}|{scene.background}"
        assert scene.planted == planted_background(scene.label) == PLANTED_BACKGROUNDS[scene.label]
        assert scene.label == scene.objects[0].kind
    assert planted_background("bird") == "water"


def test_balanced_train_is_the_control():
    for scenes in (
        make_shortcut_split(n_train=180, n_test=9, bias=None),
        make_shortcut_split(n_train=180, n_test=9, balanced=True),
    ):
        train = Counter(s.group for s in scenes if s.split == "train")
        assert set(train.values()) == {20}


def test_only_background_matches_outside_mask_and_differs_inside():
    for cls in CLASSES:
        scene = make_scene(cls, "grass", seed=11)
        mask = scene.foreground_mask()
        assert mask.dtype == bool and mask.any() and not mask.all()
        full, background = _pixels(scene.render()), _pixels(scene.render_background_only())
        assert np.array_equal(full[~mask], background[~mask])
        assert np.abs(full[mask] - background[mask]).mean() > 20


def test_shapes_tell_the_classes_apart():
    """Nearest-centroid on cropped, mirror-normalised silhouettes: the classes differ by shape alone."""

    def silhouette(scene):
        mask = scene.foreground_mask()
        rows, cols = np.nonzero(mask)
        crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        crop = crop[:, ::-1] if scene.objects[0].facing < 0 else crop
        small = Image.fromarray(crop.astype(np.uint8) * 255).resize((12, 12), Image.Resampling.BILINEAR)
        return np.asarray(small, np.float32).ravel() / 255

    scenes = [make_scene(CLASSES[i % 7], BACKGROUNDS[i // 7 % 7], seed=i) for i in range(420)]
    singles = [s for s in scenes if len(s.objects) == 1]
    half = len(singles) // 2
    features = np.stack([silhouette(s) for s in singles])
    labels = np.array([s.label for s in singles])
    centroids = np.stack([features[:half][labels[:half] == c].mean(0) for c in CLASSES])
    distances = ((features[half:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = np.mean(np.array(CLASSES)[distances.argmin(1)] == labels[half:])
    assert accuracy > 0.9


def test_write_world_files_are_readable(tmp_path):
    scenes = make_shortcut_split(n_train=6, n_test=3, seed=0, n_captions=2)
    folder = write_world(scenes, tmp_path / "world")
    captions = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    labels = [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]
    assert len(captions) == 18 and len(labels) == 9
    assert set(captions[0]) == {"image", "caption", "split"}
    assert {"path", "label", "split", "group", "background"} <= set(labels[0])
    assert [row["split"] for row in labels] == ["train"] * 6 + ["test"] * 3
    for row, scene in zip(labels, scenes, strict=True):
        with Image.open(folder / row["path"]) as image:
            assert np.array_equal(_pixels(image), _pixels(scene.render()))
        assert row["group"] == scene.group
    assert not list(folder.rglob("*.tmp"))


def test_write_world_background_only(tmp_path):
    scenes = make_caption_world(7, seed=0)
    folder = write_world(scenes, tmp_path / "bg", background_only=True)
    assert not (folder / "captions.jsonl").exists()
    first = json.loads((folder / "labels.jsonl").read_text().splitlines()[0])
    with Image.open(folder / first["path"]) as image:
        assert np.array_equal(_pixels(image), _pixels(scenes[0].render_background_only()))


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_caption_world(20, size=16),
        lambda: make_caption_world(3),
        lambda: make_caption_world(20, classes=("bird", "unicorn")),
        lambda: make_caption_world(20, backgrounds=("water", "lava")),
        lambda: make_caption_world(20, seed=-1),
        lambda: make_shortcut_split(bias=1.5),
        lambda: make_shortcut_split(bias=-0.1),
        lambda: make_shortcut_split(n_train=2),
        lambda: make_shortcut_split(classes=("bird", "car"), backgrounds=("water", "grass")),
        lambda: make_shortcut_split(classes=("bird",), backgrounds=("water",)),
        lambda: make_scene("bird", "water", seed=0, split="../x"),
        lambda: planted_background("unicorn"),
        lambda: write_world([], "unused"),
    ],
)
def test_bad_settings_raise_one_line(make):
    with pytest.raises(TexplainError) as caught:
        make()
    assert "\n" not in str(caught.value)
