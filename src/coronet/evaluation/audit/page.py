"""The audit's page (``audit.md``, ``audit.html``) and its section of the overview report: one table, the verdicts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...tasks import task_of
from ..metrics import COVID
from ..pages import Block, Bullets, Figure, Link, Page, Section, Table, Text
from ..results import AuditResults, AuditTestResult

#: The tests the table shows, in its order (test 6 first: the decisive one), by their titles.
TESTS = {
    "retrained-lungs-removed": "6. Retrained with the lungs removed",
    "lungs-removed": "1. Lungs removed (intact models)",
    "lungs-only": "2. Lungs only (intact models)",
    "acquisition": "3. Acquisition features alone (no lungs, no diagnosis)",
}
LEAD = (
    "Is it looking at the lungs? Each fold's model is tested only on its own validation films. "
    "Test 6 (retraining without the lungs) is the decisive one; tests 1 and 2 measure robustness to "
    "occlusion as much as shortcut use."
)


def audit_page(results: AuditResults, cam_figure: Path | None) -> Page:
    """The full audit page: the result table, the verdicts, the Grad-CAM examples (when drawn)."""
    sections = [
        Section(
            "Is it looking at the lungs?",
            [
                Text(LEAD),
                Table(result_table(results)),
                Text("Accuracy and recalls with 95% intervals (bootstrap over patients)."),
            ],
        ),
        Section("Verdicts", [Bullets(tuple(results.verdicts.values()))]),
    ]
    if cam_figure is not None:
        sections.append(
            Section("Where the networks looked (Grad-CAM, examples)", [Figure(cam_figure, "Grad-CAM examples", True)])
        )
    return Page("Shortcut audit", sections)


def overview_blocks(results: AuditResults, audit_page: str) -> list[Block]:
    """The overview report's "Is it looking at the lungs?" section: the result table, the verdicts and a link
    to the full audit page (``audit_page``, relative to the overview)."""
    return [
        Table(result_table(results)),
        Bullets(tuple(results.verdicts.values())),
        Link("the full audit", audit_page),
    ]


def result_table(results: AuditResults) -> pd.DataFrame:
    """One row per test (the intact models first), accuracy and recalls with their intervals, and chance."""
    rows = []
    order = ["intact", *([k for k in ("intact-retrained-folds",) if k in results.tests]), *TESTS]
    names = {
        "intact": "CoroNet, intact films",
        "intact-retrained-folds": "CoroNet, intact, retrained folds only",
        **TESTS,
    }
    for key in order:
        if key not in results.tests:
            continue
        test = results.tests[key]
        row: dict = {"test": names[key], "images": test.images}
        for stat in ("accuracy", "covid_recall", *[f"recall_{c}" for c in _recall_classes(test)]):
            if stat in test.figures:
                v = test.figures[stat]
                row[stat.replace("_", " ")] = f"{v.value:.3f} ({v.low:.2f}-{v.high:.2f})"
        rows.append(row)
    rows.append({"test": "chance (the largest class)", "accuracy": f"{results.chance:.3f}"})
    return pd.DataFrame(rows).set_index("test").astype(object).fillna("")


def _recall_classes(test: AuditTestResult) -> list[str]:
    """The classes whose recall a test's row shows: every class but COVID-19 (shown first, as COVID-19 recall),
    in its task's order (:mod:`coronet.tasks`), else alphabetical."""
    labels = [key.removeprefix("recall_") for key in test.figures if key.startswith("recall_")]
    task = task_of(labels)
    return [c for c in (task.classes if task else sorted(labels)) if c != COVID and c in labels]
