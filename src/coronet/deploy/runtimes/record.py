"""``MODEL_DIR/runtimes.json``: written atomically, read back, and what ``--runtime auto`` runs when it holds here."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...models.modeldir import read_card
from ..export import record_path
from .cpu import MACHINE_KEYS, machine
from .runners import REFERENCE, RUNTIMES, measure_hint, onnx_file

RECORD_NAME = "runtimes.json"
#: /2: the check also bounds the answers changed; a /1 record, checked without that bound, is not trusted.
FORMAT = "coronet-runtimes/2"


def read_record(model_dir: str | os.PathLike) -> dict | None:
    """The directory's ``runtimes.json`` as written (None when there is none; ``ValueError`` when unreadable)."""
    path = read_card(model_dir)[1] / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({' '.join(str(error).split())})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} record")
    return record


def write_record(model_dir: str | os.PathLike, record: dict) -> Path:
    """Write ``runtimes.json`` atomically (a temporary file in the same directory, then renamed); return its path."""
    directory = read_card(model_dir)[1]
    path = directory / RECORD_NAME
    handle = tempfile.NamedTemporaryFile("w", dir=directory, prefix=f".{RECORD_NAME}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(json.dumps(record, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return path


def recorded_sha256(directory: Path, runtime: str) -> str | None:
    """The SHA-256 the export record beside the runtime's ONNX file gives (the file itself is checked on opening)."""
    name = onnx_file(runtime)
    if name is None:
        return None
    try:
        return json.loads(record_path(directory / name).read_text()).get("onnx_sha256")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtimes to try in order (the last is always ``torch``), why, and the record used (None: none)."""

    ranking: tuple[str, ...]
    reason: str
    record: str | None


def choose_runtime(model_dir: str | os.PathLike, card: dict | None = None) -> RuntimeChoice:
    """What ``--runtime auto`` runs: the record's ranking when ``runtimes.json`` is valid here, else ``torch``.

    Valid: readable, of :data:`FORMAT`, for the card's weights (SHA-256), measured on this machine
    (:data:`MACHINE_KEYS`); a ranked ONNX runtime whose file is no longer the one measured (its export
    record's SHA-256) is dropped from the ranking. ``reason`` says which of these decided.
    """
    card_found, directory = read_card(model_dir)
    card = card or card_found
    hint = measure_hint(directory)
    path = directory / RECORD_NAME
    try:
        record = read_record(directory)
    except ValueError as error:
        return RuntimeChoice((REFERENCE,), f"{error}: ignored; torch ({hint})", None)
    if record is None:
        return RuntimeChoice((REFERENCE,), f"no {RECORD_NAME}: torch, the default ({hint})", None)
    if record.get("weights_sha256") != card.get("weights_sha256"):
        return RuntimeChoice((REFERENCE,), f"{path} was measured for other weights: ignored; torch ({hint})", None)
    here, there = machine(), record.get("machine") or {}
    differ = [key for key in MACHINE_KEYS if there.get(key) != here.get(key)]
    if differ:
        what = ", ".join(f"{key} {there.get(key)!r} there, {here.get(key)!r} here" for key in differ)
        return RuntimeChoice((REFERENCE,), f"{path} was measured on another machine ({what}): ignored; torch", None)
    ranking, dropped = _still_valid(directory, record)
    chosen = record.get("chosen")
    if ranking[0] == chosen:
        reason = f"the fastest runtime that passed its check ({path}, {record.get('created')})"
    else:
        reason = f"{path} chose {chosen}, but {'; '.join(dropped) or 'it is not eligible'}: the next in its ranking"
    return RuntimeChoice(tuple(ranking), reason, str(path))


def _still_valid(directory: Path, record: dict) -> tuple[list[str], list[str]]:
    """(the record's ranking of eligible runtimes whose ONNX file is still the one measured, ending with torch;
    why the others were dropped)."""
    candidates = record.get("candidates") or {}
    ranking: list[str] = []
    dropped: list[str] = []
    for runtime in record.get("ranking") or []:
        entry = candidates.get(runtime) or {}
        if runtime not in RUNTIMES or not entry.get("eligible") or runtime in ranking:
            continue
        if onnx_file(runtime) and recorded_sha256(directory, runtime) != entry.get("sha256"):
            dropped.append(f"{onnx_file(runtime)} is not the file measured")
            continue
        ranking.append(runtime)
    if REFERENCE not in ranking:
        ranking.append(REFERENCE)
    return ranking, dropped
