"""The optional disk copy of the cache, so a restart (even with the CDN down) still serves the
last good bundles. Blocking file I/O: the service calls these methods in an executor.

Each bundle is two files: `<name>` (the CDN's bytes, before rewriting, so a config change is
applied on load) and `<name>.json` (validators, fetch time and a SHA-256 that catches a torn
or corrupted copy). Both are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..endpoints import is_valid_name
from .cache import Origin

__all__ = ["DiskStore", "StoredAsset"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredAsset:
    name: str
    origin: Origin
    fetched_at: float


class DiskStore:
    def __init__(self, directory: str) -> None:
        self._dir = Path(directory)

    def save(self, name: str, origin: Origin, fetched_at: float) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        meta = {"name": name, "etag": origin.etag, "last_modified": origin.last_modified,
                "fetched_at": fetched_at, "sha256": hashlib.sha256(origin.body).hexdigest()}
        self._write(self._dir / name, origin.body)
        # The metadata goes last: a body without it is ignored on load.
        self._write(self._dir / f"{name}.json", json.dumps(meta).encode())

    def delete(self, name: str) -> None:
        for path in (self._dir / f"{name}.json", self._dir / name):
            path.unlink(missing_ok=True)

    def load_all(self) -> list[StoredAsset]:
        """Every intact copy, most recently fetched first; damaged ones are skipped."""
        if not self._dir.is_dir():
            return []
        stored = [item for path in self._dir.glob("*.json")
                  if (item := self._load(path)) is not None]
        return sorted(stored, key=lambda item: item.fetched_at, reverse=True)

    def _load(self, meta_path: Path) -> StoredAsset | None:
        try:
            meta = json.loads(meta_path.read_bytes())
            name = meta["name"]
            if not isinstance(name, str) or not is_valid_name(name) \
                    or meta_path.name != f"{name}.json":
                raise ValueError("the file name does not match its metadata")
            body = (self._dir / name).read_bytes()
            if hashlib.sha256(body).hexdigest() != meta["sha256"]:
                raise ValueError("the body does not match its SHA-256")
            origin = Origin(body, meta.get("etag"), meta.get("last_modified"))
            return StoredAsset(name, origin, float(meta["fetched_at"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("assets: skipping the disk copy %s: %s", meta_path.name, exc)
            return None

    def _write(self, path: Path, data: bytes) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
