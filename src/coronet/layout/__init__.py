"""The on-disk contract: what a prepared dataset directory and a run directory hold, and the predictions table.

Every module finds its files through these names, so the layout is written down once::

    DATASET/manifest.csv             one row per image: path, label, source, patient_id, fold, cache_index, ...
    DATASET/images-<size>.npy        the decoded, resized uint8 films (row = cache_index), memory-mappable
    DATASET/signatures.npy           edge signatures (overlap checks against other datasets)
    DATASET/prepare.json, summary.md, duplicates.csv, skipped.csv

    RUN/config.json                  resolved settings, dataset hash, versions, machine
    RUN/manifest.csv                 the dataset with its folds (+ dataset-prepare.json, dataset-summary.md, ...)
    RUN/predictions.csv              path, patient_id, fold, label, prob_<class>..., pred, ...
    RUN/results.md                   accuracy per fold
    RUN/report/                      coronet report: report.md, report.html, summary.json, <table>.csv, <figure>.png
    RUN/audit/                       coronet audit: audit.json, audit.md, audit.html, predictions-<test>.csv, ...
    RUN/adult-test/predictions.csv   the adult-negative test (likewise source-test/, radiography-test/)
    RUN/leave-out/predictions.csv    the held-out collection's films (coronet cv --leave-out SOURCE)
    RUN/fold-K/metrics.csv, curves.png, predictions.csv, checkpoints/last.ckpt, model/
    MODEL/model.safetensors + MODEL/model.json   (coronet.models.modeldir)

    OUT/dataset/, OUT/4class/, OUT/3class/, OUT/binary/, OUT/dataset2/, OUT/final/   coronet reproduce: one
    dataset, a run per task, a final model, and the overview report (report.md, report.html, summary.json,
    <table>.csv, overview.png, timings.json) at the top

The typed paths :class:`DatasetDir`, :class:`RunDir` (its :class:`FoldDir`, :class:`ReportDir`, :class:`AuditDir`)
and :class:`ReproduceDir` are the API: code asks them for a file, and for the run-level decisions that depend
only on what is on disk (which folds are finished, whether a config may be resumed).

The typed directories are in :mod:`.directories`, the predictions table in :mod:`.predictions`.
"""

from .directories import (
    ADULT_TEST,
    AUDIT,
    AUDIT_HTML,
    AUDIT_JSON,
    AUDIT_MD,
    CACHE_TEMPLATE,
    CHECKPOINTS,
    CONFIG,
    CURVES,
    DATASET_RECORDS,
    FOLD_PREFIX,
    LAST_CHECKPOINT,
    LEAVE_OUT,
    LOGS,
    MANIFEST,
    METRICS,
    MODEL_CARD,
    MODEL_DIR,
    MODEL_WEIGHTS,
    NO_OVERLAP,
    PREDICTIONS,
    PREPARE_RECORD,
    RAW_PREDICTIONS,
    REPORT,
    REPORT_HTML,
    REPORT_MD,
    REPRODUCE_DATASET,
    REPRODUCE_FINAL,
    RESULTS,
    SIGNATURES,
    SUMMARY,
    TIMINGS,
    AuditDir,
    DatasetDir,
    File,
    FoldDir,
    ReportDir,
    ReproduceDir,
    RunDir,
    Sub,
    atomic_path,
    file_sha256,
    fold_dir,
    fold_model,
    runtime_of,
)
from .predictions import (
    CARRIED_COLUMNS,
    PREDICTION_COLUMNS,
    PROB_PREFIX,
    classes_of,
    predictions_table,
    prob_column,
    prob_columns,
    read_predictions,
)

__all__ = [
    "ADULT_TEST",
    "AUDIT",
    "AUDIT_HTML",
    "AUDIT_JSON",
    "AUDIT_MD",
    "AuditDir",
    "DATASET_RECORDS",
    "FOLD_PREFIX",
    "LEAVE_OUT",
    "REPORT_HTML",
    "REPORT_MD",
    "ReportDir",
    "ReproduceDir",
    "SUMMARY",
    "TIMINGS",
    "file_sha256",
    "runtime_of",
    "CACHE_TEMPLATE",
    "CHECKPOINTS",
    "CONFIG",
    "CURVES",
    "DatasetDir",
    "FoldDir",
    "LAST_CHECKPOINT",
    "MANIFEST",
    "METRICS",
    "MODEL_CARD",
    "MODEL_DIR",
    "MODEL_WEIGHTS",
    "NO_OVERLAP",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "PREPARE_RECORD",
    "PROB_PREFIX",
    "REPORT",
    "RESULTS",
    "RunDir",
    "SIGNATURES",
    "atomic_path",
    "classes_of",
    "fold_dir",
    "fold_model",
    "prob_column",
    "prob_columns",
    "predictions_table",
    "read_predictions",
    "CARRIED_COLUMNS",
    "File",
    "LOGS",
    "RAW_PREDICTIONS",
    "REPRODUCE_DATASET",
    "REPRODUCE_FINAL",
    "Sub",
]
