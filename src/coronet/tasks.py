"""The paper's tasks as label sets, and the explicit mappings between label sets.

The 4-class model (COVID-19, Normal, bacterial and viral pneumonia) is the paper's main
model; the 3-class and binary models are derived from it by fine-tuning (Table V), and
dataset-2 has 3 classes of its own (Table VI). A mapping sends each source label to a
target label, or to ``None`` to leave the image out (COVID-19 vs Normal drops pneumonia).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Task:
    """A task: its one name, its classes in model output order, how other labels map onto them, and the
    row the paper's Table V gives it (None when the paper has none).

    ``label_map`` sends each source label to a class, or to None to leave the image out of the task
    (COVID-19 vs Normal drops pneumonia). A new task is one ``register_task(Task(...))``.
    """

    name: str
    classes: tuple[str, ...]
    label_map: Mapping[str, str | None]
    paper_row: str | None = None

    @property
    def title(self) -> str:
        """How reports name it: the paper's row name where there is one."""
        return self.paper_row or self.name


#: Every task, by name.
TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make ``task`` known to fine-tuning, reports and comparisons by its name."""
    missing = sorted(set(task.classes) - {v for v in task.label_map.values() if v})
    if missing:
        raise ValueError(f"task {task.name}: no label maps to classes {missing}")
    TASKS[task.name] = task
    return task


FOUR_CLASS = register_task(
    Task(
        "4class",
        ("covid", "normal", "bacterial", "viral"),
        {
            "covid": "covid",
            "normal": "normal",
            "bacterial": "bacterial",
            "viral": "viral",
            "pneumonia": None,
            "other": None,
        },
        "4-class",
    )
)
register_task(
    Task(
        "3class",
        ("covid", "normal", "pneumonia"),
        {
            "covid": "covid",
            "normal": "normal",
            "bacterial": "pneumonia",
            "viral": "pneumonia",
            "pneumonia": "pneumonia",
            "other": "other",  # partial: normal or pneumonia
        },
        "3-class",
    )
)
register_task(
    Task(
        "binary",
        ("covid", "normal"),
        {"covid": "covid", "normal": "normal", "bacterial": None, "viral": None, "pneumonia": None, "other": None},
        "binary",
    )
)
register_task(
    Task(
        "covid-vs-rest",
        ("covid", "other"),
        {
            "covid": "covid",
            "normal": "other",
            "bacterial": "other",
            "viral": "other",
            "pneumonia": "other",
            "other": "other",
        },
    )
)


@dataclass(frozen=True)
class PartialLabel:
    """A label that names a set of classes rather than one: the film is one of ``members``, or, with
    ``excludes``, any class but those (``other``: not COVID-19, nothing more known)."""

    members: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def allowed(self, classes: Sequence[str]) -> list[str] | None:
        """The classes of ``classes`` this label allows, in order; None when ``classes`` cannot express it."""
        if self.members:
            return [c for c in classes if c in self.members] if set(self.members) <= set(classes) else None
        allowed = [c for c in classes if c not in self.excludes]
        return allowed if allowed and set(self.excludes) <= set(classes) else None


#: Labels that name a set of classes rather than one. An adult ChestX-ray8 "Pneumonia" film is bacterial or
#: viral, but which is not known; an ieee8023 Pneumocystis film is "not COVID-19". A model that can express
#: the set learns it with a partial-label loss, -log(sum of the allowed classes' probabilities)
#: (:func:`coronet.training.partial_label_loss`): for ``other`` that is -log(1 - p_covid).
PARTIAL_LABELS: dict[str, PartialLabel] = {
    "pneumonia": PartialLabel(members=("bacterial", "viral")),
    "other": PartialLabel(excludes=("covid",)),
}


def label_targets(classes: Sequence[str], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The targets a model with ``classes`` trains on for ``labels``: ``(target names, masks)``.

    Target ``k`` is a class (``k < len(classes)``, in order) or, after them, a partial label of
    :data:`PARTIAL_LABELS` that occurs in ``labels`` and that ``classes`` can express; ``masks[k]``
    marks the classes target ``k`` allows. Any other label is a ``ValueError``.
    """
    classes = list(classes)
    allowed = {
        label: PARTIAL_LABELS[label].allowed(classes)
        for label in dict.fromkeys(labels)
        if label not in classes and label in PARTIAL_LABELS
    }
    partial = [label for label, members in allowed.items() if members]
    unknown = sorted(set(labels) - set(classes) - set(partial))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's classes {classes}")
    names = classes + partial
    masks = np.zeros((len(names), len(classes)), dtype=bool)
    masks[np.arange(len(classes)), np.arange(len(classes))] = True
    for k, label in enumerate(partial, start=len(classes)):
        masks[k, [classes.index(member) for member in allowed[label] or ()]] = True
    return names, masks


def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` for an unknown one."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def task_classes(name: str) -> tuple[str, ...]:
    """The classes of task ``name`` in output order; ``ValueError`` for an unknown task."""
    return get_task(name).classes


def task_of(classes: Sequence[str]) -> Task | None:
    """The task whose label set is ``classes`` (any order), or None."""
    return next((task for task in TASKS.values() if sorted(task.classes) == sorted(classes)), None)


def relabel(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows of ``table`` that belong to ``task``, with ``label`` mapped to the task's classes.

    The original label is kept in ``source_label``. Labels the task's map does not know are
    an error (``ValueError``), so a new label can never be silently dropped.
    """
    mapping = get_task(task).label_map
    unknown = sorted(set(table["label"]) - set(mapping))
    if unknown:
        raise ValueError(f"task {task}: no mapping for labels {unknown}")
    out = table.copy()
    out["source_label"] = out["label"]
    out["label"] = out["label"].map(mapping)
    return out[out["label"].notna()].reset_index(drop=True)


def parse_class_map(items: Sequence[str]) -> dict[str, str]:
    """``["bacterial=pneumonia", "viral=pneumonia"]`` -> ``{"bacterial": "pneumonia", "viral": "pneumonia"}``."""
    mapping = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"class map {item!r}: expected MODEL_CLASS=DATA_LABEL")
        mapping[source.strip()] = target.strip()
    return mapping


def default_class_map(model_classes: Sequence[str], data_labels: Sequence[str]) -> dict[str, str]:
    """How a model's classes answer for a dataset's labels, when no explicit map is given.

    Identity when every data label is a model class. Otherwise the paper's task map from
    the model's classes to the data's label set (a 4-class model on a 3-class dataset:
    bacterial and viral both count as pneumonia). ``ValueError`` when neither applies.
    """
    model_classes, data_labels = list(model_classes), sorted(set(data_labels))
    if set(data_labels) <= set(model_classes):
        return {c: c for c in model_classes}
    target = task_of(data_labels) or next((t for t in TASKS.values() if set(data_labels) <= set(t.classes)), None)
    if target is not None:
        mapping = {c: target.label_map.get(c) for c in model_classes}
        if all(mapping.values()) and set(data_labels) <= set(mapping.values()):
            return {c: str(v) for c, v in mapping.items()}
    raise ValueError(
        f"no default mapping from the model's classes {model_classes} to the data's labels "
        f"{data_labels}; give one with --map MODEL_CLASS=DATA_LABEL (repeatable)"
    )


def mapped_labels(model_classes: Sequence[str], class_map: Mapping[str, str]) -> list[str]:
    """The labels ``class_map`` sends the model's classes to, in first-appearance order.

    Every model class must be mapped (``ValueError`` otherwise), so no probability mass goes missing.
    """
    missing = [c for c in model_classes if c not in class_map]
    if missing:
        raise ValueError(f"class map says nothing about model classes {missing}")
    return list(dict.fromkeys(class_map[c] for c in model_classes))


def merge_probabilities(
    probabilities: np.ndarray, model_classes: Sequence[str], class_map: Mapping[str, str]
) -> tuple[np.ndarray, list[str]]:
    """Sum the model's class probabilities into the mapped label set.

    Returns ``(merged, labels)`` with ``labels`` as :func:`mapped_labels` gives them.
    """
    labels = mapped_labels(model_classes, class_map)
    probabilities = np.asarray(probabilities, dtype=float)
    merged = np.zeros((len(probabilities), len(labels)))
    for k, c in enumerate(model_classes):
        merged[:, labels.index(class_map[c])] += probabilities[:, k]
    return merged, labels


__all__ = [
    "FOUR_CLASS",
    "PARTIAL_LABELS",
    "PartialLabel",
    "TASKS",
    "Task",
    "get_task",
    "label_targets",
    "register_task",
    "default_class_map",
    "mapped_labels",
    "merge_probabilities",
    "parse_class_map",
    "relabel",
    "task_classes",
    "task_of",
]
