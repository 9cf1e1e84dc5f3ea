"""What `migrate build` records beside each library it makes (`<library>.manifest.json`): the llama.cpp tree and
version it was built against, the consumer sources and header, the build options. Verification reads it instead
of reverse-engineering the build; a library built elsewhere has none, and verification then falls back to the
`__FILE__` paths llama.cpp leaves in the binary, or to --header/--llama-tree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"


def is_llama_tree(path: Path) -> bool:
    """A llama.cpp source tree: the one definition every stage uses (migrate/tree.py imports it)."""
    return (path / "include" / "llama.h").is_file() and (path / "ggml").is_dir()


@dataclass
class BuildManifest:
    library: str
    llama_tree: str
    llama_version: str | None = None  # the release provided (b7836), not only the one asked for
    llama_requested: str | None = None
    sources: list[str] = field(default_factory=list)
    consumer_root: str | None = None  # the consumer tree the sources came from (its llama-migrate.toml)
    header: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # what the consumer's build added (migrate/build_settings.py): flags, include_dirs, defines, sources,
    # link_libraries, and the environment's CFLAGS/CXXFLAGS
    build: dict[str, Any] = field(default_factory=dict)
    # llama.cpp's libraries from a registry package (migrate/prebuilt.py): package, release, libraries, and
    # `backends_dir`, whose CPU backends every process must load before a model (verify/backends.py)
    prebuilt: dict[str, Any] | None = None

    def write(self) -> Path:
        path = manifest_path(Path(self.library))
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)
        return path


def manifest_path(library: Path) -> Path:
    return library.with_name(library.name + MANIFEST_SUFFIX)


def read_manifest(library: Path) -> BuildManifest | None:
    path = manifest_path(library)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return BuildManifest(**data)
    except (ValueError, TypeError):
        return None
