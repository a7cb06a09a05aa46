"""Sources, flags and the cached JIT build shared by every kernel package.

`setup.py` (ahead-of-time) and the runtime loader (`ext_common.loader`) both read
their sources and flags from here, so the three packages cannot drift apart.

Layout expected of a kernel package ``PKG`` at the repository root::

    PKG/src/*.h     shared ``HD`` (host+device) math, included by both backends
    PKG/src/*.cpp   the C++ CPU backend, one PYBIND11_MODULE
    PKG/src/*.cu    the CUDA backend, one PYBIND11_MODULE with the same functions

JIT builds go to a cache folder outside the checkout, keyed on the content of the
sources, headers and flags, so a fresh clone of unchanged sources reuses them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gridencoder", "shencoder", "raymarching")
KINDS = ("cpp", "cuda")
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0"
COMMON_INCLUDE = ROOT / "ext_common" / "include"


def cache_root() -> Path:
    """Folder holding JIT builds: ``$ERNERF_EXT_CACHE`` or ``~/.cache/ernerf/ext``."""
    env = os.environ.get("ERNERF_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ernerf" / "ext"


def sources(pkg: str, kind: str) -> list[Path]:
    """Compiled sources of one backend of one package (sorted, absolute)."""
    suffix = {"cpp": "*.cpp", "cuda": "*.cu"}[kind]
    return sorted((ROOT / pkg / "src").glob(suffix))


def headers(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg / "src").glob("*.h")) + sorted(COMMON_INCLUDE.glob("*.h"))


def include_dirs(pkg: str) -> list[str]:
    return [str(COMMON_INCLUDE), str(ROOT / pkg / "src")]


def cxx_flags() -> list[str]:
    # torch >= 2.10 headers require C++20.
    return ["-O3", "-std=c++20", "-fopenmp"]


def ld_flags(kind: str) -> list[str]:
    flags = ["-fopenmp"]
    if kind == "cuda":
        flags += [f"-L{d}" for d in cuda_library_dirs()] + ["-lcudart"]
    return flags


def cuda_archs() -> str:
    """Semicolon list such as ``8.0;9.0``: ``$TORCH_CUDA_ARCH_LIST`` or the default."""
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS


def nvcc_flags() -> list[str]:
    # No --use_fast_math: the CUDA backend is tested against the torch reference.
    return ["-O3", "-std=c++20", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_HALF2_OPERATORS__"]


def cuda_home() -> Path | None:
    """The CUDA toolkit folder (holding bin/nvcc and libcudart), or None.

    ``nvcc`` on the PATH may be a wrapper script in /usr/local/bin, so its own
    folder is only the last guess after $CUDA_HOME, $CUDA_PATH and /usr/local/cuda.
    """
    guesses = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    on_path = shutil.which("nvcc")
    if on_path:
        guesses.append(str(Path(on_path).resolve().parent.parent))
    for guess in guesses:
        if guess and (Path(guess) / "bin" / "nvcc").exists() and \
                any((Path(guess) / d).glob("libcudart.so*") for d in ("lib64", "lib")):
            return Path(guess)
    return None


def nvcc_path() -> str | None:
    home = cuda_home()
    return str(home / "bin" / "nvcc") if home else None


def cuda_library_dirs() -> list[str]:
    """Both ``lib`` and ``lib64``: some toolkits keep libcudart in ``lib`` only."""
    home = cuda_home()
    if home is None:
        return []
    return [str(home / d) for d in ("lib64", "lib") if (home / d).is_dir()]


def cuda_wanted() -> bool:
    """Whether CUDA extensions should be built at all (nvcc present, not disabled)."""
    return os.environ.get("ERNERF_NO_CUDA", "0") not in ("1", "true", "yes") and nvcc_path() is not None


def build_key(pkg: str, kind: str, archs: str | None = None) -> str:
    """Name of a JIT build: package, kind and a hash of everything that affects it."""
    import torch

    h = hashlib.sha256()
    for f in sources(pkg, kind) + headers(pkg):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(" ".join(cxx_flags() + ld_flags(kind)).encode())
    if kind == "cuda":
        h.update(" ".join(nvcc_flags()).encode())
        h.update((archs or cuda_archs()).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.split()[0].encode())
    return f"{pkg}_{kind}_{h.hexdigest()[:12]}"


def import_built(name: str, path: Path):
    """Import a compiled extension module from its file."""
    import importlib.util

    import torch  # noqa: F401  (the extension links against libtorch)

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_built(pkg: str, kind: str, archs: str | None = None) -> bool:
    """Whether the JIT cache already holds this backend for the current sources."""
    name = build_key(pkg, kind, archs)
    return (cache_root() / name / f"{name}.so").exists()


def jit_build(pkg: str, kind: str, archs: str | None = None, verbose: bool = False):
    """Compile (or reuse from the cache) and import one backend module.

    Args:
        pkg: one of ``PACKAGES``.
        kind: ``"cpp"`` or ``"cuda"``.
        archs: CUDA arch list like ``"8.0;9.0"`` (CUDA only; default ``cuda_archs()``).
        verbose: show compiler output.

    Returns:
        The imported extension module.
    """
    srcs = sources(pkg, kind)
    if not srcs:
        raise FileNotFoundError(f"{pkg}/src has no {kind} sources")
    name = build_key(pkg, kind, archs)
    build_dir = cache_root() / name
    built = build_dir / f"{name}.so"
    if built.exists():
        # The name hashes sources and flags, so an existing library is current.
        return import_built(name, built)
    build_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils import cpp_extension

    kwargs = dict(
        name=name,
        sources=[str(s) for s in srcs],
        extra_cflags=cxx_flags(),
        extra_ldflags=ld_flags(kind),
        extra_include_paths=include_dirs(pkg),
        build_directory=str(build_dir),
        verbose=verbose,
    )
    if kind != "cuda":
        return cpp_extension.load(with_cuda=False, **kwargs)
    home = cuda_home()
    if home is None:
        raise RuntimeError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")
    saved = {k: os.environ.get(k) for k in ("TORCH_CUDA_ARCH_LIST", "CUDA_HOME")}
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs or cuda_archs()
    os.environ["CUDA_HOME"] = str(home)
    cpp_extension.CUDA_HOME = str(home)
    try:
        return cpp_extension.load(with_cuda=True, extra_cuda_cflags=nvcc_flags(), **kwargs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
