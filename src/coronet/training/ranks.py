"""Which process speaks for a run: the rank the launcher gave this process, and loggers only rank 0 is heard on.

Under ``--strategy ddp`` every process runs the command; rank 0 speaks for the run and the other ranks' lines
are dropped.
"""

from __future__ import annotations

import logging


def global_rank() -> int:
    """This process's rank as the launcher (Lightning's DDP re-run, torchrun, SLURM) set it; 0 when alone."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return _get_rank() or 0


def rank_zero_logger(name: str) -> logging.Logger:
    """The logger ``name``, passing only the records of rank 0 (a filter on the logger itself: records reach the
    handlers of its parents only through it)."""
    logger = logging.getLogger(name)
    logger.addFilter(lambda record: global_rank() == 0)
    return logger
