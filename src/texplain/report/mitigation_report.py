"""Mitigation results as a Table 2-style markdown table, a bar plot and an HTML section.

:func:`mitigation_section` renders the section (``mitigation_section.html``,
autoescaped) that a report page includes; :func:`write_mitigation_report`
writes ``table.md``, ``mitigation.png``, the masked examples and a
self-contained ``report.html`` that holds the section.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from texplain.atomic import write_text, writing
from texplain.data.images import load_rgb
from texplain.mitigation.methods.texplain import MaskedExample
from texplain.report.templates import render_template

EXAMPLE_SIZE = 160
ZERO_GREY = (124, 116, 104)
"""How the ``zero`` fill (the preprocessing's mean colour; ImageNet's for most models) is drawn."""


def percent(stat: dict) -> str:
    """``{"mean": m, "std": s}`` in [0, 1] → "m ± s" in percent, one decimal."""
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def label(result: dict, method: str) -> str:
    """A method's name in the table (DFR's says how it was balanced)."""
    return result.get("labels", {}).get(method, method)


def table_rows(result: dict) -> list[dict]:
    """One row per method: label, worst group, average, per group and per class, as percent strings."""
    rows = []
    for method, summary in result["summary"].items():
        rows.append({
            "method": method, "label": label(result, method),
            "worst": percent(summary["worst_group"]), "average": percent(summary["average"]),
            "per_group": {g: percent(s) for g, s in summary["per_group"].items()},
            "per_class": {c: percent(s) for c, s in summary["per_class"].items()},
        })
    return rows


def errors_to(result: dict, name: str, top: int = 3) -> str:
    """Where ERM's test errors of class ``name`` go, its first run's: "climbing 23, fishing 16, diving 14 (of 59)";
    empty without an ERM run that says."""
    counts = (result.get("runs", {}).get("erm") or [{}])[0].get("mistaken_for", {}).get(name)
    if not counts:
        return ""
    return ", ".join(f"{other} {n}" for other, n in list(counts.items())[:top]) + f" (of {sum(counts.values())})"


def class_rows(result: dict) -> list[dict]:
    """Per class, what TExplain did and what it changed: its suspects, the words masked (with how many images),
    how many of its images were picked, ERM's and TExplain's test accuracy (percent strings), where ERM's errors
    went, and whether a shortcut was found for it at all (a class with no suspect, or no picked image, has none).
    A class lost to other classes' shortcuts gains only when theirs are masked."""
    selection, summary = result.get("selection"), result["summary"]
    if not selection or "texplain" not in summary:
        return []
    rows = []
    for name, own in selection["per_class"].items():
        before = summary["erm"]["per_class"].get(name) if "erm" in summary else None
        after = summary["texplain"]["per_class"].get(name)
        change = None if before is None or after is None else 100 * (after["mean"] - before["mean"])
        rows.append({
            "name": name, "images": own["images"], "selected": own["selected"], "suspects": own["suspects"],
            "masked": ", ".join(f"{word} ({n})" for word, n in own["masked_words"]) or "none",
            "found": own["selected"] > 0 and (selection["rule"] != "suspects" or bool(own["suspects"])),
            "before": percent(before) if before else "", "after": percent(after) if after else "",
            "change": "" if change is None else f"{change:+.1f}", "errors_to": errors_to(result, name),
        })
    return rows


def markdown_table(result: dict) -> str:
    """The Table 2-style markdown: method | worst group | average, accuracy per class, then what TExplain masked per class."""
    rows = table_rows(result)
    seeds = ", ".join(str(s) for s in next(iter(result["summary"].values()))["seeds"])
    lines = [f"Test accuracy (%), mean ± std over seeds {seeds}.", "",
             "| Method | Worst group | Average |", "|---|---:|---:|"]
    lines += [f"| {r['label']} | {r['worst']} | {r['average']} |" for r in rows]
    classes = list(rows[0]["per_class"]) if rows else []
    lines += ["", "| Method | " + " | ".join(classes) + " | Overall |", "|---|" + "---:|" * (len(classes) + 1)]
    lines += [f"| {r['label']} | " + " | ".join(r["per_class"][c] for c in classes) + f" | {r['average']} |" for r in rows]
    per_class = class_rows(result)
    if per_class:
        lines += ["", "TExplain per class (the words masked, with how many of the class's training images each):", "",
                  "| Class | Suspects | Masked | Picked | ERM | TExplain | Change | ERM's errors went to |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        lines += [f"| {c['name']}{'' if c['found'] else ' (no shortcut found)'} | {', '.join(c['suspects']) or 'none'} | "
                  f"{c['masked']} | {c['selected']} of {c['images']} | {c['before']} | {c['after']} | {c['change']} | "
                  f"{c['errors_to']} |" for c in per_class]
    lines += [""] + notes(result)
    return "\n".join(lines) + "\n"


def notes(result: dict) -> list[str]:
    """The sentences under the table: how samples were picked, masked and fine-tuned, and what the baselines used."""
    out = []
    if "settings" in result:
        finetune = result["settings"]["finetune"]
        out.append(f"Fine-tuning: {finetune['trainable']} (backbone at {finetune['backbone_lr']:g} of lr {finetune['lr']:g}), "
                   f"at most {finetune['epochs']} epochs, stopping after {finetune['patience']} without a lower loss on "
                   f"the {result.get('held_out_images', 0)} held-out training images (never the test images).")
    if "selection" in result:
        s = result["selection"]
        out.append(f"Selected {s['selected']} of {s['images']} training samples ({100 * s['fraction']:.1f}%) by the "
                   f"{s['rule']} rule: {s['reason']}.")
    if "texplain_masked_fraction" in result:
        kept = result.get("settings", {}).get("keep_originals")
        out.append(f"TExplain's masks cover {100 * result['texplain_masked_fraction']:.1f}% of an image on average; "
                   f"{result.get('texplain_zero_heat_maps', 0)} all-zero heat maps were left out. The masked images are "
                   f"{'added beside their originals' if kept else 'seen in place of their originals'} (RandMask's too).")
        if result.get("texplain_spared_maps"):
            out.append(f"Spared: in {result['texplain_spared_maps']} maps the region of the image's own class word was "
                       f"never masked; maps left with nothing to mask, and so left out: {result.get('texplain_spared_emptied', 0)}.")
        if result.get("texplain_spread_images"):
            out.append(f"Spread: {result['texplain_spread_images']} more images of the less-masked classes were masked, "
                       f"each with a picked image's map, so that every class has the same share masked "
                       f"({result['texplain_masked_images'] + result['texplain_spread_images']} in all; RandMask masks as many).")
    if "jtt" in result.get("runs", {}):
        errors = ", ".join(str(r["errors"]) for r in result["runs"]["jtt"])
        out.append(f"JTT up-weights the training samples its briefly trained identification model gets wrong ({errors} by seed).")
    if "dfr" in result["summary"]:
        balanced = result.get("dfr_balanced_by", "group")
        out.append(f"DFR refits the last layer on the held-out images balanced by {balanced} "
                   f"({result.get('dfr_per_group', '?')} per {balanced})"
                   + (": it uses the group labels, which TExplain never sees." if balanced == "group" else
                      "; the data names no groups."))
    return out


def draw_plot(result: dict, path: Path) -> Path:
    """Bar plot of worst-group and average accuracy per method, with the std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(result["summary"])
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2, 3.5))
    for offset, key, name in ((-0.2, "worst_group", "worst group"), (0.2, "average", "average")):
        stats = [result["summary"][m][key] for m in methods]
        ax.bar(x + offset, [100 * s["mean"] for s in stats], 0.4, yerr=[100 * s["std"] for s in stats], label=name, capsize=3)
    ax.set_xticks(x, [label(result, m) for m in methods], rotation=15)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    with writing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def save_example(example: MaskedExample, threshold: float, fill: str, path: Path, donor: str | None = None) -> Path:
    """Original | heat map | masked, side by side, from the image file (not the preprocessed pixels).

    The ``zero`` fill is drawn as :data:`ZERO_GREY`, an approximation of the
    model's own mean colour; the ``shuffle`` fill copies the region from
    ``donor``, another training image, as fine-tuning does.
    """
    import torch

    from texplain.attribution.fills import mask_image
    from texplain.attribution.heat import region

    image = load_rgb(example.path).resize((EXAMPLE_SIZE, EXAMPLE_SIZE))
    heat = (example.heat.clamp(0, 1) * 255).to(torch.uint8).numpy()
    heat_image = Image.fromarray(heat, mode="L").resize((EXAMPLE_SIZE, EXAMPLE_SIZE)).convert("RGB")
    hidden = Image.fromarray(region(example.heat, (EXAMPLE_SIZE, EXAMPLE_SIZE), threshold).numpy())
    if fill == "zero":
        masked = Image.composite(Image.new("RGB", image.size, ZERO_GREY), image, hidden)
    elif fill == "shuffle":
        other = load_rgb(donor or example.path).resize((EXAMPLE_SIZE, EXAMPLE_SIZE))
        masked = Image.composite(other, image, hidden)
    else:
        masked = mask_image(image, example.heat, threshold, fill, torch.Generator().manual_seed(0))
    strip = Image.new("RGB", (3 * EXAMPLE_SIZE, EXAMPLE_SIZE))
    for i, part in enumerate((image, heat_image, masked)):
        strip.paste(part, (i * EXAMPLE_SIZE, 0))
    with writing(path) as tmp:
        strip.save(tmp, format="PNG")
    return path


def mitigation_section(result: dict, plot: str | None, examples: Sequence[dict]) -> str:
    """The HTML section (escaped); ``plot`` and each example's ``src`` are paths relative to the page."""
    return render_template(
        "mitigation_section.html", settings=result["settings"], selection=result.get("selection"),
        test_images=result["test_images"], seeds=next(iter(result["summary"].values()))["seeds"],
        rows=table_rows(result), groups=result["groups"], plot=plot, examples=examples, classes=class_rows(result),
        notes=notes(result),
    )


def write_mitigation_report(folder: Path, result: dict, examples: Sequence[MaskedExample]) -> dict[str, Path]:
    """Write table.md, mitigation.png, examples/*.png and report.html into ``folder``; returns their paths."""
    from markupsafe import Markup

    folder.mkdir(parents=True, exist_ok=True)
    table = write_text(folder / "table.md", markdown_table(result))
    plot = draw_plot(result, folder / "mitigation.png")
    mask = result["settings"]["mask"]
    shown = []
    for number, example in enumerate(examples):
        donor = examples[(number + 1) % len(examples)].path  # another training image, as the shuffle fill takes
        png = save_example(example, mask["threshold"], mask["fill"], folder / "examples" / f"{number:02d}.png", donor)
        shown.append({"src": f"examples/{png.name}", "label": example.label, "word": example.word or "",
                      "fraction": example.fraction})
    section = mitigation_section(result, plot.name, shown)
    page = write_text(folder / "report.html", render_template("mitigation.html", section=Markup(section)))
    return {"table": table, "plot": plot, "report": page}
