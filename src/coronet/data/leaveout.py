"""Leave one collection out: train without a whole source, then test on all of its films.

A source is a manifest's ``source`` value (``cohen``, ``kaggle``, ``radiography``, ``actualmed`` ...).
Cross-validation still runs over the other films; the held-out source's films are in no fold's
training part and in no fold's validation part: each is predicted once, by the model of its own fold
(:func:`coronet.evaluation.cohorttest.leave_out_test`), like every other film of a report.

Nothing of the held-out source may reach training through another film: a film of another source that
shares a patient or a fold group (a duplicate chain) with a held-out film is not trained on either
(:func:`not_trained_on`). It stays in the cross-validation, tested in its own fold.
"""

from __future__ import annotations

import pandas as pd


def held_out(table: pd.DataFrame, source: str | None) -> pd.Series:
    """Rows of ``source`` (the films a leave-out test predicts); all False when ``source`` is None."""
    if source is None:
        return pd.Series(False, index=table.index)
    return table["source"] == source if "source" in table else pd.Series(False, index=table.index)


def not_trained_on(manifest: pd.DataFrame, source: str | None) -> pd.Series:
    """Rows no model may train on when ``source`` is left out: its films, and every film linked to one of them
    by a patient id or a fold group, through any chain of such links. Raises ``ValueError`` when the manifest
    has no film of ``source``."""
    excluded = held_out(manifest, source)
    if source is None:
        return excluded
    if not excluded.any():
        found = sorted(set(manifest["source"].dropna())) if "source" in manifest else []
        raise ValueError(f"leave_out {source!r}: no film of that source here (sources: {', '.join(found) or 'none'})")
    keys = [column for column in ("patient_id", "group") if column in manifest]
    while True:
        linked = excluded.copy()
        for key in keys:
            linked |= manifest[key].isin(set(manifest.loc[excluded, key]))
        if linked.equals(excluded):
            return excluded
        excluded = linked


__all__ = ["held_out", "not_trained_on"]
