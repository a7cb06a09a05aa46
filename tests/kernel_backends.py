"""Backend helpers shared by the kernel-package tests (gridencoder, shencoder, raymarching)."""
import pytest

COMPILED = ["cpp", "cuda_emu"]  # compiled backends that run on the CPU ("cuda_emu": the CUDA sources)


def require(backends, name: str) -> None:
    """Fail (never skip) when backend ``name`` of ``backends`` (an ``ext_common.Backends``) did not load."""
    if name != "torch":
        assert backends.module(name) is not None, f"{backends.pkg} {name} backend: {backends.error(name)}"


def compiled_fixture(backends, name: str = "compiled", scope: str = "function"):
    """Fixture ``name`` giving each of COMPILED in turn; it fails when that backend did not load."""

    @pytest.fixture(name=name, scope=scope, params=COMPILED)
    def fixture(request):
        require(backends, request.param)
        return request.param

    return fixture
