"""The human-readable model card (README.md beside model.json): written with the card, rewritten with it."""

from __future__ import annotations

import torch

from coronet.models.coronet import build_model
from coronet.models.modeldir import annotate_card, save_model_dir


def test_every_model_directory_has_a_readable_card_that_follows_model_json(tmp_path):
    torch.manual_seed(0)
    model = build_model(4, "test_resnet", input_size=32, hidden=8, crop="lungs")
    out = save_model_dir(
        model,
        tmp_path / "model",
        classes=("covid", "normal", "bacterial", "viral"),
        backbone="test_resnet",
        input_size=32,
        hidden=8,
        dropout=0.5,
        extra={"name": "coronet-test", "metrics": {"val_accuracy": 0.75, "val_images": 40}},
    )
    text = (out / "README.md").read_text()
    assert text.startswith("---\nlicense: mit\n") and "# coronet-test" in text
    assert "Not a medical device" in text and "0.750" in text and "crop [0.12, 0.08, 0.88, 0.85]" in text
    assert "Not measured for this model" in text  # no per-source figures yet
    worst = {"source": "cohen", "rate": 0.25, "ci": [0.1, 0.4], "images": 41, "patients": 23}
    rows = [
        {
            "source": "cohen",
            "images": 41,
            "patients": 23,
            "false covid": 0.25,
            "false covid low": 0.1,
            "false covid high": 0.4,
        }
    ]
    annotate_card(out, false_covid_by_source={"worst": worst, "negative_sources": rows, "measured_on": "4 folds"})
    text = (out / "README.md").read_text()
    assert "| cohen | 41 | 23 | 25.0% (95% CI 10.0%-40.0%) |" in text
    assert "Worst negative source: **cohen, 25.0% (95% CI 10.0%-40.0%)**" in text
