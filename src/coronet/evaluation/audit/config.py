"""The audit's settings: the lung field (a box, or per-film masks), the retraining, the samples, the bootstrap."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: x0, y0, x1, y1 as fractions of the square film (see :mod:`coronet.evaluation.audit` for why these).
DEFAULT_LUNG_BOX = (0.12, 0.08, 0.88, 0.85)


@dataclass
class AuditConfig:
    lung_box: tuple[float, float, float, float] = DEFAULT_LUNG_BOX
    masks: str | None = None  # folder of per-image lung masks (PNG, same stem as the film)
    retrain: bool = True  # test 6 (a training run per fold in retrain_folds)
    retrain_folds: tuple[int, ...] | None = None  # default: the run's first fold
    cam_per_group: int = 8  # Grad-CAM films per (class, correct / wrong)
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self):
        x0, y0, x1, y1 = self.lung_box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"lung box {self.lung_box}: expected 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")

    def record(self) -> dict:
        """The settings as ``audit.json`` records them (the box a list)."""
        return {**asdict(self), "lung_box": list(self.lung_box)}


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"0.12,0.08,0.88,0.85"`` -> a lung box (``ValueError`` unless four numbers in [0, 1], x0 < x1, y0 < y1)."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--lung-box {text!r}: expected four numbers X0,Y0,X1,Y1 in [0, 1]") from None
    if len(box) != 4:
        raise ValueError(f"--lung-box {text!r}: expected four numbers X0,Y0,X1,Y1 in [0, 1]")
    AuditConfig(lung_box=box)  # validates
    return box
