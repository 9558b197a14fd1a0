"""Mitigation: selection on hand-made counts, exact masks, new checkpoints, bad inputs, the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_vit
from texplain import cli
from texplain.analysis.lm_prior import LMPrior
from texplain.analysis.suspects import ClassMerge, dominant_words
from texplain.attribution.fills import mask_batch
from texplain.attribution.keep import keep_heat
from texplain.attribution.occlusion import occlusion_heat
from texplain.errors import TexplainError
from texplain.mitigation.bench import check_classes, save_checkpoint
from texplain.mitigation.config import MaskConfig, MitigateConfig, SelectionConfig
from texplain.mitigation.holdout import holdout_positions
from texplain.mitigation.runner import check_translator, summarise_runs
from texplain.mitigation.selection import _Explained, choose
from texplain.models.classifiers import load_classifier, save_classifier
from texplain.models.config import TranslatorConfig
from texplain.models.translator import Translator
from texplain.report.mitigation_report import markdown_table, notes
from texplain.text.words import WordCounter
from texplain.training.classifier_training import train_classifier
from texplain.training.config import ClassifierTrainConfig


@pytest.fixture
def prior() -> LMPrior:
    """A prior that says "man" in every sentence and nothing else: 10 sentences."""
    counter = WordCounter()
    counter.update(["a man"] * 10)
    return LMPrior(counter, {})


def test_a_background_word_first_makes_the_sample_problematic(prior):
    counts = {"sand": 8, "dog": 3, "man": 9}
    merge = ClassMerge("dog", frozenset({"dog", "puppy"}))
    found = dominant_words(merge(counts, {"dog": 3}), 10, merge, prior, 0.1, 1.5)
    # "man" is the LM's own word: lift (0.9 / 0.1) / (10.5 / 0.5) < 1.5, so it is not dominant.
    assert [d.word for d in found] == ["sand", "dog"]
    assert found[0].lift == pytest.approx((0.8 / 0.2) / ((0.5 / 11) / (10.5 / 11)))


def test_class_words_are_merged_before_ranking(prior):
    # Neither "dog" (3) nor "puppy" (4) beats "sand" (6), but 7 sentences name the class.
    counts = {"sand": 6, "dog": 3, "puppy": 4}
    merge = ClassMerge("dog", frozenset({"dog", "puppy"}))
    found = dominant_words(merge(counts, {"dog": 7}), 10, merge, prior, 0.1, 1.5)
    assert [d.word for d in found] == ["dog", "sand"]
    assert found[0].frequency == pytest.approx(0.7)


def test_rare_words_are_not_dominant(prior):
    merge = ClassMerge("dog", frozenset({"dog"}))
    assert dominant_words(merge({"sand": 1}, {}), 20, merge, prior, 0.1, 1.5) == []
    assert dominant_words({}, 0, merge, prior, 0.1, 1.5) == []


@pytest.mark.parametrize("fill", ["zero", "mean", "noise"])
def test_masking_changes_exactly_the_thresholded_region(fill):
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) + 1.0
    heat = torch.full((16, 16), 0.2)
    heat[:4, :4] = 1.0
    masked, fractions = mask_batch(pixels, [heat, heat], 0.5, fill, torch.Generator().manual_seed(1))
    changed = (masked != pixels).any(dim=1)  # (2, 16, 16)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[:4, :4] = True
    assert torch.equal(changed[0], expected) and torch.equal(changed[1], expected)
    assert fractions == [pytest.approx(16 / 256)] * 2


def test_occlusion_finds_the_cell_the_score_reads():
    pixels = torch.ones(1, 3, 8, 8)
    heat = occlusion_heat(lambda x: x[:, :, 4:, :4].sum(dim=(1, 2, 3)), pixels, grid=2)
    assert torch.equal(heat, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_keep_finds_the_cells_that_say_it_on_their_own():
    # The score counts bright pixels in the image's top half: a redundant cue, as a background is.
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[:, :, :4] = 1.0
    heat = keep_heat(lambda x: x[:, :, :4].sum(dim=(1, 2, 3)), pixels, grid=4, window=1)
    assert torch.equal(heat, torch.tensor([[1.0] * 4] * 2 + [[0.0] * 4] * 2))
    # Hiding one cell of it lowers the score as much anywhere: occlusion cannot tell the cells apart.
    assert torch.equal(occlusion_heat(lambda x: (x[:, :, :4].sum(dim=(1, 2, 3)) > 40).float(), pixels, grid=4),
                       torch.zeros(4, 4))
    # Windows of 2 x 2 cells: a cell's heat is the mean of the windows that hold it.
    two = keep_heat(lambda x: x[:, :, :4].sum(dim=(1, 2, 3)), pixels, grid=4, window=2)
    assert torch.equal(two[0], torch.ones(4)) and torch.equal(two[3], torch.zeros(4))
    assert 0.0 < float(two[1, 0]) < 1.0
    assert torch.equal(keep_heat(lambda x: x.sum(dim=(1, 2, 3)) * 0, pixels, grid=4, window=1), torch.zeros(4, 4))


def test_fine_tuning_writes_a_new_checkpoint_and_never_the_original(tmp_path):
    original = save_classifier(tiny_vit(), tmp_path / "original")
    before = {p.name: p.read_bytes() for p in original.iterdir()}
    pixels = torch.randn(8, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    tuned = load_classifier(str(original))
    train_classifier(tuned, pixels, labels, ClassifierTrainConfig(epochs=1, batch_size=4, lr=1e-3), progress=False)
    folder = save_checkpoint(tuned, tmp_path / "tuned", original)
    assert (folder / "classifier.safetensors").is_file()
    assert (folder / "classifier.safetensors").read_bytes() != before["classifier.safetensors"]
    for bad in (original, original / "inside"):
        with pytest.raises(TexplainError, match="original classifier"):
            save_checkpoint(tuned, bad, original)
    assert {p.name: p.read_bytes() for p in original.iterdir()} == before


def test_bad_inputs_have_clear_messages():
    with pytest.raises(TexplainError, match="no sample to fine-tune on"):
        check_classes(torch.tensor([], dtype=torch.long), ["bird", "dog"], 1, "TExplain")
    with pytest.raises(TexplainError, match=r"too few samples .* dog \(0\)"):
        check_classes(torch.tensor([0, 0]), ["bird", "dog"], 1, "TExplain")
    with pytest.raises(TexplainError, match="unknown method"):
        MitigateConfig(methods=("erm", "groupdro"))
    with pytest.raises(TexplainError, match="fill"):
        MaskConfig(fill="paint")
    with pytest.raises(TexplainError, match="spare_class .* needs mask localise word"):
        MitigateConfig(spare_class=True, mask=MaskConfig(localise="class"))
    with pytest.raises(TexplainError, match="window"):
        MaskConfig(grid=4, window=4)
    assert MaskConfig(heat="occlusion", grid=2).grid == 2  # the window is keep's alone
    assert MaskConfig().where(None) == "each 2 x 2-cell window of the 8 x 8 grid kept alone"
    assert MaskConfig(heat="occlusion", grid=4).where(None) == "each cell of the 4 x 4 grid hidden"
    assert MaskConfig(heat="gradcam").where("layer2") == "Grad-CAM at layer2"
    assert MaskConfig(heat="gradcam").where(None) == "Grad-CAM at the feature layer"
    with pytest.raises(TexplainError):
        SelectionConfig(min_lift=-1)


def test_a_translator_for_other_features_is_refused():
    classifier = tiny_vit()
    translator = Translator(TranslatorConfig(in_tokens=3, in_dim=5, lm_dim=8))
    with pytest.raises(TexplainError, match="does not match"):
        check_translator(classifier, translator, torch.randn(1, 3, 32, 32))


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = [{"seed": s, "worst_group": w, "average": a, "per_group": {"g": w}, "per_class": {"c": a}}
            for s, w, a in ((0, 0.2, 0.8), (1, 0.4, 0.8))]
    summary = summarise_runs(runs)
    assert summary["worst_group"]["mean"] == pytest.approx(0.3)
    assert summary["worst_group"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["average"]["std"] == 0.0
    table = markdown_table({"summary": {"texplain": summary}, "labels": {"texplain": "TExplain"}})
    assert "| TExplain | 30.0 ± 14.1 | 80.0 ± 0.0 |" in table


def test_the_report_says_whether_masked_images_replaced_their_originals():
    for kept, said in ((True, "added beside their originals"), (False, "seen in place of their originals")):
        result = {"summary": {}, "texplain_masked_fraction": 0.4, "settings": {
            "keep_originals": kept, "finetune": {"trainable": "all", "backbone_lr": 1, "lr": 1e-4, "epochs": 5, "patience": 1}}}
        assert any(said in line for line in notes(result))
    result["texplain_masked_images"], result["texplain_spread_images"] = 30, 70
    assert any("Spread: 70 more images" in line and "(100 in all" in line for line in notes(result))
    assert not any("Spared" in line for line in notes(result))
    result["texplain_spared_maps"], result["texplain_spared_emptied"] = 25, 3
    assert any("Spared: in 25 maps" in line and "left with nothing to mask, and so left out: 3." in line for line in notes(result))


def test_mitigate_command_end_to_end(tiny_demo, tmp_path):
    classifier = tiny_demo / "classifier"
    before = {p.name: p.read_bytes() for p in classifier.iterdir()}
    out, table = tmp_path / "out", tmp_path / "table.json"
    code = cli.main([
        "mitigate", "--demo", str(tiny_demo), "--out", str(out), "--json", str(table), "--seeds", "2",
        "--samples", "4", "--min-frequency", "0", "--min-lift", "0", "--min-per-class", "0", "--epochs", "1",
        "--batch-size", "8", "--limit", "40", "--select", "not-class",  # 40 images of 4 sentences show no suspect
    ])
    assert code == 0
    numbers = json.loads(table.read_text())
    for method in ("erm", "randmask", "randmask_all", "masktune", "texplain"):
        assert 0.0 <= numbers["summary"][method]["worst_group"]["mean"] <= numbers["summary"][method]["average"]["mean"] + 1e-9
        assert numbers["summary"][method]["seeds"] == [0, 1]
    assert numbers["selection"]["images"] == 40
    assert (out / "checkpoints" / "texplain-seed1" / "classifier.json").is_file()
    assert (out / "table.md").is_file() and (out / "mitigation.png").is_file()
    report = (out / "report.html").read_text()
    assert "<section id=\"mitigation\">" in report
    assert "where a window of 2 x 2 cells (grid 8 x 8), kept alone, says it" in report  # the default heat, in words
    assert {p.name: p.read_bytes() for p in classifier.iterdir()} == before


def test_mitigate_refuses_to_write_into_the_classifier(tiny_demo, capsys):
    code = cli.main(["mitigate", "--demo", str(tiny_demo), "--out", str(tiny_demo / "classifier" / "mitigated")])
    assert code == 2
    assert "original classifier" in capsys.readouterr().err
    assert not (tiny_demo / "classifier" / "mitigated").exists()


def test_mitigate_names_its_classifier_as_every_command_does(tiny_demo, tmp_path, capsys):
    """-c is a classifier name (timm:NAME, hf:ID, a folder, ...), not only a saved folder: the name reaches the loader."""
    code = cli.main(["mitigate", "--demo", str(tiny_demo), "-c", "timm:no_such_net", "--methods", "erm",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "classifier timm:no_such_net: Unknown model" in err[0], err


def test_class_words_and_head_only_reach_the_command(tiny_demo, tmp_path, capsys):
    """--finetune head keeps the features (and the checkpoint says so); words given as class words stop counting against a sample."""
    common = ["mitigate", "--demo", str(tiny_demo), "--methods", "texplain", "--seeds", "1", "--samples", "4",
              "--min-frequency", "0", "--min-lift", "0", "--min-per-class", "0", "--epochs", "1", "--batch-size", "8",
              "--limit", "12", "--select", "not-class"]
    assert cli.main([*common, "--out", str(tmp_path / "plain"), "--json", str(tmp_path / "plain.json"), "--finetune", "head"]) == 0
    checkpoint = json.loads((tmp_path / "plain" / "checkpoints" / "texplain-seed0" / "classifier.json").read_text())
    assert checkpoint["features_of"] == str(tiny_demo / "classifier")
    selection = json.loads((tmp_path / "plain.json").read_text())["selection"]
    assert selection["selected"] > 0
    words_file = tmp_path / "class_words.json"
    every_word = [word for word, _ in selection["top_words_selected"]]
    assert len(every_word) < 10  # the list is cut at ten: these are all the words that selected a sample
    words_file.write_text(json.dumps({name: every_word for name in ("bird", "car", "dog")}))
    capsys.readouterr()
    assert cli.main([*common, "--out", str(tmp_path / "words"), "--class-words", str(words_file)]) == 2
    assert "no training sample was picked" in capsys.readouterr().err


def _image(label: str, counts: dict[str, int], said: int = 0, n: int = 10):
    """One explained training image: per-word sentence counts out of ``n``, ``said`` of them naming the class."""
    return _Explained(f"{label}.jpg", label, counts, {label: said} if said else {}, n)


def _bar_like() -> list:
    """Climbing on rock (4 images) or saying its class (2), diving in water (4), throwing with no cue of its own (4).

    Every image says "man" (the actor) and "ball" about as often as the
    others do; throwing's say rock and water too, in the others' proportions:
    none of these is a suspect of the class.
    """
    climbing = [_image("climbing", {"man": 9, "rock": 8, "ball": 3}) for _ in range(4)]
    climbing += [_image("climbing", {"man": 9, "climbing": 5, "ball": 3}, said=5) for _ in range(2)]
    diving = [_image("diving", {"man": 9, "water": 8, "ball": 3}) for _ in range(4)]
    throwing = [_image("throwing", {"man": 9, "ball": 3, "rock": 4, "water": 4}) for _ in range(4)]
    return climbing + diving + throwing


VOCABULARIES = {name: frozenset({name}) for name in ("climbing", "diving", "throwing")}


def test_suspects_pick_the_images_that_show_their_class_shortcut_and_mask_that_word():
    selection = choose(_bar_like(), VOCABULARIES, None, SelectionConfig())
    assert selection.rule == "suspects"  # no class is the first word of any of its images
    assert selection.reason == "the median class is the first word of 0% of its images: the paper's rule would pick most of the training set"
    assert selection.suspects == {"climbing": ["rock"], "diving": ["water"], "throwing": []}
    assert selection.words == ["rock"] * 4 + [None] * 2 + ["water"] * 4 + [None] * 4
    per_class = selection.per_class()
    assert per_class["climbing"]["masked_words"] == [("rock", 4)] and per_class["climbing"]["selected"] == 4
    assert per_class["throwing"]["selected"] == 0 and per_class["throwing"]["suspects"] == []
    assert selection.fraction == pytest.approx(8 / 14)
    # The paper's rule masks each image's first word: the actor, in every class.
    paper = choose(_bar_like(), VOCABULARIES, None, SelectionConfig(rule="not-class"))
    assert paper.words == ["man"] * 14 and "asked for" in paper.reason


def test_the_selection_threshold_asks_how_often_the_image_says_its_suspect():
    images = _bar_like()
    assert choose(images, VOCABULARIES, None, SelectionConfig(threshold=0.8)).indices() == [0, 1, 2, 3, 6, 7, 8, 9]
    assert choose(images, VOCABULARIES, None, SelectionConfig(threshold=0.9)).indices() == []
    # "rock" is the image's third word behind the actor and the class: top 2 misses it, top 3 finds it.
    crowded = [_image("climbing", {"man": 9, "climbing": 9, "rock": 8}, said=9)] + images[1:]
    assert choose(crowded, VOCABULARIES, None, SelectionConfig(top=2)).words[0] is None
    assert choose(crowded, VOCABULARIES, None, SelectionConfig(top=3)).words[0] == "rock"


def test_each_image_spares_its_most_said_class_word():
    vocabularies = {name: frozenset({name, "man", "woman"}) for name in ("climbing", "diving", "throwing")}
    images = _bar_like()
    images[1] = _image("climbing", {"woman": 9, "man": 4, "rock": 8})
    images[2] = _image("climbing", {"woman": 6, "man": 6, "rock": 8})
    images[3] = _image("climbing", {"rock": 8})
    spared = choose(images, vocabularies, None, SelectionConfig()).spared
    assert spared[:4] == ["man", "woman", "man", None]  # the most said; a tie goes to the alphabetically first; none
    assert spared[4:6] == ["man", "man"]  # man (9) beats climbing (5), which is a class word too


def test_auto_keeps_the_papers_rule_where_classes_are_said():
    images = [_image("bird", {"bird": 6, "water": 8}, said=6), _image("bird", {"bird": 9, "tree": 3}, said=9),
              _image("dog", {"dog": 7, "sand": 9}, said=7), _image("dog", {"dog": 8}, said=8)]
    vocabularies = {"bird": frozenset({"bird"}), "dog": frozenset({"dog"})}
    selection = choose(images, vocabularies, None, SelectionConfig())
    assert selection.rule == "not-class" and "first word of 50% of its images: the paper's rule tells" in selection.reason
    assert selection.words == ["water", None, "sand", None]


def test_the_held_out_part_takes_some_of_every_group_and_never_a_lone_one():
    strata = ["a"] * 20 + ["b"] * 5 + ["c"]
    held = holdout_positions(strata, 0.15)
    assert held == sorted(held) and held == holdout_positions(strata, 0.15)
    assert sum(strata[i] == "a" for i in held) == 3 and sum(strata[i] == "b" for i in held) == 1
    assert 25 not in held  # the lone "c" stays to be trained on
    assert holdout_positions(strata, 0.0) == []
    with pytest.raises(TexplainError, match="holdout"):
        holdout_positions(strata, 1.0)


def test_the_report_marks_classes_whose_shortcut_was_not_found():
    stat = {"mean": 0.5, "std": 0.1}
    summary = {"worst_group": stat, "average": stat, "per_group": {}, "per_class": {"climbing": stat, "throwing": stat},
               "seeds": [0, 1]}
    selection = choose(_bar_like(), VOCABULARIES, None, SelectionConfig()).to_json()
    errors = {"climbing": {}, "throwing": {"climbing": 5, "diving": 3, "fishing": 2, "racing": 1}}
    result = {"summary": {"erm": summary, "texplain": summary}, "selection": selection,
              "labels": {"erm": "ERM", "texplain": "TExplain"}, "runs": {"erm": [{"mistaken_for": errors}]}}
    table = markdown_table(result)
    assert "| climbing | rock | rock (4) | 4 of 6 | 50.0 ± 10.0 | 50.0 ± 10.0 | +0.0 |  |" in table
    assert "| throwing (no shortcut found) | none | none | 0 of 4 |" in table
    assert "| climbing 5, diving 3, fishing 2 (of 11) |" in table  # where ERM's throwing errors went, the first three
    assert "by the suspects rule: the median class is the first word of 0% of its images" in table


def test_head_only_is_the_hidden_old_name_of_finetune_head(tmp_path, capsys):
    code = cli.main(["mitigate", "--demo", str(tmp_path / "d"), "--out", str(tmp_path / "m"), "--head-only",
                     "--finetune", "all"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--head-only (the old name of --finetune head) and --finetune all" in err[0]
    assert cli.main(["mitigate", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--finetune" in shown and "--head-only" not in shown
