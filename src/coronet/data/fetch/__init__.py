"""Download the three public chest X-ray sources into a data directory.

``coronet data fetch --data DIR`` calls :func:`fetch_sources`, which for each source

1. skips it when ``DIR/<target>`` already holds everything (unless ``force``);
2. downloads the archive with :mod:`urllib` to ``DIR/.downloads/<name>.zip.part``,
   resuming an interrupted download with an HTTP ``Range`` request, then renames it
   to ``<name>.zip`` once complete and verified;
3. checks its sha256 (when a checksum is known) and records sha256, url, size and
   date in ``DIR/.downloads/<name>.json``, so a finished archive is never fetched twice;
4. extracts only the folders the readers in :mod:`coronet.sources` need, refusing
   unsafe member names, into a temporary folder beside the target, and renames it
   into place so a failed or interrupted run never leaves a half-installed source.

Resulting layout (what the readers expect)::

    DIR/cohen-covid/metadata.csv
    DIR/cohen-covid/images/...
    DIR/kaggle-pneumonia/chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg
    DIR/ozturk-dataset2/{Covid-19,No_findings,Pneumonia}/...

URLs can be overridden per source (``urls=``) or all at once with the environment
variable ``CORONET_FETCH_BASE_URL`` (``<base>/<name>.zip``), e.g. for a mirror; a
``file://`` URL installs an archive downloaded by hand. Only the standard library is used.

One job per module: :mod:`.run` (:func:`fetch_sources` and the help texts), :mod:`.download` (resumable,
verified downloads), :mod:`.install` (safe extraction into place) and :mod:`.errors` (:class:`FetchError`).
"""

from .errors import FetchError
from .run import BASE_URL_ENV, DOWNLOADS, by_hand_help, fetch_sources, missing_data_help, remote_sources

__all__ = [
    "BASE_URL_ENV",
    "DOWNLOADS",
    "FetchError",
    "by_hand_help",
    "fetch_sources",
    "missing_data_help",
    "remote_sources",
]
