"""The CUDA build path without building: finding nvcc and cuBLAS (toolkit or pip nvidia-cublas), the errors when
either is missing, what CMake is told, the shim's CUDA linkage, and the cache key. Fast: fake toolkits only."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from migrate import cuda
from migrate.build import BASE_CMAKE_ARGS, BuildError, BuildOptions, build
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch):
    """The probe is cached per process; every test sees its own fake machine."""
    cuda.find_toolkit.cache_clear()
    for name in (*cuda.TOOLKIT_ENV, "CUDACXX", cuda.CUBLAS_ENV):
        monkeypatch.delenv(name, raising=False)
    yield
    cuda.find_toolkit.cache_clear()


def fake_toolkit(root: Path, version: str = "13.0", static_blas: bool = False, shared_blas: bool = False) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "lib64").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {version}, V{version}.88'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    (root / "include" / "cuda_runtime.h").write_text("")
    if static_blas or shared_blas:
        (root / "include" / "cublas_v2.h").write_text("")
    if static_blas:
        (root / "lib64" / "libcublas_static.a").write_text("")
        (root / "lib64" / "libcublasLt_static.a").write_text("")
    if shared_blas:
        (root / "lib64" / "libcublas.so").write_text("")
        (root / "lib64" / "libcublasLt.so").write_text("")
    return root


def fake_pip_cublas(site: Path, major: str = "13") -> Path:
    prefix = site / "nvidia" / f"cu{major}"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "include").mkdir()
    (prefix / "lib" / f"libcublas.so.{major}").write_text("")
    (prefix / "lib" / f"libcublasLt.so.{major}").write_text("")
    (prefix / "include" / "cublas_v2.h").write_text("")
    return prefix


def machine(monkeypatch: pytest.MonkeyPatch, toolkit: Path | None, site: Path | None, driver: Path | None = None):
    monkeypatch.setattr(cuda, "toolkit_candidates", lambda: [toolkit] if toolkit else [])
    monkeypatch.setattr(cuda, "site_dirs", lambda: [site] if site else [])
    monkeypatch.setattr(cuda, "find_driver_library", lambda root: driver)


def test_cpu_options_and_cache_key_are_unchanged() -> None:
    options = BuildOptions()
    assert options.toolkit() is None
    assert [a for a in options.llama_cmake_args() if a != "-DGGML_CCACHE=ON"] == list(BASE_CMAKE_ARGS)
    assert options.key() == "cpu-71b04695af"  # the CPU builds already in every cache stay hits


def test_missing_nvcc_is_a_build_error_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, None, None)
    with pytest.raises(BuildError, match=r"nvcc was not found.*install the CUDA toolkit"):
        BuildOptions(backend="cuda", cuda_arch="90").llama_cmake_args()


def test_missing_cublas_is_a_build_error_naming_the_pip_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda"), tmp_path / "site")
    with pytest.raises(BuildError, match=r"cuBLAS was not found.*llama-migrate\[cuda\].*nvidia-cublas"):
        BuildOptions(backend="cuda", cuda_arch="90").key()


def test_cublas_for_another_major_version_does_not_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    fake_pip_cublas(site, "12")
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda", "13.0"), site)
    with pytest.raises(BuildError, match="for CUDA 13"):
        BuildOptions(backend="cuda", cuda_arch="90").toolkit()


def test_pip_cublas_is_linked_shared_with_an_rpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    prefix = fake_pip_cublas(site)
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda"), site, driver=Path("/usr/lib/x86_64-linux-gnu/libcuda.so.1"))
    options = BuildOptions(backend="cuda", cuda_arch="90")
    toolkit = options.toolkit()
    assert toolkit is not None and toolkit.version == "13.0"
    assert toolkit.cublas.origin == "pip nvidia-cublas" and not toolkit.cublas.static
    args = options.llama_cmake_args()
    assert "-DGGML_CUDA=ON" in args and "-DCMAKE_CUDA_ARCHITECTURES=90" in args
    assert f"-DCUDA_cublas_LIBRARY={prefix / 'lib' / 'libcublas.so.13'}" in args
    assert f"-DCMAKE_CUDA_STANDARD_INCLUDE_DIRECTORIES={prefix / 'include'}" in args
    assert "-DCUDA_cuda_driver_LIBRARY=/usr/lib/x86_64-linux-gnu/libcuda.so.1" in args
    assert "-DGGML_CUDA_NO_VMM=ON" not in args
    text = cuda.shim_cmake(toolkit)
    assert "CUDA::cudart_static CUDA::cublas CUDA::cublasLt CUDA::cuda_driver" in text
    assert f'BUILD_RPATH "{prefix / "lib"}"' in text
    assert f'set(CUDA_cublas_LIBRARY "{prefix / "lib" / "libcublas.so.13"}" CACHE FILEPATH' in text


def test_toolkit_cublas_shared_first_static_when_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    fake_pip_cublas(site)
    both = fake_toolkit(tmp_path / "both", static_blas=True, shared_blas=True)
    (both / "lib64" / "stubs").mkdir()
    stub = both / "lib64" / "stubs" / "libcuda.so"
    machine(monkeypatch, both, site, driver=stub)
    options = BuildOptions(backend="cuda", cuda_arch="90")
    toolkit = options.toolkit()
    assert toolkit is not None and toolkit.cublas.origin == "toolkit" and not toolkit.cublas.static
    args = options.llama_cmake_args()
    assert not [a for a in args if a.startswith(("-DCUDA_cublas", "-DCUDA_cuda_driver", "-DCMAKE_CUDA_STANDARD"))]
    text = cuda.shim_cmake(toolkit)
    assert "CUDA::cublas CUDA::cublasLt CUDA::cuda_driver" in text and f'BUILD_RPATH "{both / "lib64"}"' in text

    cuda.find_toolkit.cache_clear()
    static = fake_toolkit(tmp_path / "static", static_blas=True)
    machine(monkeypatch, static, site, driver=stub)
    toolkit = BuildOptions(backend="cuda", cuda_arch="90").toolkit()
    assert toolkit is not None and toolkit.cublas.static and toolkit.cublas.origin == "toolkit"
    text = cuda.shim_cmake(toolkit)
    assert "CUDA::cublas_static CUDA::cublasLt_static" in text and "BUILD_RPATH" not in text


def test_no_driver_library_builds_without_vmm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda", static_blas=True), None, driver=None)
    options = BuildOptions(backend="cuda", cuda_arch="90")
    assert "-DGGML_CUDA_NO_VMM=ON" in options.llama_cmake_args()
    toolkit = options.toolkit()
    assert toolkit is not None and "cuda_driver" not in cuda.shim_cmake(toolkit)
    assert toolkit.describe()["vmm"] is False


def test_cache_key_names_backend_and_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda", static_blas=True), None)
    sm90 = BuildOptions(backend="cuda", cuda_arch="90").key()
    assert sm90.startswith("cuda-sm90-")
    assert BuildOptions(backend="cuda", cuda_arch="80").key().startswith("cuda-sm80-")
    assert BuildOptions(backend="cuda", cuda_arch="90;100").key().startswith("cuda-sm90_100-")
    assert sm90 != BuildOptions().key()


def test_no_arch_and_no_gpu_is_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda", static_blas=True), None)
    monkeypatch.setattr(cuda, "detect_arch", lambda: None)
    with pytest.raises(BuildError, match=r"--cuda-arch not given.*--cuda-arch 90"):
        BuildOptions(backend="cuda").key()
    monkeypatch.setattr(cuda, "detect_arch", lambda: "90")
    assert BuildOptions(backend="cuda").key().startswith("cuda-sm90-")


def test_nvcc_wrapper_script_leads_to_its_toolkit(tmp_path: Path) -> None:
    root = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {root}/bin/nvcc "$@"\n')
    assert cuda._root_from_nvcc(wrapper) == root


def test_build_refuses_before_cmake_when_cublas_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda"), None)
    tree = SourceTree(tmp_path / "llama.cpp", "b5421", "b5415", "0" * 40, f"path:{tmp_path}")
    with pytest.raises(BuildError, match="cuBLAS was not found"):
        build(LOCALLLM, tree, BuildOptions(backend="cuda", cuda_arch="90"), cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "build").exists() or not list((tmp_path / "cache" / "build").iterdir())


def test_cli_build_reports_missing_cublas_as_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from migrate.cli import main
    from migrate.cli import sources as sources_command

    machine(monkeypatch, fake_toolkit(tmp_path / "cuda"), None)
    tree = SourceTree(tmp_path / "llama.cpp", "b5421", "b5415", "0" * 40, f"path:{tmp_path}")
    monkeypatch.setattr(sources_command, "resolve_tree", lambda spec, source, cache: tree)
    out = tmp_path / "out.json"
    code = main(["--cache", str(tmp_path / "cache"), "build", str(LOCALLLM), "--llama", "b5421", "--gpu", "cuda",
                 "--cuda-arch", "90", "--json", str(out)])  # fmt: skip
    assert code == 2
    assert "cuBLAS was not found" in capsys.readouterr().err and not out.exists()


def test_describe_is_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    fake_pip_cublas(site)
    machine(monkeypatch, fake_toolkit(tmp_path / "cuda"), site)
    toolkit = BuildOptions(backend="cuda", cuda_arch="90").toolkit()
    assert toolkit is not None
    data = json.loads(json.dumps(toolkit.describe()))
    assert data["nvcc"] == "13.0" and data["cublas_origin"] == "pip nvidia-cublas" and data["vmm"] is False
