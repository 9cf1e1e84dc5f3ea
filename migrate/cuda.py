"""Find what a CUDA build of llama.cpp needs on this machine: nvcc, cuBLAS, the driver library, the architecture.

A CUDA toolkit does not always ship cuBLAS (a compiler-only image, this project's CPU machine), while the pip
package `nvidia-cublas` (extra `cuda`) carries its headers and shared libraries. So cuBLAS is taken from the
toolkit when it has it (shared libraries, else its static archives) and from a pip `nvidia-cublas` for the same
CUDA major version otherwise; shared libraries are found at run time through the shim's rpath. The CUDA runtime
itself is always linked statically. Anything missing is a BuildError naming what to install, before CMake is ever run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from verify.errors import ToolError

# Where toolkits usually live when nvcc is neither on PATH nor named by the environment.
TOOLKIT_GUESSES = ("/usr/local/cuda", "/opt/cuda", "/usr/lib/cuda")
TOOLKIT_ENV = ("CUDAToolkit_ROOT", "CUDA_PATH", "CUDA_HOME", "CUDA_ROOT")
# Set this to a folder holding lib/libcublas.so.N and include/cublas_v2.h to override the search.
CUBLAS_ENV = "LLAMA_MIGRATE_CUBLAS"
# Driver library folders outside the loader cache (containers mount the driver here).
DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib")
INSTALL_HINT = "pip install 'llama-migrate[cuda]' (the nvidia-cublas wheel) or the toolkit's cuBLAS (libcublas-dev)"


class CudaError(ToolError):
    """A CUDA build was asked for and something it needs is missing; the message says what to install."""


@dataclass(frozen=True)
class Cublas:
    include_dir: Path
    cublas: Path
    cublas_lt: Path
    static: bool
    origin: str  # "toolkit" or "pip nvidia-cublas"

    @property
    def runtime_dirs(self) -> list[Path]:
        """Folders the shim's rpath must name so the loader finds shared cuBLAS without LD_LIBRARY_PATH."""
        return [] if self.static else sorted({self.cublas.parent, self.cublas_lt.parent})


@dataclass(frozen=True)
class CudaToolkit:
    root: Path
    nvcc: Path
    version: str  # "13.0"
    cublas: Cublas
    driver: Path | None  # libcuda to link; None: no driver here, so llama.cpp is built without VMM

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    def describe(self) -> dict[str, object]:
        return {
            "toolkit": str(self.root), "nvcc": self.version, "cublas": str(self.cublas.cublas),
            "cublas_static": self.cublas.static, "cublas_origin": self.cublas.origin,
            "driver": str(self.driver) if self.driver else None, "vmm": self.driver is not None,
        }  # fmt: skip


# --- nvcc and the toolkit root -------------------------------------------------------------------------------


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda_runtime.h").is_file()


def _root_from_nvcc(nvcc: Path) -> Path | None:
    """The toolkit behind an nvcc on PATH; wrapper scripts (/usr/local/bin/nvcc) are followed by their exec line."""
    real = nvcc.resolve()
    if _is_toolkit(real.parent.parent):
        return real.parent.parent
    try:
        text = real.read_text(errors="replace")[:4096]
    except OSError:
        return None
    match = re.search(r"(/\S+)/bin/nvcc\b", text)
    return Path(match.group(1)) if match and _is_toolkit(Path(match.group(1))) else None


def toolkit_candidates() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("CUDACXX"):
        found.append(Path(os.environ["CUDACXX"]).resolve().parent.parent)
    found.extend(Path(os.environ[name]) for name in TOOLKIT_ENV if os.environ.get(name))
    on_path = shutil.which("nvcc")
    if on_path:
        root = _root_from_nvcc(Path(on_path))
        if root:
            found.append(root)
    found.extend(Path(p) for p in TOOLKIT_GUESSES)
    return found


def find_toolkit_root() -> Path:
    for root in toolkit_candidates():
        if _is_toolkit(root):
            return root.resolve()
    raise CudaError(
        "CUDA requested but nvcc was not found (looked at $CUDACXX, $CUDAToolkit_ROOT/$CUDA_PATH, PATH and "
        f"{', '.join(TOOLKIT_GUESSES)}): install the CUDA toolkit's compiler (nvcc 12 or 13, e.g. cuda-nvcc-13-0) "
        "or point CUDAToolkit_ROOT at it"
    )


def nvcc_version(nvcc: Path) -> str:
    proc = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True)
    match = re.search(r"release (\d+\.\d+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise CudaError(f"{nvcc} --version failed or printed no release: {proc.stdout[-300:]}{proc.stderr[-300:]}")
    return match.group(1)


# --- cuBLAS ----------------------------------------------------------------------------------------------------


def _toolkit_lib_dirs(root: Path) -> list[Path]:
    return [d for d in (root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib") if d.is_dir()]


def cublas_in_toolkit(root: Path) -> Cublas | None:
    """The toolkit's own cuBLAS: shared when present, else its static archives.

    Shared first because every shim link (the gate links two, the benchmark five) would otherwise pull in
    libcublasLt_static.a, about half a gigabyte; the rpath finds the shared libraries at run time."""
    include = root / "include"
    if not (include / "cublas_v2.h").is_file():
        return None
    for lib in _toolkit_lib_dirs(root):
        blas, lt = lib / "libcublas.so", lib / "libcublasLt.so"
        if blas.exists() and lt.exists():
            return Cublas(include, blas, lt, static=False, origin="toolkit")
    for lib in _toolkit_lib_dirs(root):
        blas, lt = lib / "libcublas_static.a", lib / "libcublasLt_static.a"
        if blas.is_file() and lt.is_file():
            return Cublas(include, blas, lt, static=True, origin="toolkit")
    return None


def site_dirs() -> list[Path]:
    """Every folder this interpreter imports from, plus the site folders (a venv, --target installs on PYTHONPATH)."""
    dirs = [Path(p) for p in sys.path if p]
    with contextlib.suppress(AttributeError):  # some embedded interpreters have no getsitepackages
        dirs.extend(Path(p) for p in site.getsitepackages())
    seen: dict[Path, None] = {}
    for d in dirs:
        if d.is_dir():
            seen.setdefault(d.resolve(), None)
    return list(seen)


def _cublas_at(prefix: Path, major: str) -> Cublas | None:
    """A pip-style layout: PREFIX/lib/libcublas.so.MAJOR and PREFIX/include/cublas_v2.h (no unversioned .so)."""
    blas, lt = prefix / "lib" / f"libcublas.so.{major}", prefix / "lib" / f"libcublasLt.so.{major}"
    include = prefix / "include"
    if blas.is_file() and lt.is_file() and (include / "cublas_v2.h").is_file():
        return Cublas(include, blas, lt, static=False, origin="pip nvidia-cublas")
    return None


def cublas_from_pip(major: str) -> Cublas | None:
    """nvidia-cublas (CUDA 13: nvidia/cu13) or nvidia-cublas-cu12 (nvidia/cublas), for the toolkit's major."""
    if os.environ.get(CUBLAS_ENV):
        return _cublas_at(Path(os.environ[CUBLAS_ENV]), major)
    for base in site_dirs():
        for prefix in (base / "nvidia" / f"cu{major}", base / "nvidia" / "cublas"):
            found = _cublas_at(prefix, major)
            if found:
                return found
    return None


def find_cublas(root: Path, major: str) -> Cublas:
    found = cublas_in_toolkit(root) or cublas_from_pip(major)
    if found:
        return found
    raise CudaError(
        f"CUDA requested but cuBLAS was not found: the toolkit at {root} has no libcublas (lib64) with cublas_v2.h, "
        f"and no pip nvidia-cublas for CUDA {major} is importable from {sys.executable}: {INSTALL_HINT}, "
        f"or set ${CUBLAS_ENV} to a folder holding lib/libcublas.so.{major} and include/cublas_v2.h"
    )


# --- the driver library and the architecture ----------------------------------------------------------------


def _loader_cache_libcuda() -> list[Path]:
    try:
        proc = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
    except OSError:
        return []
    return [Path(m) for m in re.findall(r"libcuda\.so(?:\.1)? \(libc6,x86-64\) => (\S+)", proc.stdout)]


def find_driver_library(root: Path) -> Path | None:
    """libcuda to link llama.cpp's VMM pool against: the toolkit's stub, else the installed driver's library."""
    stubs = [d / "stubs" / "libcuda.so" for d in _toolkit_lib_dirs(root)]
    installed = [Path(d) / name for d in DRIVER_DIRS for name in ("libcuda.so", "libcuda.so.1")]
    for path in [*stubs, *_loader_cache_libcuda(), *installed]:
        if path.exists():
            return path
    return None


def detect_arch() -> str | None:
    """Compute capability of the first visible GPU as CMake wants it ("9.0" -> "90"); None without one."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    caps = [line.strip() for line in proc.stdout.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())]
    return caps[0].replace(".", "") if proc.returncode == 0 and caps else None


@functools.lru_cache(maxsize=1)
def find_toolkit() -> CudaToolkit:
    """Probe once per process: the answer only changes when something is installed."""
    root = find_toolkit_root()
    nvcc = root / "bin" / "nvcc"
    version = nvcc_version(nvcc)
    major = version.split(".")[0]
    return CudaToolkit(root=root, nvcc=nvcc, version=version, cublas=find_cublas(root, major),
                       driver=find_driver_library(root))  # fmt: skip


# --- what CMake is told --------------------------------------------------------------------------------------


def llama_cmake_args(toolkit: CudaToolkit, arch: str) -> list[str]:
    """Flags for llama.cpp's configure: the compiler, the architecture, and cuBLAS/libcuda where CMake won't look."""
    args = [
        "-DGGML_CUDA=ON",
        f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
        f"-DCMAKE_CUDA_COMPILER={toolkit.nvcc}",
        f"-DCUDAToolkit_ROOT={toolkit.root}",
    ]
    blas = toolkit.cublas
    if blas.origin != "toolkit":
        # FindCUDAToolkit keeps preset cache entries; the headers reach nvcc through the CUDA include path.
        suffix = "_static" if blas.static else ""
        args += [f"-DCUDA_cublas{suffix}_LIBRARY={blas.cublas}", f"-DCUDA_cublasLt{suffix}_LIBRARY={blas.cublas_lt}",
                 f"-DCMAKE_CUDA_STANDARD_INCLUDE_DIRECTORIES={blas.include_dir}"]  # fmt: skip
    if toolkit.driver is None:
        # No libcuda to link: ggml's VMM pool is the only user of the driver API, so leave it out rather than
        # produce a library that cannot be loaded.
        args.append("-DGGML_CUDA_NO_VMM=ON")
    elif toolkit.driver.parent.name != "stubs":
        args.append(f"-DCUDA_cuda_driver_LIBRARY={toolkit.driver}")
    return args


SHIM_CUDA = """\
# CUDA runtime linked statically; cuBLAS {blas_kind} ({origin}){rpath_note}.
set(CUDAToolkit_ROOT "{root}")
{cache}find_package(CUDAToolkit REQUIRED)
target_link_libraries(shim PRIVATE CUDA::cudart_static {blas_targets}{driver})
{rpath}"""


def shim_cmake(toolkit: CudaToolkit) -> str:
    """The CUDA part of the shim's CMakeLists: link what llama.cpp's CUDA archive needs, as available here."""
    blas = toolkit.cublas
    suffix = "_static" if blas.static else ""
    cache = ""
    if blas.origin != "toolkit":
        cache += f'set(CUDA_cublas{suffix}_LIBRARY "{blas.cublas}" CACHE FILEPATH "cuBLAS" FORCE)\n'
        cache += f'set(CUDA_cublasLt{suffix}_LIBRARY "{blas.cublas_lt}" CACHE FILEPATH "cuBLASLt" FORCE)\n'
    if toolkit.driver is not None and toolkit.driver.parent.name != "stubs":
        cache += f'set(CUDA_cuda_driver_LIBRARY "{toolkit.driver}" CACHE FILEPATH "libcuda" FORCE)\n'
    dirs = ";".join(str(d) for d in blas.runtime_dirs)
    return SHIM_CUDA.format(
        blas_kind="static" if blas.static else "shared",
        origin=blas.origin,
        rpath_note=", found at run time through the rpath" if dirs else "",
        root=toolkit.root,
        cache=cache,
        blas_targets=f"CUDA::cublas{suffix} CUDA::cublasLt{suffix}",
        driver=" CUDA::cuda_driver" if toolkit.driver is not None else "",
        rpath=f'set_target_properties(shim PROPERTIES BUILD_RPATH "{dirs}")\n' if dirs else "",
    )
