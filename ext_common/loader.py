"""Loading and choosing a kernel backend: CUDA, C++ CPU, emulated CUDA, or the torch reference.

Every kernel package holds one ``Backends`` object. For a tensor on a CUDA device
it picks ``"cuda"``, for a CPU tensor ``"cpp"``, and falls back to ``"torch"`` (the
package's ``_torch_impl``) when the compiled module is unavailable, with one warning
naming the cause and the fix. A module is found in three tiers: an ahead-of-time
build (``PKG._cpp`` / ``PKG._cuda`` from ``pip install -e .``) whose compiled-in
source hash matches the current sources, else the JIT cache, else a JIT build.

``"cuda_emu"`` (the CUDA sources compiled as C++, kernels run serially on the CPU;
see ``build.py``) is never picked automatically: ``ERNERF_BACKEND=cuda_emu`` selects
it for CPU tensors, and ``ERNERF_CUDA_EMU_ASAN=1`` loads its AddressSanitizer build
(the process must preload the ASan runtime).

Overrides, read on every call so tests can switch them:
    ERNERF_BACKEND=auto|torch|cpp|cuda|cuda_emu   all packages
    ERNERF_BACKEND_<PKG>=...                      one package (e.g. ERNERF_BACKEND_RAYMARCHING)
    ERNERF_JIT=0                                  never compile at run time (cached builds still load)
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import torch

from . import build

CHOICES = ("auto", "torch", "cpp", "cuda", "cuda_emu")
DEVICE_TYPE = {"cpp": "cpu", "cuda": "cuda", "cuda_emu": "cpu"}
PREBUILT = ("cpp", "cuda")  # what setup.py builds
_WARNED: set[str] = set()  # causes already warned about, shared by all packages


class Unavailable(Exception):
    """A backend cannot be loaded; the message says why and how to fix it."""


def _warn_once(message: str, cause: str) -> None:
    if cause not in _WARNED:
        _WARNED.add(cause)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class Backends:
    """Lazy holder of the compiled modules of one kernel package."""

    def __init__(self, pkg: str):
        self.pkg = pkg
        self._modules: dict[tuple[str, bool], object] = {}
        self._errors: dict[str, str] = {}

    def error(self, kind: str) -> str | None:
        """Why ``kind`` could not be loaded (None if it was, or was never tried)."""
        return self._errors.get(kind)

    def module(self, kind: str):
        """The compiled module for ``kind`` ("cpp", "cuda" or "cuda_emu"), or None if unavailable."""
        asan = kind == "cuda_emu" and os.environ.get("ERNERF_CUDA_EMU_ASAN") == "1"
        if (kind, asan) in self._modules:
            return self._modules[(kind, asan)]
        try:
            mod = self._load(kind, asan)
            self._errors.pop(kind, None)
        except Unavailable as e:
            mod, cause = None, str(e)
            self._errors[kind] = cause
            _warn_once(f"{self.pkg}: the {kind} backend is unavailable, using the slow torch reference: {cause}",
                       cause)
        self._modules[(kind, asan)] = mod
        return mod

    def _load(self, kind: str, asan: bool):
        if kind in PREBUILT:
            try:
                mod = importlib.import_module(f"{self.pkg}._{kind}")
            except ImportError:
                mod = None
            if mod is not None:
                if getattr(mod, "source_hash", None) == build.source_hash(self.pkg, kind):
                    return mod
                stale = f"{self.pkg}._{kind} was built from other sources"
                _warn_once(f"{stale}: ignoring it (rerun `pip install --no-build-isolation -e .`)", stale)
        try:
            if build.is_built(self.pkg, kind, asan=asan):
                return build.jit_build(self.pkg, kind, asan=asan)
            blocked = self._jit_blocked(kind)
            if blocked:
                raise Unavailable(blocked)
            print(f"[{self.pkg}] compiling the {kind} backend (cached after the first time)...",
                  file=sys.stderr, flush=True)
            return build.jit_build(self.pkg, kind, asan=asan)
        except ImportError as e:
            if asan:
                raise Unavailable(f"{e}; the ASan build needs LD_PRELOAD=$(gcc -print-file-name=libasan.so)") from e
            raise Unavailable(f"{type(e).__name__}: {e}") from e
        except (OSError, RuntimeError) as e:  # a broken toolchain (BuildError) must not break import
            raise Unavailable(f"{type(e).__name__}: {e}") from e

    @staticmethod
    def _jit_blocked(kind: str) -> str | None:
        """Why compiling ``kind`` here is impossible or forbidden, with the fix; None if allowed."""
        if os.environ.get("ERNERF_JIT", "1") == "0":
            flag = " --cuda" if kind == "cuda" else ""
            return (f"ERNERF_JIT=0 forbids compiling and no {kind} build of the current sources is cached: "
                    f"run `python -m ext_common build{flag}` or unset ERNERF_JIT")
        if kind == "cuda" and build.cuda_disabled():
            return "ERNERF_NO_CUDA is set: unset it to compile the CUDA kernels"
        if kind == "cuda" and build.nvcc_path() is None:
            return "nvcc not found: install the CUDA toolkit or set CUDA_HOME to it"
        return None

    def requested(self) -> str:
        key = f"ERNERF_BACKEND_{self.pkg.upper()}"
        value = os.environ.get(key) or os.environ.get("ERNERF_BACKEND") or "auto"
        if value not in CHOICES:
            raise ValueError(f"{key}/ERNERF_BACKEND must be one of {CHOICES}, got {value!r}")
        return value

    def choose(self, device: torch.device | str) -> str:
        """Backend name ("cuda", "cpp", "cuda_emu" or "torch") for tensors on ``device``."""
        device = torch.device(device)
        native = "cuda" if device.type == "cuda" else "cpp"
        want = self.requested()
        if want == "torch":
            return "torch"
        if want == "auto":
            return native if self.module(native) is not None else "torch"
        if DEVICE_TYPE[want] != device.type:
            raise ValueError(f"{self.pkg}: backend {want!r} was requested but the tensors are on {device}")
        if self.module(want) is None:
            raise RuntimeError(f"{self.pkg}: backend {want!r} was requested but could not be loaded: "
                               f"{self._errors.get(want, 'not built')}")
        return want

    def get(self, device: torch.device | str):
        """``(name, module)``; module is None for the torch reference."""
        name = self.choose(device)
        return name, (None if name == "torch" else self.module(name))
