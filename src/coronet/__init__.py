"""coronet: a faithful, leakage-free reproduction of CoroNet (Khan et al. 2020)."""

__version__ = "0.1.0"

#: Canonical label names used everywhere (manifests, model cards, predictions).
LABELS_4CLASS = ("covid", "normal", "bacterial", "viral")
