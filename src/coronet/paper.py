"""Every number taken from the paper we reproduce, in one place.

Khan, Shah & Bhat, "CoroNet: A deep neural network for detection and diagnosis of COVID-19 from
chest x-ray images", Computer Methods and Programs in Biomedicine 196 (2020) 105581. Percentages
as the paper prints them. Tables and summaries read them from here, and only where they apply
(a dataset-2 summary is not compared with Table I).
"""

from __future__ import annotations

CITATION = (
    "Khan, Shah & Bhat, CoroNet, Computer Methods and Programs in Biomedicine 196 (2020) 105581, "
    "doi:10.1016/j.cmpb.2020.105581"
)

#: Table I: images per class (4-class data set).
TABLE1 = {"covid": 284, "normal": 310, "bacterial": 330, "viral": 327}

#: Table II: CoroNet's parameters (Keras counts).
TABLE2 = {"trainable": 33_915_436, "non_trainable": 54_528, "total": 33_969_964, "feature_map": (5, 5, 2048)}

#: Table III: 4-class, per fold -> precision, recall, specificity, F1, accuracy.
TABLE3: dict[str, dict[str, float]] = {
    "1": {"precision": 88.0, "recall": 87.7, "specificity": 95.7, "f1": 87.6, "accuracy": 87.3},
    "2": {"precision": 90.8, "recall": 90.7, "specificity": 96.7, "f1": 90.7, "accuracy": 90.0},
    "3": {"precision": 88.9, "recall": 89.0, "specificity": 96.2, "f1": 88.9, "accuracy": 89.1},
    "4": {"precision": 92.5, "recall": 92.2, "specificity": 97.3, "f1": 92.1, "accuracy": 92.26},
    "mean": {"precision": 90.0, "recall": 89.92, "specificity": 96.4, "f1": 89.8, "accuracy": 89.6},
}

#: Table IV: 4-class, per class (means over folds) -> precision, recall, specificity, F1.
TABLE4: dict[str, dict[str, float]] = {
    "covid": {"precision": 93.17, "recall": 98.25, "specificity": 97.9, "f1": 95.61},
    "normal": {"precision": 95.25, "recall": 93.5, "specificity": 98.1, "f1": 94.3},
    "bacterial": {"precision": 86.85, "recall": 85.9, "specificity": 95.0, "f1": 86.3},
    "viral": {"precision": 84.1, "recall": 82.1, "specificity": 94.8, "f1": 83.1},
}

#: Table V: per task (fold means) -> precision, recall, specificity, F1, accuracy.
TABLE5: dict[str, dict[str, float]] = {
    "4-class": {"precision": 90.0, "recall": 89.92, "specificity": 96.4, "f1": 89.8, "accuracy": 89.6},
    "3-class": {"precision": 95.0, "recall": 96.9, "specificity": 97.5, "f1": 95.6, "accuracy": 95.0},
    "binary": {"precision": 98.3, "recall": 99.3, "specificity": 98.6, "f1": 98.5, "accuracy": 99.0},
}

#: Table VI: dataset-2 after fine-tuning, per class -> precision, recall, specificity, F1; and the accuracy.
TABLE6: dict = {
    "covid": {"precision": 97.0, "recall": 89.0, "specificity": 99.6, "f1": 93.0},
    "normal": {"precision": 92.0, "recall": 85.0, "specificity": 97.7, "f1": 89.0},
    "pneumonia": {"precision": 87.0, "recall": 95.0, "specificity": 88.7, "f1": 91.0},
    "accuracy": 90.21,
}

#: Table VII: the peers the paper quotes (their own papers' figures): accuracy 3-class / 2-class, parameters.
TABLE7 = {
    "VGG19": {"3-class": 93.48, "binary": 98.75, "parameters": "143M"},
    "Xception": {"3-class": 92.85, "binary": 85.57, "parameters": "33M"},
    "COVID-Net": {"4-class": 83.5, "binary": 92.4, "parameters": "116M"},
    "ResNet-50 + SVM": {"binary": 95.38},
    "DarkCovidNet": {"3-class": 87.02, "binary": 98.08, "parameters": "1.1M"},
    "CoroNet": {"4-class": 89.6, "3-class": 95.0, "binary": 99.0, "parameters": "33M"},
}

#: The tables the report compares with, by name (as the report and the overview look them up).
TABLES: dict[str, dict] = {"table3": TABLE3, "table4": TABLE4, "table5": TABLE5, "table6": TABLE6}


def table1_total() -> int:
    return sum(TABLE1.values())


__all__ = ["CITATION", "TABLE1", "TABLE2", "TABLE3", "TABLE4", "TABLE5", "TABLE6", "TABLE7", "TABLES", "table1_total"]
