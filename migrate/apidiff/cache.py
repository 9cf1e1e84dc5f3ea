"""The surface cache: one JSON file per tree under `<cache>/apidiff/`, reused while what it was read from (the
headers, the sources of the defaults) is unchanged, so a diff costs a parse once per tree."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from migrate.apidiff.parse import parse_surface
from migrate.apidiff.surface import (
    SURFACE_FORMAT,
    ApiSurface,
    candidate_headers,
    headers_fingerprint,
    surface_fingerprint,
)
from migrate.paths import cache_root
from migrate.sources import SourceTree


def surface_cache_path(tree: SourceTree, cache: str | Path | None = None) -> Path:
    commit = tree.commit if re.fullmatch(r"[0-9a-f]{12,40}", tree.commit) else None
    key = commit[:12] if commit else "tree-" + headers_fingerprint(tree.path, candidate_headers(tree.path))[:12]
    return cache_root(cache) / "apidiff" / f"{key}.json"


def read_cached(path: Path, fingerprint: str) -> ApiSurface | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("format") != SURFACE_FORMAT or data.get("fingerprint") != fingerprint:
        return None
    try:
        return ApiSurface.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None  # a damaged entry is re-parsed and overwritten


def load_surface(tree: SourceTree, cache: str | Path | None = None, refresh: bool = False) -> ApiSurface:
    """The tree's surface from `<cache>/apidiff/<commit12>.json`, parsed and stored there when missing or stale."""
    started = time.perf_counter()
    path = surface_cache_path(tree, cache)
    fingerprint = surface_fingerprint(tree.path.resolve())
    surface = None if refresh else read_cached(path, fingerprint)
    if surface is None:
        surface = parse_surface(tree.path, tree.provided, tree.commit)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs (tests, CI) share the cache
        tmp.write_text(json.dumps(surface.to_json(), indent=1))
        tmp.replace(path)
    else:
        surface.from_cache = True
    surface.load_seconds = round(time.perf_counter() - started, 3)
    return surface
