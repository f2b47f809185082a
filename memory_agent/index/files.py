"""The files of a saved index: ``<path>`` (the FAISS file) and ``<path>.json`` (its sidecar).

The sidecar records kind, count, max id, id sum, dim, model, nlist and the FAISS file's SHA-256, so that
a file that disagrees with SQLite (stale, corrupt, of another model) is found at start. Both are
written via a temporary file, fsync and an atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_agent.errors import IndexFileError

__all__ = ["FORMAT", "IndexMeta", "fsync_replace", "read_meta", "sha256_file", "sidecar_path", "tmp_path",
           "write_meta"]

#: Version of the sidecar format this code writes and reads.
FORMAT = 1
_READ_CHUNK = 1 << 24


@dataclass(frozen=True, slots=True)
class IndexMeta:
    """The sidecar of a saved index: what it holds (for staleness checks) and the file's SHA-256.

    ``nlist`` is the number of inverted lists of an ``"ivf"`` index (0 for ``"flat"``).
    """

    kind: str
    dim: int
    model: str
    count: int
    max_id: int
    id_sum: int
    sha256: str
    nlist: int = 0
    format: int = FORMAT


def sidecar_path(path: Path) -> Path:
    """``<path>.json``: where the metadata of the index file at ``path`` lives."""
    return path.with_name(path.name + ".json")


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = tmp_path(path)
    try:
        tmp.write_bytes(data)
        fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _meta_to_json(meta: IndexMeta) -> dict[str, Any]:
    return {
        "format": meta.format,
        "kind": meta.kind,
        "dim": meta.dim,
        "model": meta.model,
        "count": meta.count,
        "max_id": meta.max_id,
        "id_sum": meta.id_sum,
        "nlist": meta.nlist,
        "sha256": meta.sha256,
    }


def read_meta(path: Path) -> IndexMeta:
    """The sidecar of the index at ``path``. Raises ``IndexFileError`` when missing or malformed."""
    side = sidecar_path(path)
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
        meta = IndexMeta(
            kind=str(raw["kind"]),
            dim=int(raw["dim"]),
            model=str(raw["model"]),
            count=int(raw["count"]),
            max_id=int(raw["max_id"]),
            id_sum=int(raw["id_sum"]),
            sha256=str(raw["sha256"]),
            nlist=int(raw.get("nlist", 0)),
            format=int(raw["format"]),
        )
    except FileNotFoundError as exc:
        raise IndexFileError(f"index sidecar {side} is missing", path=str(path)) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"index sidecar {side} is unreadable ({exc})", path=str(path)) from exc
    if meta.format != FORMAT:
        raise IndexFileError(
            f"index sidecar {side} has format {meta.format}, expected {FORMAT}", path=str(path)
        )
    return meta


def write_meta(path: Path, meta: IndexMeta) -> None:
    """Write the sidecar of the index file at ``path`` atomically."""
    _write_atomic(sidecar_path(path), json.dumps(_meta_to_json(meta), indent=1).encode())
