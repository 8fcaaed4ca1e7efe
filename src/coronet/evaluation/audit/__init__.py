"""``coronet audit``: how much of a cross-validated model's accuracy comes from shortcuts, not the lungs.

In the paper's data the label is nearly readable without looking at the lungs: every
normal and pneumonia film is a child's from one hospital (Kermany et al.), every COVID-19
film an adult's, from papers and websites in hundreds of styles. Six tests, each fold's
model only ever seeing its own validation films (nothing leaks):

1. **lungs removed** -- the lung field blacked out in the validation films, predicted by the
   intact models;
2. **lungs only** -- everything but the lung field blacked out;
3. **acquisition features alone** -- a scikit-learn classifier on features that carry no
   diagnosis (size, aspect ratio, mode, bit depth, format, the Kaggle upload variant, border
   and corner intensities, histogram percentiles), on the same patient-grouped folds;
4. **single-source control** -- accuracy among the three Kaggle classes only (one source, one
   age group), and COVID-19 vs the rest (two sources);
5. **where the network looked** -- the share of Grad-CAM mass inside the lung field, per class,
   for correct and wrong predictions (saliency inside the lungs does not prove the absence of
   shortcuts: Viviano et al., ICLR 2021);
6. **retrained with the lungs removed** (Maguolo & Nanni's test, the decisive one) -- a model
   trained with the run's own settings on the run's own training films of the other folds (adult
   negatives included, where the run had them) with the lungs removed, tested on its fold's
   lungs-removed Table I films.

Tests 1 and 2 show films far from anything the models saw in training, so they measure
robustness to occlusion as much as the use of shortcuts; test 6 does not have that problem
and is reported first.

The lung field is a box in relative coordinates, ``x0, y0, x1, y1`` of the square (resized)
film: by default :data:`DEFAULT_LUNG_BOX`, x 12-88 % and y 8-85 %. On a frontal chest film
resized to a square the lungs span roughly the middle three quarters of the width and run
from just below the top edge (the apices, at the clavicles) to the diaphragm domes, about
85 % of the height; the box covers both lung fields with a margin in most films and leaves
the borders, corners, shoulders, labels and markers outside. Per-image masks (PNG, same stem
as the film, non-zero = lung) replace it where given.

Output (``RUN_DIR/audit`` by default): ``audit.json``, ``audit.md``, ``audit.html``, figures,
and ``predictions-<test>.csv`` in the usual predictions layout.

Each test is a module of this package: :mod:`.occlusion` (tests 1 and 2, and the lung field),
:mod:`.acquisition` (test 3), :mod:`.gradcam` (test 5), :mod:`.retrain` (test 6); test 4 and the verdicts are
:mod:`.verdicts`, the page :mod:`.page`, the settings :mod:`.config`, and :mod:`.run` runs them in order.
"""

from .acquisition import acquisition_features, acquisition_predictions
from .config import DEFAULT_LUNG_BOX, AuditConfig, parse_box
from .gradcam import cam_mass
from .occlusion import box_mask, lung_masks, occlude, occlusion_tests, predict_images
from .page import overview_blocks
from .run import audit, audit_external

__all__ = [
    "AuditConfig",
    "DEFAULT_LUNG_BOX",
    "acquisition_features",
    "acquisition_predictions",
    "audit",
    "audit_external",
    "box_mask",
    "cam_mass",
    "lung_masks",
    "occlude",
    "occlusion_tests",
    "overview_blocks",
    "parse_box",
    "predict_images",
]
