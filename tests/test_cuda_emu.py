"""cuda_emu: the CUDA sources compiled as C++ and run serially on the CPU (ext_common/include/cuda_emu.h).

The kernels' checks against the torch reference live in test_gridencoder.py,
test_shencoder.py and test_raymarching.py, parametrized over the compiled backends
("cpp", "cuda_emu"). Here: the emulation itself (launch indices and limits, atomics),
backend selection, the CUDA entry points' device checks, tiny-preset training, and the
packages' cuda_emu tests run again under AddressSanitizer.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gridencoder
import raymarching
import shencoder
from ext_common import build
from nerf_triplane.options import parse_args
from tests import kernel_backends
from tests.conftest import build_trainer, single_thread, tiny_args

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("cuda_emu_probe.cu")
PACKAGES = {"gridencoder": gridencoder, "shencoder": shencoder, "raymarching": raymarching}


def probe_module(asan: bool = False):
    """The test-only kernels of cuda_emu_probe.cu, built and cached like a cuda_emu backend."""
    files = [PROBE, *sorted(build.COMMON_INCLUDE.glob("*.h"))]
    digest = build.files_hash(files, "cuda_emu", asan)
    name = f"cuda_emu_probe{'_asan' if asan else ''}_{digest}"
    return build.load_module(name, [PROBE], "cuda_emu", [str(build.COMMON_INCLUDE)], digest, asan=asan)


def run_under_asan(*args: str) -> subprocess.CompletedProcess:
    """``python *args`` from the repository root with the ASan runtime preloaded and the
    cuda_emu backends loaded from their ASan builds (ERNERF_CUDA_EMU_ASAN=1)."""
    compiler = os.environ.get("CXX", "c++")  # the compiler torch builds extensions with
    # libstdc++ right after the runtime: ASan finds __cxa_throw (C++ exceptions, i.e. every
    # TORCH_CHECK) only in libraries loaded before it starts, and python does not link libstdc++.
    libs = [subprocess.run([compiler, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
            for lib in ("libasan.so", "libstdc++.so")]
    assert all(os.path.isabs(lib) for lib in libs), f"{compiler} lacks {libs}: install its AddressSanitizer runtime"
    env = {**os.environ, "LD_PRELOAD": " ".join(libs), "ASAN_OPTIONS": "detect_leaks=0", "ERNERF_CUDA_EMU_ASAN": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def probe():
    return probe_module()


# ------------------------------------------------------------------ the emulation
@pytest.mark.parametrize("grid, block", [((3, 2, 2), (4, 2, 3)), ((1, 1, 1), (1024, 1, 1)), ((2, 1, 1), (1, 1, 64))])
def test_every_thread_runs_once(probe, grid, block):
    hits = probe.launch_counts(grid, block)
    assert len(hits) == math.prod(grid) * math.prod(block) and set(hits) == {1}


@pytest.mark.parametrize("grid, block, match", [
    ((0, 1, 1), (1, 1, 1), "empty grid"),
    ((2 ** 31, 1, 1), (1, 1, 1), "gridDim limits"),
    ((1, 65536, 1), (1, 1, 1), "gridDim limits"),
    ((1, 1, 65536), (1, 1, 1), "gridDim limits"),
    ((1, 1, 1), (1025, 1, 1), "blockDim limits"),
    ((1, 1, 1), (1, 1, 65), "blockDim limits"),
    ((1, 1, 1), (32, 32, 2), "blockDim limits"),
])
def test_launches_beyond_cuda_limits_fail(probe, grid, block, match):
    with pytest.raises(RuntimeError, match=match):
        probe.launch_noop(grid, block)


def test_atomic_add_rounds_half_after_every_add(probe):
    assert probe.atomic_sum(1.0, 4096, False) == 4096.0
    # 2049 is no float16: each add from 2048 on rounds back to 2048 (ties to even), as on a GPU.
    assert probe.atomic_sum(1.0, 4096, True) == 2048.0


# ------------------------------------------------------------- selection, checks
@pytest.mark.parametrize("pkg", PACKAGES)
def test_cuda_emu_is_used_only_on_request(pkg, monkeypatch):
    mod = PACKAGES[pkg]
    for var in ("ERNERF_BACKEND", f"ERNERF_BACKEND_{pkg.upper()}"):
        monkeypatch.delenv(var, raising=False)
    assert mod.backend_name("cpu") == "cpp"
    monkeypatch.setenv("ERNERF_BACKEND", "cuda_emu")
    assert mod.backend_name("cpu") == "cuda_emu"
    assert mod.backend.BACKENDS.module("cuda_emu").source_hash == build.source_hash(pkg, "cuda_emu")
    with pytest.raises(ValueError, match="'cuda_emu' was requested but the tensors are on cuda"):
        mod.backend_name("cuda")


@pytest.mark.parametrize("kind", kernel_backends.COMPILED)
def test_entry_points_want_every_tensor_on_one_device(kind):
    # On the CPU only the device type can differ (meta here); the same comparison of full
    # devices rejects cuda:1 next to cuda:0 (test_gridencoder's two-GPU test).
    for mod in PACKAGES.values():
        kernel_backends.require(mod.backend.BACKENDS, kind)
    grid = gridencoder.backend.BACKENDS.module(kind)
    table = gridencoder.build_level_table(2, 2, 2.0, 4, 6)
    emb = torch.zeros(table.num_rows, 1)
    with pytest.raises(RuntimeError, match="embeddings must be on cpu like the other inputs, got meta"):
        grid.grid_encode_forward(torch.rand(3, 2), emb.to("meta"), *table.kernel_args())
    with pytest.raises(RuntimeError, match="inputs must be a CPU tensor, got one on meta"):
        grid.grid_encode_forward(torch.rand(3, 2, device="meta"), emb, *table.kernel_args())
    sh = shencoder.backend.BACKENDS.module(kind)
    with pytest.raises(RuntimeError, match="v_outputs must be on cpu like the other inputs, got meta"):
        sh.sh_encode_backward(torch.zeros(3, 4, device="meta"), torch.rand(3, 3), 2)
    rm = raymarching.BACKENDS.module(kind)
    with pytest.raises(RuntimeError, match="aabb must be on cpu like the other inputs, got meta"):
        rm.near_far_from_aabb(torch.rand(3, 3), torch.rand(3, 3), torch.zeros(6, device="meta"), 0.05)
    with pytest.raises(RuntimeError, match="rgbs must be on cpu like the other inputs, got meta"):
        rm.composite_rays_train_forward(torch.rand(2), torch.rand(2, 3, device="meta"), torch.rand(2, 2),
                                        torch.zeros(1, 3, dtype=torch.int32), None, None, None, 1e-4)


# ------------------------------------------------------------------------ training
@pytest.mark.slow
def test_tiny_training_matches_cpp(subject, tmp_path, monkeypatch):
    losses = {}
    for kind in ("cpp", "cuda_emu"):
        monkeypatch.setenv("ERNERF_BACKEND", kind)
        opt = parse_args(tiny_args(subject, tmp_path / kind, "--iters", 30, "--eval_interval", 1000))
        torch.manual_seed(0)
        with single_thread():
            trainer, loader, _ = build_trainer(opt)
            assert trainer.train(loader)
        losses[kind] = trainer.losses
    assert len(losses["cpp"]) == 30 and all(math.isfinite(v) for v in losses["cpp"])
    # Same kernels, same order of every floating-point operation (one thread).
    assert losses["cuda_emu"] == losses["cpp"]


# ------------------------------------------------------------------ AddressSanitizer
@pytest.mark.slow
def test_kernel_tests_pass_under_asan():
    code = ("import sys, pytest, gridencoder.backend, shencoder.backend, raymarching.backend\n"
            "for pkg in (gridencoder, shencoder, raymarching):\n"
            "    assert '_asan_' in pkg.backend.BACKENDS.module('cuda_emu').__name__\n"
            "sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', '-k', 'cuda_emu', "
            "'tests/test_gridencoder.py', 'tests/test_shencoder.py', 'tests/test_raymarching.py']))\n")
    result = run_under_asan("-c", code)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "AddressSanitizer" not in result.stderr


@pytest.mark.slow
def test_asan_run_fails_on_an_out_of_bounds_read():
    result = run_under_asan("-c", "from tests.test_cuda_emu import probe_module\n"
                                  "probe_module(asan=True).read_past_end(64)")
    assert result.returncode != 0
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in result.stderr, result.stderr[-4000:]
    assert "k_read_past_end" in result.stderr  # the report names the kernel
