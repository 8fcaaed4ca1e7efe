"""Layer 1, data: each public source read in its own layout (``sources``), one image reader (``imageio``),
de-duplication (``dedup``), the paper's dataset with its folds and image cache (``prepare``), downloads
(``fetch``), and what training reads from it: the cached dataset and samplers (``dataset``) and batched
augmentation (``augment``). Imports nothing from the layers above."""
