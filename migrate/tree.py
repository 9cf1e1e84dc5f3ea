"""What counts as a llama.cpp tree, and which files of a consumer's tree are its own: one definition for every
stage (sources, rewrite, build, verify), so they never disagree about what they look at."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SKIP_DIR_NAMES = {".git", "node_modules", "CMakeFiles", "__pycache__", ".llama-migrate-backup"}
BACKUP_SUFFIXES = {".orig", ".bak", ".rej", ".swp"}


from verify.manifest import is_llama_tree  # noqa: E402 - the one definition, shared with verify/

__all__ = ["BACKUP_SUFFIXES", "SKIP_DIR_NAMES", "consumer_files", "is_backup", "is_llama_tree", "skip_dir"]


def is_backup(path: Path) -> bool:
    return path.suffix in BACKUP_SUFFIXES or path.name.endswith("~") or ".llama-migrate-bak" in path.name


def skip_dir(path: Path) -> bool:
    """Folders that are not the consumer's own code: VCS data, build folders, vendored llama.cpp trees."""
    return (
        path.name in SKIP_DIR_NAMES
        or path.name.startswith("build")
        or (path / "CMakeCache.txt").exists()
        or is_llama_tree(path)
    )


def consumer_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files with these suffixes under root (a folder), outside skipped folders and backups, in a stable order."""
    wanted = set(suffixes)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not skip_dir(here / d))
        for name in sorted(filenames):
            path = here / name
            if path.suffix in wanted and not is_backup(path):
                found.append(path.resolve())
    return found
