"""gridencoder: the compiled CPU backends ("cpp", and the CUDA sources run by "cuda_emu") vs the
torch reference, gradients, hashing, the ER-NeRF configs, errors; on a GPU the CUDA backend too."""
import functools
import math

import pytest
import torch

from gridencoder import GridEncoder, _torch_impl, backend_name, build_level_table, grid_encode
from gridencoder.backend import BACKENDS
from tests import kernel_backends

U32 = 2 ** 32
PRIMES = (1, 2654435761, 805459861)

# (input_dim, num_levels, level_dim, base_resolution, log2_hashmap_size, desired_resolution,
#  gridtype, align_corners, interpolation); small tables so that hashing / wrapping happens.
CONFIGS = [
    (2, 4, 1, 8, 6, 64, "hash", False, "linear"),
    (2, 3, 2, 4, 5, 32, "tiled", False, "linear"),
    (3, 3, 2, 4, 8, 16, "hash", False, "linear"),
    (3, 2, 4, 3, 7, 9, "tiled", True, "linear"),
    (3, 2, 8, 4, 6, None, "hash", True, "smoothstep"),
    (2, 3, 1, 5, 6, 40, "hash", False, "smoothstep"),
]

# The production grids of nerf_triplane/network.py (bound 1): each tri-plane and the torso grid.
TRIPLANE = (2, 12, 1, 64, 14, 512, "hash", False, "linear")
TORSO = (2, 16, 2, 16, 16, 2048, "tiled", False, "linear")

# Tiny tables (<= 32 rows per level) keep the numerical Jacobians cheap.
GRADCHECK_CONFIGS = [
    (2, 2, 2, 4, 5, 12, "hash", False, "linear"),
    (3, 2, 2, 3, 5, 6, "hash", False, "linear"),
    (3, 2, 1, 3, 5, None, "tiled", True, "smoothstep"),
]

require = functools.partial(kernel_backends.require, BACKENDS)
compiled = kernel_backends.compiled_fixture(BACKENDS)


def make_encoder(cfg, dtype=torch.float32):
    d, levels, c, base, log2, desired, gridtype, align, interp = cfg
    enc = GridEncoder(input_dim=d, num_levels=levels, level_dim=c, base_resolution=base, log2_hashmap_size=log2,
                      desired_resolution=desired, gridtype=gridtype, align_corners=align, interpolation=interp)
    with torch.no_grad():
        enc.embeddings.uniform_(-1, 1)  # large enough that gradient errors show
    return enc.to(dtype)


def sample_points(n, dim, bound=1.0):
    """Random points inside and outside [-bound, bound]^D plus exact ±bound and 0 coordinates."""
    inside = (torch.rand(n, dim) * 2 - 1) * bound
    outside = (torch.rand(n // 4, dim) * 2 - 1) * 1.3 * bound
    specials = torch.tensor([-bound, 0.0, bound])
    grid = torch.cartesian_prod(*[specials] * dim).reshape(-1, dim)
    return torch.cat([inside, outside, grid, grid * 1.001])


def run(enc, x, v, backend, monkeypatch, bound=1.0):
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", backend)
    x = x.clone().requires_grad_()
    out = enc(x, bound=bound)
    v_x, v_emb = torch.autograd.grad((out * v).sum(), [x, enc.embeddings])
    return out.detach(), v_x, v_emb


def assert_matches_torch(cfg, backend, monkeypatch, n=300, bound=2.0, device="cpu"):
    """Features and both gradients of ``backend`` against the torch reference; returns them."""
    enc = make_encoder(cfg).to(device)
    x = sample_points(n, cfg[0], bound).to(device)
    v = torch.randn(x.shape[0], enc.output_dim, device=device)
    out_t, vx_t, ve_t = run(enc, x, v, "torch", monkeypatch, bound)
    out_c, vx_c, ve_c = run(enc, x, v, backend, monkeypatch, bound)
    torch.testing.assert_close(out_c, out_t, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ve_c, ve_t, atol=1e-5, rtol=1e-5)
    # Input gradients carry the level scale (cells per unit of x: up to 32 in CONFIGS, 256 in TRIPLANE).
    scale = max(enc.table.scales) / (2 * bound)
    torch.testing.assert_close(vx_c, vx_t, atol=3e-5 * scale, rtol=1e-4)
    return x.cpu(), out_c.cpu(), vx_c.cpu()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"D{c[0]}C{c[2]}-{c[6]}-{'ac' if c[7] else 'nc'}-{c[8]}")
def test_compiled_matches_torch(cfg, compiled, monkeypatch):
    bound = 2.0
    x, out_c, vx_c = assert_matches_torch(cfg, compiled, monkeypatch, bound=bound)
    # Points outside the cube (after the float32 map to [0, 1]): zero features, zero input gradient.
    u = (x + bound) / (2 * bound)
    outside = ((u < 0) | (u > 1)).any(-1)
    assert outside.any() and (out_c[outside] == 0).all() and (vx_c[outside] == 0).all()
    assert (out_c[~outside] != 0).any()


@pytest.mark.parametrize("cfg", [TRIPLANE, TORSO], ids=["triplane", "torso"])
def test_production_grids_match_torch(cfg, compiled, monkeypatch):
    assert_matches_torch(cfg, compiled, monkeypatch, n=2000, bound=1.0)


@pytest.mark.parametrize("backend", ["cuda_emu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_half_torso_grid_matches_float(backend, monkeypatch):
    """float16 embeddings (fp16 training) on the CUDA kernels against the float32 reference."""
    device = "cuda" if backend == "cuda" else "cpu"
    require(backend)
    enc = make_encoder(TORSO).half().to(device)
    x = sample_points(2000, 2).to(device)
    v = torch.randn(x.shape[0], enc.output_dim, device=device).half()
    out_h, vx_h, ve_h = run(enc, x, v, backend, monkeypatch)
    # The reference sees the same float16 values, in float32.
    out_t, vx_t, ve_t = run(enc.float(), x, v.float(), "torch", monkeypatch)
    assert out_h.dtype == ve_h.dtype == torch.float16 and vx_h.dtype == torch.float32
    # Features: the float32 sum rounded once to float16.
    torch.testing.assert_close(out_h.float(), out_t, atol=1e-6, rtol=2 ** -11)
    # Input gradients are accumulated in float32 from float16 values: as exact as in float32.
    torch.testing.assert_close(vx_h, vx_t, atol=3e-5 * max(enc.table.scales) / 2, rtol=1e-4)
    # Embedding gradients round to float16 after every atomic add: each of a row's k adds
    # (k <= 58 in this sample, on the coarsest level) errs by at most 2^-11 of the running
    # sum, itself at most the row's sum of |terms| (2^-25 absolute among subnormals).
    _, _, sum_abs = run(enc, x, v.float().abs(), "torch", monkeypatch)
    assert ((ve_h.float() - ve_t).abs() <= 64 * (2 ** -11 * sum_abs + 2 ** -25)).all()


@pytest.mark.parametrize("backend", ["torch", *kernel_backends.COMPILED])
@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS, ids=["2d-hash", "3d-hash", "3d-tiled-smoothstep"])
def test_gradcheck(cfg, backend, monkeypatch):
    require(backend)
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", backend)
    enc = make_encoder(cfg, torch.float64)
    table = enc.table
    # Keep every level's cell position away from cell faces so finite differences stay in one cell.
    x = torch.rand(400, cfg[0], dtype=torch.float64) * 1.8 - 0.9
    u = (x + 1) / 2
    keep = torch.ones(len(x), dtype=torch.bool)
    for s in table.scales:
        pos = u * s + (0.0 if table.align_corners else 0.5)
        frac = pos - pos.floor()
        keep &= ((frac > 0.02) & (frac < 0.98)).all(-1)
    x = x[keep][:6].clone().requires_grad_()
    assert len(x) == 6
    emb = enc.embeddings.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda e: _functional(enc, x.detach(), e), (emb,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda p: _functional(enc, p, emb.detach()), (x,), eps=1e-7, atol=1e-5)


def _functional(enc, points, embeddings):
    """The encoder as a function of both tensors (bound 1)."""
    return grid_encode((points + 1) / 2, embeddings, enc.table)


def vertex_point(vertex, scale):
    """x in [-1, 1]^D that lands exactly on integer vertex ``vertex`` (align_corners, s = scale)."""
    return torch.tensor([[2.0 * v / scale - 1.0 for v in vertex]], dtype=torch.float64)


@pytest.mark.parametrize("backend", ["torch", *kernel_backends.COMPILED])
def test_hash_index_pinned(backend, monkeypatch):
    require(backend)
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", backend)
    # base 17, align_corners: s = 16 so u = k/16 sits exactly on vertex k; 17^3 > 16 rows -> hashed.
    enc = GridEncoder(input_dim=3, num_levels=1, level_dim=1, base_resolution=17, log2_hashmap_size=4,
                      gridtype="hash", align_corners=True).double()
    assert enc.table.offsets == (0, 16)
    with torch.no_grad():
        enc.embeddings.copy_(torch.arange(16, dtype=torch.float64)[:, None])
    for vertex in [(3, 5, 7), (16, 0, 9), (1, 1, 1), (0, 0, 0), (12, 16, 2)]:
        expected = 0
        for coord, prime in zip(vertex, PRIMES):
            expected ^= (coord * prime) % U32
        expected %= 16
        assert enc(vertex_point(vertex, 16)).item() == expected, vertex
    # By hand: 5*2654435761 mod 2^32 = 387276917, 7*805459861 mod 2^32 = 1343251731,
    # 3 ^ 387276917 ^ 1343251731 = 1191511397, mod 16 = 5.
    assert enc(vertex_point((3, 5, 7), 16)).item() == 5


@pytest.mark.parametrize("backend", ["torch", *kernel_backends.COMPILED])
def test_tiled_index_pinned(backend, monkeypatch):
    require(backend)
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", backend)
    # 2D tiled, side 17 (align_corners), dense 289 rows > 64 -> wraps modulo 64.
    enc = GridEncoder(input_dim=2, num_levels=1, level_dim=1, base_resolution=17, log2_hashmap_size=6,
                      gridtype="tiled", align_corners=True).double()
    with torch.no_grad():
        enc.embeddings.copy_(torch.arange(64, dtype=torch.float64)[:, None])
    for a, b in [(3, 5), (16, 16), (0, 4), (9, 0)]:
        assert enc(vertex_point((a, b), 16)).item() == (a + 17 * b) % 64
    # 3D dense (side 5, 125 <= 128 rows): plain row-major index, x fastest.
    dense = GridEncoder(input_dim=3, num_levels=1, level_dim=1, base_resolution=5, log2_hashmap_size=7,
                        gridtype="hash", align_corners=True).double()
    assert dense.table.offsets == (0, 128)
    with torch.no_grad():
        dense.embeddings.copy_(torch.arange(128, dtype=torch.float64)[:, None])
    assert dense(vertex_point((1, 2, 3), 4)).item() == 1 + 5 * 2 + 25 * 3


def test_interpolates_between_vertices(monkeypatch):
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", "torch")
    enc = GridEncoder(input_dim=2, num_levels=1, level_dim=1, base_resolution=3, log2_hashmap_size=4,
                      gridtype="tiled", align_corners=True).double()
    with torch.no_grad():
        enc.embeddings.copy_(torch.arange(16, dtype=torch.float64)[:, None] ** 2)
    # s = 2: u = (0.25, 0.75) -> pos (0.5, 1.5): corners (0,1) (1,1) (0,2) (1,2) -> rows 3, 4, 6, 7.
    x = torch.tensor([[-0.5, 0.5]], dtype=torch.float64)
    assert enc(x).item() == pytest.approx(0.25 * (9 + 16 + 36 + 49))


def test_ernerf_configs_shapes_and_rows():
    triplane = GridEncoder(input_dim=2, num_levels=12, level_dim=1, base_resolution=64, log2_hashmap_size=14,
                           desired_resolution=512, gridtype="hash", align_corners=False)
    torso = GridEncoder(input_dim=2, num_levels=16, level_dim=2, base_resolution=16, log2_hashmap_size=16,
                        desired_resolution=2048, gridtype="tiled")
    x = torch.rand(7, 2) * 2 - 1
    assert triplane(x).shape == (7, 12) and triplane.output_dim == 12
    assert torso(x).shape == (7, 32) and torso.output_dim == 32
    assert triplane(torch.rand(2, 3, 2)).shape == (2, 3, 12)
    # Level 0 of the tri-plane grid is dense: ceil8(65^2) = 4232 rows; later levels cap at 2^14.
    assert triplane.offsets[1].item() == 4232
    assert triplane.offsets[-1].item() - triplane.offsets[-2].item() == 2 ** 14
    assert triplane.offsets.dtype == torch.int32 and len(triplane.offsets) == 13
    assert triplane.per_level_scale == pytest.approx(2 ** (3 / 11))
    assert triplane.table.resolutions[0] == 64 and triplane.table.resolutions[-1] == 512
    assert (triplane.embeddings.abs() <= 1e-4).all()
    assert "gridtype=hash" in repr(triplane) and "rows=" in repr(triplane)


def test_rows_formula():
    t = build_level_table(3, 16, 2.0, 16, 19)
    for level in range(16):
        res = math.ceil(16 * 2 ** level)
        assert t.offsets[level + 1] - t.offsets[level] == math.ceil(min(2 ** 19, (res + 1) ** 3) / 8) * 8


def test_backend_selection(monkeypatch):
    require("cpp")
    assert backend_name("cpu") == "cpp"
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", "torch")
    assert backend_name("cpu") == "torch"


def test_torch_impl_rows_match_hash():
    cells = torch.tensor([[3, 5, 7]])
    expected = (3 ^ (5 * PRIMES[1] % U32) ^ (7 * PRIMES[2] % U32)) % 1000
    assert _torch_impl.grid_rows(cells, 1000, 64, "hash", False).item() == expected


@pytest.mark.parametrize("kwargs, match", [
    (dict(level_dim=3), "level_dim"),
    (dict(gridtype="dense"), "gridtype"),
    (dict(interpolation="cubic"), "interpolation"),
    (dict(input_dim=4), "input_dim"),
    (dict(num_levels=0), "num_levels"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridEncoder(**kwargs)


def test_bad_inputs():
    enc = GridEncoder(input_dim=3, num_levels=2, log2_hashmap_size=8)
    with pytest.raises(ValueError, match="last dim 3"):
        enc(torch.rand(4, 2))
    with pytest.raises(ValueError, match="floating point"):
        enc(torch.ones(4, 3, dtype=torch.int64))


@pytest.mark.cuda
@pytest.mark.parametrize("cfg", CONFIGS[:4] + [TRIPLANE, TORSO])
def test_cuda_matches_torch(cfg, monkeypatch):
    assert_matches_torch(cfg, "cuda", monkeypatch, n=2000 if cfg in (TRIPLANE, TORSO) else 300, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_rejects_embeddings_on_another_gpu(monkeypatch):
    monkeypatch.setenv("ERNERF_BACKEND_GRIDENCODER", "cuda")
    enc = make_encoder(CONFIGS[0]).to("cuda:1")
    with pytest.raises(RuntimeError, match="embeddings must be on cuda:0 like the other inputs, got cuda:1"):
        enc(torch.rand(8, 2, device="cuda:0"))
