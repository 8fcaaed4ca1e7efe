"""Evaluation report for a cross-validation run: the paper's tables, intervals and figures.

Input is a run directory holding ``predictions.csv`` (columns ``path, patient_id, fold, label``,
one ``prob_<class>`` column per class in class order, ``pred``, maybe more) and optionally
``fold-K/metrics.csv`` and ``fold-K/curves.png``.  :func:`write_report` writes into
``RUN_DIR/report/``:

* ``table3.csv`` / ``table4.csv`` -- the paper's Table III (per fold, macro P/R/Spec/F1 and accuracy)
  and Table IV (per class, mean over folds), in percent, with the paper's values and our difference
  beside ours when the run's classes are the paper's four;
* ``table5.csv`` -- the paper's Table V row for the run's task (4-class, 3-class, binary; recognised
  from the class names, see ``coronet.tasks``), with the paper's row beside it;
* ``table6.csv`` -- for a dataset-2 3-class run (``config.json`` says ``"paper_table": "table6"``),
  Table IV's per-class figures and the accuracy beside the paper's Table VI;
* ``ci.csv`` -- 95 % bootstrap intervals (patients resampled, all their images come along) for the
  accuracy and each class's recall and precision;
* ``auc.csv`` -- one-vs-rest ROC AUC per class; ``summary.json`` -- the returned summary;
* ``sources.csv`` -- every evaluated film by (source, label): Table I, the extra cohorts and a held-out
  collection (``RUN/leave-out/predictions.csv``, :mod:`coronet.data.leaveout`), which also gets a section;
* ``confusion-fold-K.png`` per fold, ``confusion-pooled.png``, ``roc.png``, ``calibration.png``,
  ``samples.png`` (the paper's Fig. 8: validation images with true label and probabilities; drawn
  from the ``path`` column, so only where the images are still readable);
* ``report.md`` and ``report.html`` (one self-contained page, figures embedded as data URIs).

Precision, recall and F1 come from scikit-learn's definitions (0 where undefined); specificity,
which scikit-learn lacks, is TN / (TN + FP) from the one-vs-rest confusion matrix.

One job per module: :mod:`.tables` (the paper's tables, intervals, AUC, false COVID-19 rate), :mod:`.cohorts`
(the extra cohorts), :mod:`.sourcetable` (the per-source table and the held-out collection), :mod:`.words` (the
summary sentence and the CLI's lines), :mod:`.page` (the page), and :mod:`.write` computes and writes them in
order (:func:`write_report`).

Research software, not a medical device.
"""

from .cohorts import cohort_predictions, cohort_summary
from .page import PIPELINE_CHECK_PROFILES, report_title
from .sourcetable import leave_out_result, source_display
from .tables import PAPER, false_covid_table, with_paper
from .words import adult_phrase, leave_out_phrase, single_label_note, summary_lines, summary_sentence
from .write import write_report

__all__ = [
    "PAPER",
    "PIPELINE_CHECK_PROFILES",
    "adult_phrase",
    "cohort_predictions",
    "cohort_summary",
    "false_covid_table",
    "leave_out_phrase",
    "leave_out_result",
    "report_title",
    "single_label_note",
    "source_display",
    "summary_lines",
    "summary_sentence",
    "with_paper",
    "write_report",
]
