"""Where llama-migrate keeps what it generates: the user cache dir, never the repo."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LLAMA_MIGRATE_CACHE"

# Repo root when running from a checkout / editable install; data folders live beside the packages.
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Cache dir: explicit override, then $LLAMA_MIGRATE_CACHE, then $XDG_CACHE_HOME or ~/.cache."""
    if override:
        root, flag = Path(override), "--cache"
    elif os.environ.get(CACHE_ENV):
        root, flag = Path(os.environ[CACHE_ENV]), f"${CACHE_ENV}"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root, flag = Path(base) / "llama-migrate", "the cache folder ($XDG_CACHE_HOME or ~/.cache)"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a read-only disk: say which setting to change
        from verify.inputs import BadInput

        raise BadInput(flag, str(root), f"cannot be created ({exc.strerror or exc})",
                       f"give a folder you can write (--cache or ${CACHE_ENV})") from exc  # fmt: skip
    return root.resolve()


def data_dir(name: str) -> Path:
    """A shipped data folder (`rules`, `templates`, `fixtures`): in the wheel under migrate/_data, else the checkout."""
    packaged = Path(__file__).resolve().parent / "_data" / name
    if packaged.is_dir():
        return packaged
    return REPO_ROOT / name
