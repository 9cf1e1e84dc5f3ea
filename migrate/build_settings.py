"""What a consumer's own build adds to its shim's compile and link: the `[build]` table of its config, the matching
`migrate build` options, and the environment's CFLAGS/CXXFLAGS. Kept apart from migrate/build.py so that reading a
config does not import the build machinery."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from verify.errors import ToolError

# Each key of `[build]` with what it must be (said when refused).
BUILD_KEYS = {
    "flags": 'a list of compiler flags (strings), e.g. flags = ["-include", "filesystem"]',
    "include_dirs": 'a list of directories (strings, relative to the tree), searched before llama.cpp\'s',
    "defines": 'a list of NAME or NAME=VALUE strings, e.g. defines = ["USE_FOO", "LEVEL=2"]',
    "sources": 'a list of files (strings, relative to the tree) compiled into the shim besides those found',
    "link_libraries": 'a list of libraries (names like "z", -l flags or paths, strings) linked into the shim',
}
ENVIRONMENT_FLAGS = ("CFLAGS", "CXXFLAGS")  # read by CMake at configure; recorded, and a change reconfigures


class BuildSettingsError(ToolError):
    """A `[build]` value or a build option is not what its key takes: the message names the key and the value."""


@dataclass(frozen=True)
class BuildSettings:
    """What the shim's build adds, in the order given: paths already resolved against the consumer's tree."""

    flags: tuple[str, ...] = ()
    include_dirs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    link_libraries: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)  # CFLAGS / CXXFLAGS as set when the build ran

    def merged(self, other: BuildSettings) -> BuildSettings:
        """`other` (the command line) after these (the config). Flags are kept as given (`-include a -include b`
        repeats its flag); a directory, definition, source or library given twice is kept once, first place."""
        def joined(name: str) -> tuple[str, ...]:
            items = [*getattr(self, name), *getattr(other, name)]
            return tuple(items) if name == "flags" else tuple(dict.fromkeys(items))

        return replace(self, **{f.name: joined(f.name) for f in fields(self) if f.name != "environment"})

    def rebased(self, old_root: Path, new_root: Path) -> BuildSettings:
        """Paths inside `old_root` moved to `new_root` (the migrated copy of the consumer); others kept."""
        old, new = old_root.resolve(), new_root.resolve()

        def move(item: str) -> str:
            path = Path(item)
            return str(new / path.relative_to(old)) if path.is_absolute() and path.is_relative_to(old) else item

        return replace(self, include_dirs=tuple(map(move, self.include_dirs)), sources=tuple(map(move, self.sources)),
                       link_libraries=tuple(map(move, self.link_libraries)))  # fmt: skip

    def with_environment(self) -> BuildSettings:
        return replace(self, environment={k: os.environ[k] for k in ENVIRONMENT_FLAGS if os.environ.get(k)})

    def to_json(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else dict(v) for f in fields(self)}

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))


def _strings(key: str, value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise BuildSettingsError(f"{source}: build.{key} must be {BUILD_KEYS[key]}; got {value!r}")
    return tuple(item.strip() for item in value)


def _define(item: str, source: str) -> str:
    name = item.partition("=")[0]
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise BuildSettingsError(f"{source}: build.defines item {item!r} is not NAME or NAME=VALUE (a C identifier)")
    return item


def settings_from_table(table: Any, root: Path, source: str) -> BuildSettings:
    """`[build]` read from a config: every key typed, an unknown key named; relative paths resolved against `root`."""
    if not isinstance(table, dict):
        raise BuildSettingsError(f"{source}: build must be a table ([build] in llama-migrate.toml); got {table!r}")
    unknown = sorted(set(table) - set(BUILD_KEYS))
    if unknown:
        raise BuildSettingsError(f"{source}: unknown key(s) build.{', build.'.join(unknown)}; known: "
                                 f"{', '.join(sorted(BUILD_KEYS))}")  # fmt: skip
    values = {key: _strings(key, table[key], source) for key in BUILD_KEYS if key in table}
    return _resolved(values, root, source)


@dataclass(frozen=True)
class BuildOptionsGiven:
    """The `--build-*` options as given on a command line (each repeatable), before they are split and resolved."""

    flags: tuple[str, ...] = ()  # --build-flag texts, each split as a shell would
    include_dirs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    link_libraries: tuple[str, ...] = ()


def settings_from_options(given: BuildOptionsGiven, root: Path) -> BuildSettings:
    """The `migrate build` options (relative paths resolved against the current directory, as a shell user means
    them); `--build-flags "-include filesystem"` is split as a shell would."""
    values = {
        "flags": tuple(part for text in given.flags for part in shlex.split(text)),
        "include_dirs": tuple(str(Path(p).resolve()) for p in given.include_dirs),
        "defines": given.defines,
        "sources": tuple(str(Path(p).resolve()) for p in given.sources),
        "link_libraries": given.link_libraries,
    }
    return _resolved(values, root, "command line")


def _resolved(values: dict[str, tuple[str, ...]], root: Path, source: str) -> BuildSettings:
    def path(item: str) -> str:
        return str((root / item).resolve()) if not Path(item).is_absolute() else item

    def library(item: str) -> str:  # a path (has a slash) is resolved; a name or a -l/-Wl flag is kept
        return path(item) if "/" in item and not item.startswith("-") else item

    return BuildSettings(
        flags=values.get("flags", ()),
        include_dirs=tuple(path(p) for p in values.get("include_dirs", ())),
        defines=tuple(_define(d, source) for d in values.get("defines", ())),
        sources=tuple(path(p) for p in values.get("sources", ())),
        link_libraries=tuple(library(x) for x in values.get("link_libraries", ())),
    )
