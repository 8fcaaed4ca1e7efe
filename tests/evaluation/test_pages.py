"""The one renderer (coronet.evaluation.pages) and the typed result records (coronet.evaluation.results)."""

from __future__ import annotations

import json
import re

import pandas as pd
from PIL import Image

from coronet.evaluation.pages import DISCLAIMER, Bullets, Figure, Link, Page, Section, Table, Text, write_page
from coronet.evaluation.results import AuditResults, AuditTestResult, CohortResult, Estimate, RunResults, WorstSource


def a_page(tmp_path) -> Page:
    figures = tmp_path / "figures"
    figures.mkdir()
    png = figures / "roc.png"
    Image.new("RGB", (4, 3), (200, 10, 10)).save(png)
    table = pd.DataFrame({"accuracy": [80.0], "accuracy_paper": [89.6], "accuracy_diff": [-9.6], "images": [12.0]})
    table.index = pd.Index(["mean"], name="fold")
    return Page(
        "A <title> & more",
        [
            Section("Summary", [Text("accuracy 0.800 <b>bold?</b>", lead=True), Text("Classes: a, b.")]),
            Section("Table III", [Table(table)]),
            Section("Verdicts", [Bullets(("first verdict", Link("the full audit", "audit/audit.html")))]),
            Section("Figures", [Figure(png, "ROC curve"), Figure(png, "wide one", wide=True)]),
        ],
    )


def test_markdown_and_html_carry_the_same_page(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    write_page(a_page(tmp_path), out / "report.md", out / "report.html")
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()

    lines = markdown.splitlines()
    assert lines[0] == "# A <title> & more" and lines[2] == f"*{DISCLAIMER}*"
    assert markdown.endswith(".png)\n") and not markdown.endswith("\n\n")
    assert "## Summary\n\naccuracy 0.800 <b>bold?</b>\n\nClasses: a, b.\n" in markdown
    # the paper's value and our difference in our cell; counts as integers
    assert "| fold | accuracy (ours / paper / diff) | images |" in markdown
    assert "| mean | 80.00 / 89.60 / -9.60 | 12 |" in markdown
    assert "- first verdict\n- [the full audit](audit/audit.html)\n" in markdown
    assert "![ROC curve](../figures/roc.png)" in markdown  # linked relative to the Markdown file

    assert "<title>A &lt;title&gt; &amp; more</title>" in page  # text is escaped, never markup
    assert "&lt;b&gt;bold?&lt;/b&gt;" in page and "<b>bold?" not in page
    assert '<p class="lead">accuracy 0.800' in page and DISCLAIMER in page
    assert "<td>80.00 / 89.60 / -9.60</td>" in page and "<td>12</td>" in page  # the table, as HTML
    assert '<li>first verdict</li><li><a href="audit/audit.html">the full audit</a></li>' in page
    embedded = re.findall(r'src="(data:image/png;base64,[^"]+)"', page)
    assert len(embedded) == 2 and "roc.png" not in page  # self-contained: figures embedded, not linked
    assert "<figcaption>ROC curve</figcaption>" in page and "<figcaption>wide one</figcaption>" not in page
    # the same sections, in the same order, in both
    assert re.findall(r"^## (.+)$", markdown, re.M) == re.findall(r"<h2>(.+?)</h2>", page)


def test_records_read_back_what_they_write():
    worst = WorstSource("cohen", Estimate(0.5, 0.25, 0.75), images=8, patients=6)
    adult = CohortResult(
        n_images=10,
        n_patients=9,
        figures={
            "false_covid_normal": Estimate(0.2, 0.0, 0.5),
            "false_covid_all": Estimate(0.3, 0.1, 0.6),
            "label_accuracy": Estimate(0.6, 0.3, 0.9),
        },
        counts={"normal": 5, "pneumonia": 5},
        trained_with=True,
        title="adult films",
    )
    assert adult.to_json()["false_covid_all_ci"] == [0.1, 0.6] and adult.to_json()["n_normal"] == 5
    assert CohortResult.from_json(adult.to_json()) == adult
    assert WorstSource.from_json(worst.to_json()) == worst and WorstSource.from_json(None) is None
    from coronet.evaluation.results import SourceResults

    results = RunResults(
        run="r",
        task="4class",
        classes=["covid", "normal"],
        n_images=10,
        n_patients=9,
        n_bootstrap=50,
        accuracy=Estimate(0.8, 0.7, 0.9),
        covid_recall=None,
        auc={"covid": 0.9, "normal": 0.9},
        ece=0.05,
        covid_operating_point=None,
        false_covid=None,
        folds=[1, 2],
        cohorts={"adult": adult},
        sources=SourceResults([], [], worst),
    )
    record = results.to_json()
    assert record["adult"] == record["cohorts"]["adult"] and record["covid_recall_ci"] is None
    assert record["sources"]["worst_false_covid"]["rate"] == 0.5
    again = RunResults.from_json(json.loads(json.dumps(record)))
    assert again.to_json() == record and again.adult == adult and again.worst == worst

    audit = AuditResults(
        chance=0.4,
        tests={"intact": AuditTestResult(10, {"accuracy": Estimate(0.8, 0.7, 0.9)})},
        retrain_folds=[1],
        lung_fraction_of_film=0.5,
        verdicts={"lungs-removed": "near chance"},
        run="/runs/x",
        config={"seed": 0},
        single_source={"kaggle_images": 4},
    )
    written = audit.to_json()
    assert list(written) == [
        "chance",
        "tests",
        "retrain_folds",
        "lung_fraction_of_film",
        "single_source",
        "verdicts",
        "run",
        "config",
    ]
    assert written["tests"]["intact"] == {"accuracy": {"value": 0.8, "ci": [0.7, 0.9]}, "images": 10}
    assert AuditResults.from_json(written).to_json() == written and audit.headline == "near chance"
