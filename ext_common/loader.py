"""Loading and choosing a kernel backend: CUDA, C++ CPU, or the torch reference.

Every kernel package holds one ``Backends`` object. For a tensor on a CUDA device
it picks ``"cuda"``, for a CPU tensor ``"cpp"``, and falls back to ``"torch"`` (the
package's ``_torch_impl``) when the compiled module is unavailable. A module is
found in three tiers: an ahead-of-time build (``PKG._cpp`` / ``PKG._cuda`` from
``pip install -e .``), else a cached JIT build, else nothing (with one warning).

Overrides, read on every call so tests can switch them:
    ERNERF_BACKEND=auto|torch|cpp|cuda     all packages
    ERNERF_BACKEND_<PKG>=...               one package (e.g. ERNERF_BACKEND_RAYMARCHING)
    ERNERF_JIT=0                           never compile at run time
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings

import torch

from . import build

CHOICES = ("auto", "torch", "cpp", "cuda")


class Backends:
    """Lazy holder of the compiled modules of one kernel package."""

    def __init__(self, pkg: str):
        self.pkg = pkg
        self._modules: dict[str, object] = {}
        self._errors: dict[str, str] = {}

    def module(self, kind: str):
        """The compiled module for ``kind`` ("cpp" or "cuda"), or None if unavailable."""
        if kind in self._modules:
            return self._modules[kind]
        mod = None
        try:
            mod = importlib.import_module(f"{self.pkg}._{kind}")
        except ImportError:
            if self._jit_allowed(kind):
                try:
                    if not build.is_built(self.pkg, kind):
                        print(f"[{self.pkg}] compiling the {kind} backend (cached after the first time)...",
                              file=sys.stderr, flush=True)
                    mod = build.jit_build(self.pkg, kind)
                except Exception as e:  # a broken toolchain must not break import
                    self._errors[kind] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                    warnings.warn(f"{self.pkg}: {kind} backend unavailable ({self._errors[kind]}); "
                                  f"using the torch reference", RuntimeWarning, stacklevel=3)
        self._modules[kind] = mod
        return mod

    @staticmethod
    def _jit_allowed(kind: str) -> bool:
        if os.environ.get("ERNERF_JIT", "1") == "0":
            return False
        if kind == "cuda":
            return torch.cuda.is_available() and build.cuda_wanted()
        return True

    def requested(self) -> str:
        key = f"ERNERF_BACKEND_{self.pkg.upper()}"
        value = os.environ.get(key) or os.environ.get("ERNERF_BACKEND") or "auto"
        if value not in CHOICES:
            raise ValueError(f"{key}/ERNERF_BACKEND must be one of {CHOICES}, got {value!r}")
        return value

    def choose(self, device: torch.device | str) -> str:
        """Backend name ("cuda", "cpp" or "torch") for tensors on ``device``."""
        device = torch.device(device)
        native = "cuda" if device.type == "cuda" else "cpp"
        want = self.requested()
        if want == "torch":
            return "torch"
        if want == "auto":
            return native if self.module(native) is not None else "torch"
        if want != native:
            raise ValueError(f"{self.pkg}: backend {want!r} was requested but the tensors are on {device}")
        if self.module(want) is None:
            raise RuntimeError(f"{self.pkg}: backend {want!r} was requested but could not be loaded: "
                               f"{self._errors.get(want, 'not built')}")
        return want

    def get(self, device: torch.device | str):
        """``(name, module)``; module is None for the torch reference."""
        name = self.choose(device)
        return name, (None if name == "torch" else self.module(name))
