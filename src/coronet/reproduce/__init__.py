"""``coronet reproduce``: the whole paper end to end, into one directory, with one report.

Stages (each a directory under ``out``; an interrupted run continues where it stopped):

1. ``dataset/`` -- the paper's Table I selection, duplicates removed, patient-grouped folds;
2. ``4class/`` -- cross-validation of the 4-class model (Tables III and IV);
3. ``3class/``, ``binary/`` -- fine-tuned from each fold's 4-class model (Table V);
4. ``dataset2/`` -- fine-tuned on Ozturk et al.'s dataset-2, with ``dataset2/no-overlap/`` for
   the images the 4-class models never saw (Table VI), when the data directory holds it;
5. ``report.md`` / ``report.html`` -- Tables III-VI beside the paper's values, the 95 %
   intervals of every run, and links to each run's own report; ``timings.json``;
6. ``final/`` (with ``final=True``) -- one 4-class model trained on every image, for
   deployment, its card recording the cross-validation figures that vouch for the recipe.

The profile names the settings of every stage (``coronet.training.profiles``): ``fast`` is the
recipe that trains a working CoroNet from scratch on a CPU, ``paper`` the paper's
protocol, ``quick`` a pipeline check of a few minutes, ``tiny`` a test network.

The stages run in :mod:`.stages`; the overview (``summary.json``, the report, the printed lines) is
:mod:`.overview`'s.
"""

from .overview import PIPELINE_CHECKS, Overview, overview_lines, write_overview
from .stages import ReproduceOptions, reproduce

__all__ = ["PIPELINE_CHECKS", "Overview", "ReproduceOptions", "overview_lines", "reproduce", "write_overview"]
