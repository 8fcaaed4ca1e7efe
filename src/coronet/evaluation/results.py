"""Typed result records: what a report and an audit measured.

A record is computed once (:mod:`coronet.evaluation.report`, :mod:`coronet.evaluation.audit`) and then
rendered (:mod:`coronet.evaluation.pages`), printed (the CLI's headline lines), written
(``summary.json``, ``audit.json``) and read back (a resumed reproduction) from the same fields.
``to_json()`` gives the on-disk form, ``from_json()`` reads it; the two are exact inverses, so a file
written before these records existed reads the same.

Parts that are only carried to disk or to a model card (per-source rows, the operating point, AUCs)
stay plain JSON-ready data; every figure code reads is a typed field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.cohorts import ADULT


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95 % interval (bootstrap over patients)."""

    value: float
    low: float
    high: float

    @classmethod
    def of(cls, triple) -> Estimate:
        """From ``(point, low, high)``, as :func:`coronet.evaluation.bootstrap.bootstrap_cis` gives them."""
        point, low, high = triple
        return cls(point, low, high)

    @classmethod
    def from_pair(cls, value, ci) -> Estimate | None:
        """From a value and its ``[low, high]``; None where either is missing."""
        return None if value is None or ci is None else cls(value, ci[0], ci[1])

    @property
    def ci(self) -> list[float]:
        return [self.low, self.high]

    def to_json(self) -> dict:
        return {"value": self.value, "ci": self.ci}

    @classmethod
    def from_json(cls, data: Mapping) -> Estimate:
        return cls(data["value"], data["ci"][0], data["ci"][1])


@dataclass(frozen=True)
class WorstSource:
    """The negative source whose films are most often called COVID-19: the headline of the per-source table."""

    source: str
    rate: Estimate
    images: int
    patients: int

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "rate": self.rate.value,
            "ci": self.rate.ci,
            "images": self.images,
            "patients": self.patients,
        }

    @classmethod
    def from_json(cls, data: Mapping | None) -> WorstSource | None:
        if not data:
            return None
        return cls(str(data["source"]), Estimate(data["rate"], *data["ci"]), data["images"], data["patients"])


@dataclass(frozen=True)
class SourceResults:
    """Every evaluated film by source: the rows of the per-source table and of the negative-source table
    (plain records, as written to the model card), and the worst negative source."""

    sources: list[dict]
    negative_sources: list[dict]
    worst: WorstSource | None

    def to_json(self) -> dict:
        return {
            "sources": self.sources,
            "negative_sources": self.negative_sources,
            "worst_false_covid": self.worst.to_json() if self.worst else None,
        }

    @classmethod
    def from_json(cls, data: Mapping | None) -> SourceResults | None:
        if data is None:
            return None
        worst = WorstSource.from_json(data.get("worst_false_covid"))
        return cls(list(data.get("sources") or []), list(data.get("negative_sources") or []), worst)


@dataclass(frozen=True)
class CohortResult:
    """An extra cohort's figures: for its films without COVID-19 ``false_covid_<label>`` and ``false_covid_all``,
    for its COVID-19 films (``radiography``) ``covid_recall``, and ``label_accuracy``, each with its interval, and
    the films per label."""

    n_images: int
    n_patients: int
    figures: dict[str, Estimate]
    counts: dict[str, int]  #: films per label
    trained_with: bool = False  #: the run trained on (other folds of) this cohort
    title: str = ""

    @property
    def false_covid_all(self) -> Estimate:
        return self.figures["false_covid_all"]

    @property
    def label_accuracy(self) -> Estimate:
        return self.figures["label_accuracy"]

    @property
    def covid_recall(self) -> Estimate | None:
        """Its COVID-19 films called COVID-19 (None for a cohort without them)."""
        return self.figures.get("covid_recall")

    def to_json(self) -> dict:
        out: dict[str, Any] = {"n_images": self.n_images, "n_patients": self.n_patients}
        for name, figure in self.figures.items():
            out[name] = figure.value
            out[f"{name}_ci"] = figure.ci
        out.update({f"n_{label}": n for label, n in self.counts.items()})
        return {**out, "trained_with": self.trained_with, "title": self.title}

    @classmethod
    def from_json(cls, data: Mapping | None) -> CohortResult | None:
        if data is None:
            return None
        figures = {
            key: Estimate(data[key], *data[f"{key}_ci"])
            for key in data
            if f"{key}_ci" in data and data[f"{key}_ci"] is not None
        }
        counts = {
            key.removeprefix("n_"): data[key]
            for key in data
            if key.startswith("n_") and key not in ("n_images", "n_patients")
        }
        return cls(
            data["n_images"],
            data["n_patients"],
            figures,
            counts,
            bool(data.get("trained_with", False)),
            str(data.get("title", "")),
        )


@dataclass(frozen=True)
class LeaveOutResult:
    """The collection a run left out (``leave_out``): no fold model trained or validated on its films, and each
    was predicted by the model of its own fold. Its rows of the per-source table (plain records) and the
    headline figures: its COVID-19 films' recall and AUC against the reference negatives, its other films'
    false COVID-19 rate (None where it has no such films)."""

    source: str
    n_images: int
    n_patients: int
    covid_recall: Estimate | None
    false_covid: Estimate | None
    auc: Estimate | None
    rows: list[dict]

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            **{
                name: figure.to_json() if figure else None
                for name, figure in (("covid_recall", self.covid_recall), ("false_covid", self.false_covid))
            },
            "auc": self.auc.to_json() if self.auc else None,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, data: Mapping | None) -> LeaveOutResult | None:
        if not data:
            return None

        def figure(name: str) -> Estimate | None:
            return Estimate.from_json(data[name]) if data.get(name) else None

        return cls(
            str(data["source"]),
            data["n_images"],
            data["n_patients"],
            figure("covid_recall"),
            figure("false_covid"),
            figure("auc"),
            list(data.get("rows") or []),
        )


@dataclass
class RunResults:
    """A run's report (``report/summary.json``): the headline figures with intervals, per-cohort and
    per-source results, and the pieces the report's tables and the model card carry."""

    run: str
    task: str | None
    classes: list[str]
    n_images: int
    n_patients: int
    n_bootstrap: int
    accuracy: Estimate
    covid_recall: Estimate | None
    auc: dict[str, float]
    ece: float
    covid_operating_point: dict | None
    false_covid: dict | None  #: per label other than COVID-19: rate, ci, images
    folds: list[int]
    cohorts: dict[str, CohortResult] = field(default_factory=dict)
    sources: SourceResults | None = None
    films_per_label: dict[str, int] = field(default_factory=dict)  #: the Table I films evaluated, per label
    title: str = ""  #: the page's title (not written to summary.json)
    leave_out: LeaveOutResult | None = None  #: the held-out collection's test, where the run left one out

    @property
    def adult(self) -> CohortResult | None:
        """The adult-negative test (dataset-2's adult films), where the run has one."""
        return self.cohorts.get(ADULT.name)

    @property
    def worst(self) -> WorstSource | None:
        return self.sources.worst if self.sources else None

    @property
    def single_label(self) -> str | None:
        """The one label of the evaluated films, where they all have the same (accuracy is then its recall)."""
        return next(iter(self.films_per_label)) if len(self.films_per_label) == 1 else None

    def to_json(self) -> dict:
        adult = self.adult
        return {
            "run": self.run,
            "task": self.task,
            "classes": self.classes,
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "n_bootstrap": self.n_bootstrap,
            "accuracy": self.accuracy.value,
            "accuracy_ci": self.accuracy.ci,
            "covid_recall": self.covid_recall.value if self.covid_recall else None,
            "covid_recall_ci": self.covid_recall.ci if self.covid_recall else None,
            "auc": self.auc,
            "ece": self.ece,
            "covid_operating_point": self.covid_operating_point,
            "false_covid": self.false_covid,
            "folds": self.folds,
            "cohorts": {name: cohort.to_json() for name, cohort in self.cohorts.items()},
            "adult": adult.to_json() if adult else None,
            "sources": self.sources.to_json() if self.sources else None,
            "films_per_label": self.films_per_label,
            "leave_out": self.leave_out.to_json() if self.leave_out else None,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> RunResults:
        accuracy = Estimate.from_pair(data["accuracy"], data["accuracy_ci"])
        if accuracy is None:
            raise ValueError("a report summary without an accuracy")
        cohorts = {name: CohortResult.from_json(value) for name, value in (data.get("cohorts") or {}).items()}
        return cls(
            run=data["run"],
            task=data.get("task"),
            classes=list(data["classes"]),
            n_images=data["n_images"],
            n_patients=data["n_patients"],
            n_bootstrap=data["n_bootstrap"],
            accuracy=accuracy,
            covid_recall=Estimate.from_pair(data.get("covid_recall"), data.get("covid_recall_ci")),
            auc=dict(data.get("auc") or {}),
            ece=data.get("ece", float("nan")),
            covid_operating_point=data.get("covid_operating_point"),
            false_covid=data.get("false_covid"),
            folds=list(data.get("folds") or []),
            cohorts={name: cohort for name, cohort in cohorts.items() if cohort is not None},
            sources=SourceResults.from_json(data.get("sources")),
            films_per_label=dict(data.get("films_per_label") or {}),
            title=str(data.get("title", "")),
            leave_out=LeaveOutResult.from_json(data.get("leave_out")),
        )


@dataclass(frozen=True)
class AuditTestResult:
    """One audit test over its films: accuracy, COVID-19 recall and each class's recall, with intervals."""

    images: int
    figures: dict[str, Estimate]  #: ``accuracy``, ``covid_recall``, ``recall_<class>``

    @property
    def accuracy(self) -> Estimate:
        return self.figures["accuracy"]

    def to_json(self) -> dict:
        return {**{name: figure.to_json() for name, figure in self.figures.items()}, "images": self.images}

    @classmethod
    def from_json(cls, data: Mapping) -> AuditTestResult:
        figures = {name: Estimate.from_json(value) for name, value in data.items() if name != "images"}
        return cls(data["images"], figures)


@dataclass
class AuditResults:
    """The shortcut audit (``audit.json``): each test's figures, the controls, the Grad-CAM mass, the verdicts.

    ``single_source`` (test 4) is the cross-validation's; ``run`` and ``config`` an external audit's."""

    chance: float
    tests: dict[str, AuditTestResult]
    retrain_folds: list[int]
    lung_fraction_of_film: float
    verdicts: dict[str, str] = field(default_factory=dict)
    external: bool = False
    run: str | None = None
    config: dict | None = None
    single_source: dict | None = None
    gradcam: dict | None = None

    @property
    def headline(self) -> str | None:
        """The decisive verdict: retraining without the lungs where it ran, else lungs removed at test time."""
        return self.verdicts.get("retrained-lungs-removed") or self.verdicts.get("lungs-removed")

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "chance": self.chance,
            "tests": {name: test.to_json() for name, test in self.tests.items()},
            "retrain_folds": self.retrain_folds,
        }
        if self.external:
            out["external"] = True
        out["lung_fraction_of_film"] = self.lung_fraction_of_film
        if self.external:
            out.update(run=self.run, config=self.config)
        elif self.single_source is not None:
            out["single_source"] = self.single_source
        if self.gradcam is not None:
            out["gradcam"] = self.gradcam
        out["verdicts"] = self.verdicts
        if not self.external and self.run is not None:  # where audit.json has always had them
            out.update(run=self.run, config=self.config)
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> AuditResults:
        return cls(
            chance=data["chance"],
            tests={name: AuditTestResult.from_json(test) for name, test in data["tests"].items()},
            retrain_folds=list(data.get("retrain_folds") or []),
            lung_fraction_of_film=data["lung_fraction_of_film"],
            verdicts=dict(data.get("verdicts") or {}),
            external=bool(data.get("external", False)),
            run=data.get("run"),
            config=data.get("config"),
            single_source=data.get("single_source"),
            gradcam=data.get("gradcam"),
        )


__all__ = [
    "AuditResults",
    "CohortResult",
    "Estimate",
    "LeaveOutResult",
    "RunResults",
    "SourceResults",
    "AuditTestResult",
    "WorstSource",
]
