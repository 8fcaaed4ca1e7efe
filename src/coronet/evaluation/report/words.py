"""A run's results in words: the report's summary sentence, the CLI's lines, and the phrases both use."""

from __future__ import annotations

from ..results import CohortResult, Estimate, LeaveOutResult, RunResults
from ..sources import AUC, worst_phrase


def summary_sentence(results: RunResults) -> str:
    """One sentence with the key figures and their 95 % intervals."""

    def figure(estimate: Estimate | None, name: str) -> str | None:
        if estimate is None:
            return None
        return f"{name} {estimate.value:.3f} (95% CI {estimate.low:.3f}-{estimate.high:.3f})"

    parts = [p for p in (figure(results.accuracy, "accuracy"), figure(results.covid_recall, "COVID-19 recall")) if p]
    if results.adult:
        parts.append(adult_phrase(results.adult, percent=True))
    if results.sources:
        parts.append(worst_phrase(results.worst, percent=True))
    if results.leave_out:
        parts.append(leave_out_phrase(results.leave_out))
    where = f"On {results.n_images} films of {results.n_patients} patients"
    sentence = where + (": " + "; ".join(parts) if parts else "") + ". Intervals: bootstrap over patients."
    return sentence + (f" {single_label_note(results)}" if results.single_label else "")


def summary_lines(results: RunResults, patients: bool = True) -> list[str]:
    """The lines the CLI prints: accuracy and COVID-19 recall with their 95 % intervals (``patients``: naming
    how many patients the bootstrap resampled), the adult films' false COVID-19 rate where the run has an
    adult-negative test, and the worst negative source where the films have sources."""
    tail = f", bootstrap over {results.n_patients} patients)" if patients else ")"
    lines = []
    for estimate, name in ((results.accuracy, "accuracy"), (results.covid_recall, "covid recall")):
        if estimate is None:
            lines.append(f"{name} n/a")
        else:
            lines.append(f"{name} {estimate.value:.4f} (95% CI {estimate.low:.2f}-{estimate.high:.2f}{tail}")
    if results.adult:
        lines.append(adult_phrase(results.adult, percent=False))
    if results.sources:
        lines.append(worst_phrase(results.worst, percent=False))
    if results.leave_out:
        lines.append(leave_out_phrase(results.leave_out, percent=False))
    return lines


def single_label_note(results: RunResults) -> str:
    """What a run whose films all have one label can and cannot say (e.g. dataset-2 without overlap under
    --adult-negatives, where every negative film was a training film)."""
    return (
        f"All {results.n_images} films are {results.single_label}: the accuracy is that class's recall, and "
        "nothing is measured about the other classes."
    )


def adult_phrase(adult: CohortResult, percent: bool) -> str:
    """The adult-negative test in words: the share of adult films without COVID-19 called COVID-19, with its CI."""
    rate = adult.false_covid_all
    if percent:
        return (
            f"{rate.value:.1%} of {adult.n_images} adult films without COVID-19 called COVID-19 "
            f"(95% CI {rate.low:.1%}-{rate.high:.1%})"
        )
    return (
        f"adult films called covid {rate.value:.4f} (95% CI {rate.low:.2f}-{rate.high:.2f}, {adult.n_images} adult "
        f"films without COVID-19, bootstrap over {adult.n_patients} patients)"
    )


def leave_out_phrase(held: LeaveOutResult, percent: bool = True) -> str:
    """The held-out collection's test in words: its COVID-19 recall, its AUC against the reference negatives, its
    other films' false COVID-19 rate, each with its 95 % interval."""

    def figure(name: str, estimate: Estimate | None, share: bool) -> str | None:
        if estimate is None:
            return None
        if share and percent:
            return f"{name} {estimate.value:.1%} (95% CI {estimate.low:.1%}-{estimate.high:.1%})"
        return f"{name} {estimate.value:.3f} (95% CI {estimate.low:.2f}-{estimate.high:.2f})"

    parts = [
        figure("COVID-19 recall", held.covid_recall, share=True),
        figure(AUC.replace("auc", "AUC"), held.auc, share=False),
        figure("films without COVID-19 called COVID-19", held.false_covid, share=True),
    ]
    return f"held-out collection {held.source} ({held.n_images} films no model trained on): " + "; ".join(
        p for p in parts if p
    )


def operating_point_text(op: dict | None) -> str:
    """The COVID-19 operating point in words: its threshold, the recall it gives and the specificity at it."""
    if op is None:
        return "not available (no COVID-19 class or only one label value)"
    return (
        f"threshold {op['threshold']:.4f} on prob_covid gives COVID-19 recall {op['recall']:.4f} "
        f"(target >= {op['target_recall']}) at specificity {op['specificity']:.4f}"
    )
