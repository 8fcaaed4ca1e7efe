"""Layer 3, training: settings as plain data (``profiles``), the Lightning module that trains a CoroNet
(``module``), one fold and k-fold cross-validation (``fit``), and fine-tuning for the other tasks
(``finetune``). Imports only ``data`` and ``models``."""
