"""Layer 3, training: settings as plain data (``profiles``), the Lightning modules that train a CoroNet
(``module``), one fold, the final model and k-fold cross-validation (``fit``, with a fold's rows and loaders in
``loaders``, its Trainer and ending in ``trainer``, the Trainer's callbacks in ``callbacks``, the head trained on
features in ``features``), and fine-tuning for the other tasks (``finetune``). Imports only ``data`` and
``models``."""
