"""The human-readable model card: ``README.md`` beside ``model.json`` in every model directory.

Written from the machine-readable card alone, in the Hugging Face model-card layout (YAML front
matter, then description, intended use, training data, evaluation with intervals, the false
COVID-19 rates per source, the audit's verdict, limitations, how to use, citation), so that
anyone who finds a model directory learns what it is and how far to trust it. It is rewritten
whenever the card is (:func:`coronet.models.modeldir.save_model_dir`, ``annotate_card``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..layout import atomic_path

README = "README.md"
PAPER = (
    'Khan, Shah & Bhat, "CoroNet: A deep neural network for detection and diagnosis of COVID-19 from chest x-ray '
    'images", Computer Methods and Programs in Biomedicine 196 (2020) 105581, doi:10.1016/j.cmpb.2020.105581'
)


def _pct(value, ci=None) -> str:
    if value is None:
        return "not measured"
    text = f"{value:.1%}"
    return text + (f" (95% CI {ci[0]:.1%}-{ci[1]:.1%})" if ci and None not in ci else "")


def _start(weights) -> str:
    return "random initialisation" if weights in (None, "", "none") else f"the weights {weights}"


def render(card: dict) -> str:
    """The model card as Markdown, from ``model.json``'s content."""
    sections = (_header, _model, _intended_use, _training_data, _evaluation, _per_source, _audit, _closing)
    return "\n".join(line for section in sections for line in section(card))


def _header(card: dict) -> list[str]:
    return [
        "---",
        "license: mit",
        "library_name: coronet",
        "pipeline_tag: image-classification",
        "tags: [chest-x-ray, covid-19, research-only, not-a-medical-device]",
        "---",
        "",
        f"# {card.get('name', 'coronet model')}",
        "",
        "> **Research software. Not a medical device; must not be used for diagnosis or to guide treatment.**",
        "",
    ]


def _model(card: dict) -> list[str]:
    preprocess = card.get("preprocess") or {}
    return [
        "## Model",
        "",
        f"CoroNet (Khan et al. 2020): {card.get('backbone')} backbone, Flatten, Dropout({card.get('dropout')}), "
        f"Dense({card.get('hidden')}) + ReLU, Dense({len(card.get('classes', []))}); input "
        f"{card.get('input_size')} x {card.get('input_size')} grey films scaled to [0, 1]. Classes: "
        f"{', '.join(card.get('classes', []))}. Trainable parameters: "
        f"{(card.get('parameters') or {}).get('trainable', 'n/a')}. Preprocessing inside the network: crop "
        f"{preprocess.get('crop') or 'none'}, histogram equalisation {'on' if preprocess.get('equalize') else 'off'}; "
        f"test-time augmentation: {(card.get('inference') or {}).get('tta') or 'none'}. Weights SHA-256 "
        f"`{card.get('weights_sha256')}`; coronet {card.get('version')}.",
        "",
    ]


def _intended_use(card: dict) -> list[str]:
    return [
        "## Intended use",
        "",
        "Research on reproducing CoroNet and on the shortcuts such models learn. Not for clinical use: the public "
        "collections it learnt from differ in source, age and processing between labels, and no clinical "
        "validation has been done.",
        "",
    ]


def _training_data(card: dict) -> list[str]:
    training = card.get("training") or {}
    extra = training.get("extra_cohorts") or {}
    fold = training.get("fold")
    cohorts = ", ".join(f"{name} {n} films" for name, n in extra.items())
    return [
        "## Training data",
        "",
        f"Prepared dataset `{training.get('dataset_path')}` (manifest SHA-256 `{training.get('dataset_sha256')}`), "
        f"fold {fold if fold is not None else 'none (every image)'}: "
        f"{training.get('train_images', 'n/a')} training films, {training.get('epochs', 'n/a')} epochs from "
        f"{_start(training.get('initial_weights'))}, precision {training.get('precision', 'n/a')}. The "
        "paper's Table I selection (Cohen et al.'s ieee8023 COVID-19 films; Kermany et al.'s normal, bacterial "
        "and viral children's films)"
        + (f" plus extra cohorts against shortcuts: {cohorts}" if any(extra.values()) else "")
        + ".",
        "",
    ]


def _evaluation(card: dict) -> list[str]:
    metrics, validated = card.get("metrics") or {}, card.get("validated_by") or {}
    lines = ["## Evaluation", ""]
    if metrics.get("val_accuracy") is not None:
        lines.append(
            f"- Accuracy on the Table I films of its held-out fold: {metrics['val_accuracy']:.3f} "
            f"({metrics.get('val_images')} held-out films in all, extra cohorts included)."
        )
    if validated.get("accuracy") is not None:
        ci = validated.get("accuracy_ci") or [None, None]
        recall = validated.get("covid_recall")
        lines.append(
            f"- The recipe's cross-validation ({validated.get('run')}): accuracy {validated['accuracy']:.3f}"
            + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if None not in ci else "")
            + (f", COVID-19 recall {recall:.3f}" if recall is not None else "")
            + "."
        )
    if metrics.get("val_accuracy") is None and not validated:
        lines.append("- No held-out evaluation recorded.")
    return lines


def _per_source(card: dict) -> list[str]:
    by_source = card.get("false_covid_by_source") or {}
    lines = ["", "### False COVID-19 rates per source", ""]
    if not by_source:
        lines.append("Not measured for this model: it may call films COVID-19 for the collection they come from.")
    else:
        lines += [
            f"Films without COVID-19 called COVID-19, per source ({by_source.get('measured_on', 'held-out films')}):",
            "",
            "| source | films | patients | called COVID-19 |",
            "|---|---|---|---|",
        ]
        for row in by_source.get("negative_sources") or []:
            ci = [row.get("false covid low"), row.get("false covid high")]
            lines.append(
                f"| {row.get('source')} | {row.get('images')} | {row.get('patients')} | "
                f"{_pct(row.get('false covid'), ci)} |"
            )
        worst = by_source.get("worst")
        if worst:
            lines += ["", f"Worst negative source: **{worst['source']}, {_pct(worst['rate'], worst.get('ci'))}**."]
    for name, test in (card.get("cohort_tests") or {}).items():
        lines.append(f"- Cohort `{name}` ({test.get('data')}): {_cohort_figures(test)} (never trained on).")
    held = card.get("leave_out_test")
    if held:
        lines.append(
            f"- Held-out collection `{held.get('source')}` (no fold model trained on it): {_cohort_figures(held)}."
        )
    return lines


def _cohort_figures(test: dict) -> str:
    """A cohort test's figures in words: its COVID-19 films' recall and its other films' false COVID-19 rate."""
    parts = []
    if test.get("covid_recall") is not None:
        parts.append(f"COVID-19 recall {_pct(test['covid_recall'])}")
    if test.get("false_covid_rate") is not None:
        parts.append(f"{_pct(test['false_covid_rate'])} of its films without COVID-19 called COVID-19")
    return "; ".join(parts or ["no figures"]) + f" ({test.get('films')} films)"


def _audit(card: dict) -> list[str]:
    audit = card.get("audit")
    return ["", "### Shortcut audit", "", audit if isinstance(audit, str) else "See the run's `audit/audit.md`."]


def _closing(card: dict) -> list[str]:
    return [
        "",
        "## Limitations",
        "",
        "- Each label of the paper's data comes from one collection: accuracy on it measures source and age as "
        "much as disease (see the per-source rates above and the run's audit).",
        "- Small test sets: read the intervals, not only the point estimates.",
        _start_line(card),
        "",
        "## How to use",
        "",
        "```bash",
        "coronet predict xrays/ film.dcm --model MODEL_DIR --out predictions.csv --cam cams/",
        "coronet serve --model MODEL_DIR",
        "```",
        "",
        "## Citation",
        "",
        f"The model reproduces {PAPER}.",
        "",
    ]


def _start_line(card: dict) -> str:
    """What the network started from (the card's ``training.initial_weights``)."""
    training = card.get("training") or {}
    initial = training.get("initial_weights") or "none"
    if initial == "none":
        return "- Trained from scratch on a few thousand films at most; the paper started from ImageNet weights."
    if initial == "imagenet":
        source = training.get("initial_weights_source") or "ImageNet"
        return f"- Fine-tuned from ImageNet weights ({source}), as the paper was."
    return f"- Started from the weights in `{initial}`."


def write(card: dict, directory: str | os.PathLike) -> Path:
    """Write ``directory/README.md`` from ``card``, atomically; return its path."""
    path = Path(directory) / README
    with atomic_path(path) as tmp:
        tmp.write_text(render(card))
    return path


__all__ = ["README", "render", "write"]
