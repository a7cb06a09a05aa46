"""Sources, flags and the cached JIT build shared by every kernel package.

`setup.py` (ahead-of-time) and the runtime loader (`ext_common.loader`) both read
their sources and flags from here, so the three packages cannot drift apart.

Layout expected of a kernel package ``PKG`` at the repository root::

    PKG/src/*.h     shared ``HD`` (host+device) math, included by both backends
    PKG/src/*.cpp   the C++ CPU backend, one PYBIND11_MODULE
    PKG/src/*.cu    the CUDA backend, one PYBIND11_MODULE with the same functions

Backend kinds: ``cpp`` (the .cpp files), ``cuda`` (the .cu files through nvcc) and
``cuda_emu`` (the same .cu files through the host compiler with ``-DERNERF_CUDA_EMU``,
which swaps the CUDA runtime for ``include/cuda_emu.h`` and runs every kernel
serially on the CPU). ``cuda_emu`` may also be built with AddressSanitizer.

JIT builds go to a cache folder outside the checkout, keyed on the content of the
sources, headers and flags, so a fresh clone of unchanged sources reuses them.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gridencoder", "shencoder", "raymarching")
KINDS = ("cpp", "cuda", "cuda_emu")
# Ahead-of-time default: SASS for Turing..Hopper, and Hopper PTX that newer GPUs
# (Blackwell) JIT-compile at load. JIT builds target the GPUs present instead.
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"
COMMON_INCLUDE = ROOT / "ext_common" / "include"
ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]


class BuildError(RuntimeError):
    """A backend failed to compile; the message holds the compiler's error lines."""


def cache_root() -> Path:
    """Folder holding JIT builds: ``$ERNERF_EXT_CACHE`` or ``~/.cache/ernerf/ext``."""
    env = os.environ.get("ERNERF_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ernerf" / "ext"


def sources(pkg: str, kind: str) -> list[Path]:
    """Compiled sources of one backend of one package (sorted, absolute)."""
    suffix = {"cpp": "*.cpp", "cuda": "*.cu", "cuda_emu": "*.cu"}[kind]
    return sorted((ROOT / pkg / "src").glob(suffix))


def headers(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg / "src").glob("*.h")) + sorted(COMMON_INCLUDE.glob("*.h"))


def include_dirs(pkg: str) -> list[str]:
    return [str(COMMON_INCLUDE), str(ROOT / pkg / "src")]


def cxx_flags() -> list[str]:
    # torch >= 2.10 headers require C++20. No contraction of a*b+c into an FMA, so
    # every backend rounds each product (nvcc_flags: --fmad=false) and they pick
    # the same cells.
    return ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=off"]


def compile_flags(kind: str, asan: bool = False) -> list[str]:
    """Host-compiler flags of one backend kind (``asan`` for ``cuda_emu`` only)."""
    flags = cxx_flags()
    if kind == "cuda_emu":
        flags += ["-DERNERF_CUDA_EMU"] + (ASAN_FLAGS if asan else [])
    elif asan:
        raise ValueError("only the cuda_emu backend has an AddressSanitizer build")
    return flags


def ld_flags(kind: str) -> list[str]:
    # An ASan build is not linked against libasan: the process that imports it
    # preloads the runtime (LD_PRELOAD), as ASan requires for a dlopen'ed library.
    flags = ["-fopenmp"]
    if kind == "cuda":
        flags += [f"-L{d}" for d in cuda_library_dirs()] + ["-lcudart"]
    return flags


def cuda_archs() -> str:
    """Semicolon list such as ``8.6`` or ``8.0;9.0+PTX`` for a JIT CUDA build.

    ``$TORCH_CUDA_ARCH_LIST`` if set, else the compute capabilities of the GPUs
    present (what torch itself would pick), else ``DEFAULT_CUDA_ARCHS``.
    """
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return env
    import torch

    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return DEFAULT_CUDA_ARCHS


def nvcc_flags() -> list[str]:
    # No --use_fast_math: the CUDA backend is tested against the torch reference.
    # --fmad=false: nvcc would otherwise fuse o + t*d, cell/face distances and the
    # compositing sums into FMAs, which round once where the CPU rounds twice.
    return ["-O3", "-std=c++20", "--fmad=false", "-Xcompiler=-ffp-contract=off", "-U__CUDA_NO_HALF_OPERATORS__",
            "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__"]


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


def cuda_disabled() -> bool:
    return os.environ.get("ERNERF_NO_CUDA", "0") in ("1", "true", "yes")


def cuda_wanted() -> bool:
    """Whether CUDA extensions should be built at all (nvcc present, not disabled)."""
    return not cuda_disabled() and nvcc_path() is not None


def source_hash(pkg: str, kind: str, asan: bool = False) -> str:
    """12 hex digits over the sources, headers, flags, torch and Python versions of a backend.

    Compiled into every module as its ``source_hash`` attribute, so the loader can
    tell an ahead-of-time build of older sources from a current one.
    """
    return files_hash(sources(pkg, kind) + headers(pkg), kind, asan)


def files_hash(files: list[Path], kind: str, asan: bool = False) -> str:
    """12 hex digits over ``files`` (names and contents) and everything else a ``kind`` build depends on."""
    import torch

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(" ".join(compile_flags(kind, asan) + ld_flags(kind)).encode())
    if kind == "cuda":
        h.update(" ".join(nvcc_flags()).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.split()[0].encode())
    return h.hexdigest()[:12]


def hash_define(digest: str) -> str:
    """The flag that compiles ``digest`` into a module (``ext_checks.h``: ERNERF_SOURCE_HASH)."""
    return f"-DERNERF_SOURCE_HASH={digest}"


def build_key(pkg: str, kind: str, archs: str | None = None, asan: bool = False) -> str:
    """Name of a JIT build: package, kind and a hash of everything that affects it."""
    digest = source_hash(pkg, kind, asan)
    if kind == "cuda":
        digest = hashlib.sha256(f"{digest} {archs or cuda_archs()}".encode()).hexdigest()[:12]
    return f"{pkg}_{kind}{'_asan' if asan else ''}_{digest}"


def import_built(name: str, path: Path):
    """Import a compiled extension module from its file."""
    import importlib.util

    import torch  # noqa: F401  (the extension links against libtorch)

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_built(pkg: str, kind: str, archs: str | None = None, asan: bool = False) -> bool:
    """Whether the JIT cache already holds this backend for the current sources."""
    name = build_key(pkg, kind, archs, asan)
    return (cache_root() / name / f"{name}.so").exists()


@contextlib.contextmanager
def _environ(**changes: str | None):
    """Set (or, for None, remove) environment variables for the duration of a build."""
    saved = {k: os.environ.get(k) for k in changes}
    for k, v in changes.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compiler_errors(output: str, limit: int = 8) -> list[str]:
    """The lines of compiler/linker output that state an error (at most ``limit``)."""
    pattern = re.compile(r"error:|undefined reference|cannot find -l")
    return [line.strip() for line in output.splitlines() if pattern.search(line)][:limit]


def load_module(name: str, srcs: list[Path], kind: str, include: list[str], digest: str, asan: bool = False,
                archs: str | None = None, verbose: bool = False):
    """Import the cached build ``name``, or first compile ``srcs`` into it.

    Args:
        name: module and cache folder name (a ``build_key``).
        srcs: source files; for ``cuda_emu`` the .cu files, compiled as C++.
        kind: ``"cpp"``, ``"cuda"`` or ``"cuda_emu"``.
        include: extra include folders.
        digest: the module's ``source_hash`` attribute (``source_hash()`` of what it is built from).
        asan: AddressSanitizer build (``cuda_emu`` only); importing it needs the ASan
            runtime preloaded, so this raises ImportError in a process without it.
        archs: CUDA arch list (``cuda`` only; default ``cuda_archs()``).
        verbose: show compiler output.

    Raises:
        BuildError: compilation failed; the message quotes the compiler's error lines.
    """
    build_dir = cache_root() / name
    built = build_dir / f"{name}.so"
    if built.exists():
        # The name hashes sources and flags, so an existing library is current.
        return import_built(name, built)
    build_dir.mkdir(parents=True, exist_ok=True)
    cflags = compile_flags(kind, asan) + [hash_define(digest)]
    if kind == "cuda_emu":
        # torch would hand a .cu file to nvcc: compile a .cpp that includes it instead.
        wrappers = []
        for src in srcs:
            wrapper = build_dir / f"{src.stem}_emu.cpp"
            wrapper.write_text(f'// Generated by ext_common/build.py: {src.name} compiled as C++.\n'
                               f'#include "{src}"\n')
            wrappers.append(wrapper)
        srcs = wrappers
    from torch.utils import cpp_extension

    kwargs = dict(name=name, sources=[str(s) for s in srcs], extra_cflags=cflags, extra_ldflags=ld_flags(kind),
                  extra_include_paths=include, build_directory=str(build_dir), verbose=verbose)
    # The compilers must not inherit a sanitizer runtime preloaded into this process.
    env: dict[str, str | None] = {"LD_PRELOAD": None}
    if kind == "cuda":
        home = cuda_home()
        if home is None:
            raise BuildError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")
        env.update(TORCH_CUDA_ARCH_LIST=archs or cuda_archs(), CUDA_HOME=str(home))
        # cpp_extension read CUDA_HOME when it was first imported; a wrapper nvcc fooled it.
        cpp_extension.CUDA_HOME = str(home)
        kwargs.update(with_cuda=True, extra_cuda_cflags=nvcc_flags() + [hash_define(digest)])
    else:
        kwargs.update(with_cuda=False)
    with _environ(**env):
        try:
            return cpp_extension.load(**kwargs)
        except RuntimeError as e:
            if not str(e).startswith("Error building extension"):
                raise
            log = build_dir / "build.log"
            log.write_text(str(e))
            lines = compiler_errors(str(e)) or [str(e).splitlines()[0]]
            raise BuildError(f"compiling {name} failed:\n    " + "\n    ".join(lines) +
                             f"\n(full compiler output: {log})") from None


def jit_build(pkg: str, kind: str, archs: str | None = None, asan: bool = False, verbose: bool = False):
    """Compile (or reuse from the cache) and import one backend module.

    Args:
        pkg: one of ``PACKAGES``.
        kind: one of ``KINDS``.
        archs: CUDA arch list like ``"8.0;9.0"`` (CUDA only; default ``cuda_archs()``).
        asan: the AddressSanitizer variant of ``cuda_emu`` (see ``load_module``).
        verbose: show compiler output.

    Returns:
        The imported extension module.
    """
    srcs = sources(pkg, kind)
    if not srcs:
        raise FileNotFoundError(f"{pkg}/src has no {kind} sources")
    return load_module(build_key(pkg, kind, archs, asan), srcs, kind, include_dirs(pkg), source_hash(pkg, kind, asan),
                       asan=asan, archs=archs, verbose=verbose)
