"""The CUDA sources of every kernel package compile and link (sm_80, sm_90) with the local nvcc.

No GPU is needed: the built module is imported and its functions are compared with
the C++ backend's. Builds are cached on the source hash, so only the first run is slow.
"""
import pytest

from ext_common import build

ARCHS = "8.0;9.0"


def public_names(module) -> set[str]:
    return {name for name in dir(module) if not name.startswith("_")}


@pytest.mark.slow
@pytest.mark.parametrize("pkg", build.PACKAGES)
def test_cuda_sources_build(pkg):
    if build.nvcc_path() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH) - cannot compile the CUDA backends")
    if not build.sources(pkg, "cuda"):
        pytest.skip(f"{pkg}/src has no .cu sources yet")
    if not build.sources(pkg, "cpp"):
        pytest.skip(f"{pkg}/src has no .cpp sources to compare the CUDA module with")
    cuda_module = build.jit_build(pkg, "cuda", archs=ARCHS)
    cpp_module = build.jit_build(pkg, "cpp")
    names = public_names(cpp_module)
    assert names, f"{pkg}: the C++ module exposes no functions"
    assert public_names(cuda_module) == names
