"""llama.cpp's own CMake targets, for building a consumer's shim the way the consumer's CMake would.

A consumer's build links its shim to llama.cpp's `llama` and `common` targets, and CMake propagates their usage
requirements: include directories (common's PUBLIC `../vendor` included), compile definitions, compile features and
link dependencies (Threads, OpenMP, OpenSSL for cpp-httplib, ...). To get exactly those without rebuilding the
cached llama.cpp libraries, the cached build folder is configured with a small CMake file that llama.cpp's own
configure includes (CMAKE_PROJECT_INCLUDE) and that, once every target of llama.cpp exists (a deferred call at the
end of the top-level directory), writes `export(TARGETS ...)` of the requested targets and every library target they
link: an import file with IMPORTED targets that carry llama.cpp's INTERFACE properties and point at the cached
archives. Why this and not the alternatives:
- CMake's file API describes the compile lines of llama.cpp's own targets (PRIVATE include directories included),
  not what propagates to a consumer, and no link interface of a static library;
- an installed package config (`llama-config.cmake`) has no `common` target and needs an install step;
- `add_subdirectory` of the tree in the shim's project would build llama.cpp again for every shim folder.
Configuring an existing cache entry again only adds this file: the compile commands stay the same, so only what the
configure generates is compiled again (b7836's common/license.cpp, one object; none at b5415; build_llama reports the
count), and the cache key does not change.
"""

from __future__ import annotations

import re
from pathlib import Path

EXPORT_FILE = "llama-migrate-targets.cmake"  # written by llama.cpp's configure into its build folder
EXPORT_SCRIPT_FILE = "llama-migrate-export.cmake"
NAMESPACE = "llama_migrate::"
# CMake packages the shim's project must find before the import file names their targets. CUDA's is found by the
# CUDA part of the shim's project (migrate/cuda.py), which first points CMake at the cuBLAS it chose.
PACKAGES = {"Threads": "Threads", "OpenMP": "OpenMP", "OpenSSL": "OpenSSL", "CUDA": "CUDAToolkit"}
FOUND_ELSEWHERE = {"CUDAToolkit"}

EXPORT_SCRIPT = """\
# llama-migrate (migrate/llama_targets.py): included by every project() of llama.cpp's configure. At the end of the
# top-level directory, when every target exists, exports LLAMA_MIGRATE_EXPORT_TARGETS and every library target they
# link (their usage requirements as IMPORTED targets in """ + NAMESPACE + """, pointing at this build's archives).
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR AND NOT LLAMA_MIGRATE_EXPORT_DEFERRED)
  set(LLAMA_MIGRATE_EXPORT_DEFERRED ON)
  function(llama_migrate_export)
    set(pending ${LLAMA_MIGRATE_EXPORT_TARGETS})
    set(closure "")
    while(pending)
      list(POP_FRONT pending name)
      if(NOT TARGET "${name}")
        continue()
      endif()
      get_target_property(aliased "${name}" ALIASED_TARGET)
      if(aliased)
        set(name "${aliased}")
      endif()
      get_target_property(imported "${name}" IMPORTED)
      if(imported OR name IN_LIST closure)
        continue()
      endif()
      list(APPEND closure "${name}")
      get_target_property(interface "${name}" INTERFACE_LINK_LIBRARIES)
      get_target_property(own "${name}" LINK_LIBRARIES)
      foreach(item IN LISTS interface own)
        string(REGEX REPLACE "^\\\\$<LINK_ONLY:(.*)>$" "\\\\1" item "${item}")
        if(item AND NOT item MATCHES "^\\\\$<" AND TARGET "${item}")
          list(APPEND pending "${item}")
        endif()
      endforeach()
    endwhile()
    export(TARGETS ${closure} NAMESPACE """ + NAMESPACE + """ FILE "${CMAKE_BINARY_DIR}/""" + EXPORT_FILE + """")
  endfunction()
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL llama_migrate_export)
endif()
"""


def export_args(build_dir: Path, targets: tuple[str, ...]) -> list[str]:
    """CMake options that make llama.cpp's configure in `build_dir` write EXPORT_FILE for `targets` (the script is
    written beside the build's cache; CMake keeps both options in it, so a later automatic re-run exports again)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    script = build_dir / EXPORT_SCRIPT_FILE
    if not script.is_file() or script.read_text() != EXPORT_SCRIPT:
        script.write_text(EXPORT_SCRIPT)
    return [f"-DCMAKE_PROJECT_INCLUDE={script}", f"-DLLAMA_MIGRATE_EXPORT_TARGETS={';'.join(targets)}"]


def needs_export(build_dir: Path, targets: tuple[str, ...]) -> bool:
    """True when the cached build has no import file of `targets` yet (made before this, or its script changed)."""
    exported = build_dir / EXPORT_FILE
    script = build_dir / EXPORT_SCRIPT_FILE
    if not exported.is_file() or not script.is_file() or script.read_text() != EXPORT_SCRIPT:
        return True
    text = exported.read_text(encoding="utf-8", errors="replace")
    return not all(f"add_library({NAMESPACE}{t} " in text for t in targets)


def imported_targets(export_file: Path) -> list[str]:
    """The targets the import file defines (`llama_migrate::llama`, ...), in its order."""
    text = export_file.read_text(encoding="utf-8", errors="replace")
    return re.findall(r"^add_library\((" + re.escape(NAMESPACE) + r"\S+) ", text, re.MULTILINE)


def required_packages(export_file: Path) -> list[str]:
    """The CMake packages whose targets the import file names (Threads::Threads -> Threads), to find first."""
    text = export_file.read_text(encoding="utf-8", errors="replace")
    names = {m for m in re.findall(r"([A-Za-z][A-Za-z0-9_]*)::", text) if f"{m}::" != NAMESPACE}
    return sorted({PACKAGES.get(name, name) for name in names} - FOUND_ELSEWHERE)
