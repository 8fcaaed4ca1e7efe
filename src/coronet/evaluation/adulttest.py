"""The adult-negative test: how often a 4-class model calls an adult film without COVID-19 "COVID-19".

Every normal, bacterial and viral film of the paper's Table I data is a child's (Kermany et
al.), every COVID-19 film an adult's (Cohen et al.): "adult" alone predicts COVID-19. Dataset-2's
No_findings and Pneumonia films are adult ChestX-ray8 films with no COVID-19, none of them in
the Table I data, so the share of them a model calls COVID-19 measures that shortcut directly.

Each adult film gets a fold (patient-grouped, the same assignment as
``coronet data prepare --adult-negatives`` gives with the run's seed and fold count) and is
predicted by that fold's model only. A run trained with adult negatives already holds these
predictions (its validation rows of cohort ``adult``: never trained on by their fold's model);
any other run gets them here, in ``RUN/adult-test/predictions.csv``, which the run's report reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.augment import resize_batch
from ..data.prepare import PrepareConfig, adult_negative_rows, split_cohorts
from ..layout import ADULT_TEST, CONFIG, MANIFEST, PREDICTIONS, fold_model, prob_column
from ..models.modeldir import annotate_card, inference_model, load_model_dir
from ..training.fit import prediction_table
from .report import adult_predictions


def adult_negative_test(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    log=print,
    batch_size: int = 32,
    per_class: int | None = None,
) -> Path | None:
    """Predict dataset-2's adult films with the fold models of the 4-class ``run_dir``.

    Writes ``run_dir/adult-test/predictions.csv`` (the usual layout, ``cohort`` = ``adult``) and
    returns it; returns None when the run's own predictions already hold adult rows (a run
    trained with adult negatives). ``data`` is dataset-2's folder or a data directory holding it;
    ``per_class``: a seeded sample of that many films of each of the two labels (smoke runs).
    """
    run_dir = Path(run_dir)
    own = split_cohorts(pd.read_csv(run_dir / PREDICTIONS))[1]
    if own is not None:  # trained with adult negatives: each fold's held-out adult films are predicted already
        for fold, rows in own.groupby("fold"):
            annotate_card(fold_model(run_dir, fold), adult_test=card_entry(rows, held_out=True))
        return None
    out = run_dir / ADULT_TEST
    if (out / PREDICTIONS).is_file():
        return out / PREDICTIONS
    record = json.loads((run_dir / CONFIG).read_text())
    manifest = pd.read_csv(run_dir / MANIFEST)
    folds = sorted(int(f) for f in manifest.fold.unique())
    first_card = load_model_dir(fold_model(run_dir, folds[0]))[1]
    config = PrepareConfig(
        folds=len(folds),
        seed=record["train"]["seed"],
        image_size=first_card["input_size"],
        adult_negatives=str(data),
        adult_per_class=per_class,
    )
    rows, scans, _, _ = adult_negative_rows(Path(data), config, log=log)
    parts = []
    for fold in folds:
        chosen = np.flatnonzero(rows["fold"].to_numpy() == fold)
        model, card = load_model_dir(fold_model(run_dir, fold))
        network = inference_model(model.eval(), card)
        probabilities = []
        with torch.inference_mode():
            for start in range(0, len(chosen), batch_size):
                batch = np.stack([scans[k]["cached"] for k in chosen[start : start + batch_size]])
                images = resize_batch(torch.from_numpy(batch)[:, None].float().div_(255), card["input_size"])
                probabilities.append(torch.softmax(network(images), dim=1))
        frame = pd.DataFrame(torch.cat(probabilities).numpy(), columns=[prob_column(c) for c in card["classes"]])
        frame.insert(0, "index", np.arange(len(frame)))
        frame["rank"] = 0
        table = prediction_table(rows.iloc[chosen], frame, fold)
        parts.append(table.drop(columns=["rank"]))
        log(
            f"adult-negative test, fold {fold}: {len(chosen)} adult films, "
            f"{(table.pred == 'covid').mean():.1%} called COVID-19"
        )
        annotate_card(fold_model(run_dir, fold), adult_test=card_entry(table, held_out=True))
    out.mkdir(parents=True, exist_ok=True)
    predictions = pd.concat(parts, ignore_index=True)
    predictions.to_csv(out / PREDICTIONS, index=False)
    return out / PREDICTIONS


def card_entry(adults: pd.DataFrame, held_out: bool) -> dict:
    """The model card's ``adult_test``: the share of adult films without COVID-19 it called COVID-19."""
    return {
        "false_covid_rate": float((adults["pred"] == "covid").mean()),
        "films": int(len(adults)),
        "patients": int(adults["patient_id"].nunique()),
        "data": "dataset-2 (Ozturk et al.) No_findings and Pneumonia: adult ChestX-ray8 films",
        "never_trained_on": held_out,
    }


__all__ = ["ADULT_TEST", "card_entry", "adult_negative_test", "adult_predictions"]
