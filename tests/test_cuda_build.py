"""Building and loading the kernel backends (ext_common): nvcc builds, the source-hash check,
ERNERF_JIT=0, the one warning of a fallback to torch, compiler errors, CUDA arch lists.

Without a GPU the nvcc builds are only compiled, linked, imported and compared by their
exported names; the CUDA sources' functions are *run* (compiled as C++, backend
``cuda_emu``) by test_gridencoder.py, test_shencoder.py and test_raymarching.py, and on a
GPU (tests marked ``cuda``) as real kernels.
"""
import subprocess
import sys
import types
import warnings

import pytest
import torch

from ext_common import build, loader

ARCHS = "8.0;9.0"

needs_nvcc = pytest.mark.skipif(build.nvcc_path() is None, reason="nvcc not found (set CUDA_HOME or put nvcc on PATH)")


def public_names(module) -> set[str]:
    return {name for name in dir(module) if not name.startswith("_")}


@pytest.fixture
def fresh(monkeypatch):
    """A new ``Backends`` for a package, with no warning given yet in this process."""
    monkeypatch.setattr(loader, "_WARNED", set())
    for var in ("ERNERF_JIT", "ERNERF_NO_CUDA", "ERNERF_BACKEND", "ERNERF_BACKEND_SHENCODER"):
        monkeypatch.delenv(var, raising=False)
    return loader.Backends


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize("pkg", build.PACKAGES)
def test_cuda_sources_build(pkg):
    cuda_module = build.jit_build(pkg, "cuda", archs=ARCHS)
    names = public_names(build.jit_build(pkg, "cpp"))
    assert "source_hash" in names and len(names) > 1
    assert public_names(cuda_module) == names == public_names(build.jit_build(pkg, "cuda_emu"))
    assert cuda_module.source_hash == build.source_hash(pkg, "cuda")


WALK_KERNEL = r"""
#include "raymarching.h"
__global__ void walk(const float* o, const float* d, const float* aabb, const uint8_t* bits, float* out) {
  float near, far;
  raymarching::ray_aabb(o, d, aabb, 0.05f, near, far);
  const raymarching::StepRule rule = raymarching::make_step_rule(1.0f / 256, 64, 2, 32);
  const raymarching::OccupancyGrid grid{bits, 2, 32, 2.0f};
  raymarching::RayWalker walker(o, d, near, far);
  float p[3], dt, t_after;
  walker.next(grid, rule, p, dt, t_after);
  out[0] = p[0] + p[1] + p[2] + dt + t_after;
}
"""


@needs_nvcc
def test_ray_walk_rounds_every_product_on_the_gpu(tmp_path):
    # A fused multiply-add (o + t*d, face distances) would round once where the CPU rounds
    # twice, and the GPU could pick another cell than the C++ and torch backends.
    src = tmp_path / "walk.cu"
    src.write_text(WALK_KERNEL)

    def ptx(flags):
        out = tmp_path / "walk.ptx"
        subprocess.run([build.nvcc_path(), "-ptx", "-arch=sm_80", *flags, f"-I{build.COMMON_INCLUDE}",
                        f"-I{build.ROOT / 'raymarching' / 'src'}", str(src), "-o", str(out)], check=True)
        return out.read_text()

    assert "fma.rn.f32" not in ptx(build.nvcc_flags())
    assert "fma.rn.f32" in ptx([f for f in build.nvcc_flags() if f != "--fmad=false"])  # what the flag prevents


def test_jit_off_still_loads_cached_builds(fresh, monkeypatch):
    build.jit_build("shencoder", "cpp")  # cached now, if it was not already
    monkeypatch.setenv("ERNERF_JIT", "0")
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", lambda **_: pytest.fail("ERNERF_JIT=0 compiled"))
    module = fresh("shencoder").module("cpp")
    assert module is not None and module.source_hash == build.source_hash("shencoder", "cpp")


def test_jit_off_without_a_cache_warns_once(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("ERNERF_JIT", "0")
    monkeypatch.setenv("ERNERF_EXT_CACHE", str(tmp_path))
    with pytest.warns(RuntimeWarning) as record:
        shencoder = fresh("shencoder")
        assert shencoder.choose("cpu") == "torch"
        assert fresh("gridencoder").choose("cpu") == "torch"
    assert len(record) == 1, [str(w.message) for w in record]
    message = str(record[0].message)
    assert message.startswith("shencoder: the cpp backend is unavailable, using the slow torch reference")
    assert "ERNERF_JIT=0" in message and "python -m ext_common build" in message
    monkeypatch.setenv("ERNERF_BACKEND", "cpp")
    with pytest.raises(RuntimeError, match="backend 'cpp' was requested but could not be loaded: ERNERF_JIT=0"):
        shencoder.choose("cpu")


def test_missing_nvcc_is_one_warning_with_the_fix(fresh, monkeypatch, tmp_path):
    # What a GPU machine without the CUDA toolkit sees on its first CUDA tensor.
    monkeypatch.setenv("ERNERF_EXT_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "nvcc_path", lambda: None)
    with pytest.warns(RuntimeWarning) as record:
        for pkg in build.PACKAGES:
            assert fresh(pkg).module("cuda") is None
    assert len(record) == 1
    assert "the cuda backend is unavailable" in str(record[0].message)
    assert "nvcc not found: install the CUDA toolkit or set CUDA_HOME" in str(record[0].message)


def test_prebuilt_module_is_checked_against_the_sources(fresh, monkeypatch):
    current = types.SimpleNamespace(source_hash=build.source_hash("shencoder", "cpp"))
    monkeypatch.setitem(sys.modules, "shencoder._cpp", current)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fresh("shencoder").module("cpp") is current
    # After a `git pull` the installed module is older than the sources: the JIT build is used.
    monkeypatch.setitem(sys.modules, "shencoder._cpp", types.SimpleNamespace(source_hash="0" * 12))
    with pytest.warns(RuntimeWarning, match="shencoder._cpp was built from other sources.*pip install"):
        module = fresh("shencoder").module("cpp")
    assert module.source_hash == current.source_hash and module.__name__ == build.build_key("shencoder", "cpp")


def test_build_failure_names_the_compiler_errors(fresh, monkeypatch, tmp_path):
    bad = tmp_path / "bad.cpp"
    bad.write_text("int answer() {\n  return undeclared_name;\n}\n")
    monkeypatch.setenv("ERNERF_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "sources", lambda pkg, kind: [bad])
    with pytest.warns(RuntimeWarning, match="the cpp backend is unavailable") as record:
        assert fresh("shencoder").module("cpp") is None
    message = str(record[0].message)
    assert "BuildError: compiling shencoder_cpp_" in message
    assert "bad.cpp:2:" in message and "undeclared_name" in message and "error" in message
    assert "Error building extension" not in message
    log = message.rsplit("(full compiler output: ", 1)[1].rstrip(")")
    assert "undeclared_name" in open(log).read()


def test_cuda_arch_list(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    assert build.cuda_archs() == "8.6"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    # JIT: the GPUs present (torch's own choice), so any GPU nvcc knows gets a kernel image.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: [(8, 6), (7, 5), (8, 6)][i])
    assert build.cuda_archs() == "7.5;8.6"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Ahead of time: Turing to Hopper, and PTX that newer GPUs compile at load time.
    assert build.cuda_archs() == build.DEFAULT_CUDA_ARCHS == "7.5;8.0;8.6;8.9;9.0+PTX"


@pytest.mark.cuda
def test_missing_kernel_image_names_the_arch_list():
    major, minor = torch.cuda.get_device_capability()
    other = "8.0" if major >= 9 else "9.0"  # SASS of another major version, no PTX: cannot run here
    module = build.jit_build("shencoder", "cuda", archs=other)
    with pytest.raises(RuntimeError, match=f'TORCH_CUDA_ARCH_LIST="{major}.{minor}"'):
        module.sh_encode_forward(torch.rand(4, 3, device="cuda"), 2)
