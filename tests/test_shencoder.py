"""shencoder: the compiled CPU backends ("cpp", and the CUDA sources run by "cuda_emu") vs the torch
reference, the real-SH convention, gradients, errors; on a GPU the CUDA backend too."""
import functools
import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from shencoder import SHEncoder, _torch_impl, backend_name, sh_encode
from shencoder.backend import BACKENDS
from tests import kernel_backends

require = functools.partial(kernel_backends.require, BACKENDS)
compiled = kernel_backends.compiled_fixture(BACKENDS)


def directions(n, dtype=torch.float32):
    """Random unit vectors plus the six axis directions and a few non-unit vectors."""
    d = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    axes = torch.cat([torch.eye(3), -torch.eye(3)]).double()
    off_sphere = torch.randn(5, 3, dtype=torch.float64) * 1.5
    return torch.cat([d, axes, off_sphere]).to(dtype)


def run(degree, x, v, backend, monkeypatch):
    monkeypatch.setenv("ERNERF_BACKEND_SHENCODER", backend)
    x = x.clone().requires_grad_()
    out = sh_encode(x, degree)
    (v_x,) = torch.autograd.grad((out * v).sum(), [x])
    return out.detach(), v_x


@pytest.mark.parametrize("degree", range(1, 9))
def test_compiled_matches_torch(degree, compiled, monkeypatch):
    x = directions(200)
    v = torch.randn(x.shape[0], degree * degree)
    out_t, vx_t = run(degree, x, v, "torch", monkeypatch)
    out_c, vx_c = run(degree, x, v, compiled, monkeypatch)
    torch.testing.assert_close(out_c, out_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vx_c, vx_t, atol=1e-4 * degree ** 2, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", *kernel_backends.COMPILED])
def test_gradcheck(backend, monkeypatch):
    require(backend)
    monkeypatch.setenv("ERNERF_BACKEND_SHENCODER", backend)
    x = directions(6, torch.float64)[[0, 1, 2, 6, -1]].requires_grad_()  # unit, axis, off-sphere
    # fast_mode checks random projections of the Jacobian: the full one costs 320 backward passes.
    assert torch.autograd.gradcheck(lambda d: sh_encode(d, 8), (x,), eps=1e-6, atol=1e-6, fast_mode=True)
    assert torch.autograd.gradcheck(lambda d: sh_encode(d, 3), (x[:2],), eps=1e-6, atol=1e-6)


def facts_sheet_basis(d):
    """Bands 0..3 exactly as written in the reference's closed forms."""
    x, y, z = d.unbind(-1)
    xy, yz, xz = x * y, y * z, x * z
    x2, y2, z2 = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * z2 - 0.31539156525251999,
        -1.0925484305920792 * xz, 0.54627421529603959 * (x2 - y2),
        0.59004358992664352 * y * (-3.0 * x2 + y2), 2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1.0 - 5.0 * z2), 0.3731763325901154 * z * (5.0 * z2 - 3.0),
        0.45704579946446572 * x * (1.0 - 5.0 * z2), 1.4453057213202769 * z * (x2 - y2),
        0.59004358992664352 * x * (-x2 + 3.0 * y2),
    ], dim=-1)


@pytest.mark.parametrize("backend", ["torch", *kernel_backends.COMPILED])
def test_matches_reference_closed_forms(backend, monkeypatch):
    require(backend)
    monkeypatch.setenv("ERNERF_BACKEND_SHENCODER", backend)
    # Includes non-unit vectors: the polynomials must agree off the sphere too.
    x = directions(100, torch.float64)
    torch.testing.assert_close(sh_encode(x, 4), facts_sheet_basis(x), atol=1e-12, rtol=1e-12)


def scipy_real_sh(d, degree):
    """Real SH from scipy's complex ones (Condon-Shortley phase included), same order and signs."""
    d = d.numpy()
    polar = np.arccos(np.clip(d[:, 2], -1, 1))
    azimuth = np.arctan2(d[:, 1], d[:, 0])
    cols = []
    for l in range(degree):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), polar, azimuth)
            cols.append(y.real if m == 0 else math.sqrt(2) * (y.real if m > 0 else y.imag))
    return torch.from_numpy(np.stack(cols, axis=-1))


@pytest.mark.parametrize("backend", ["torch", *kernel_backends.COMPILED])
def test_matches_scipy_all_bands(backend, monkeypatch):
    require(backend)
    monkeypatch.setenv("ERNERF_BACKEND_SHENCODER", backend)
    d = torch.nn.functional.normalize(torch.randn(300, 3, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(sh_encode(d, 8), scipy_real_sh(d, 8), atol=1e-10, rtol=1e-10)


def test_orthonormal_on_sphere():
    # Gauss-Legendre in z times a uniform azimuth grid integrates these degree <= 14
    # polynomials exactly, so the Gram matrix must be the identity to rounding.
    z, wz = np.polynomial.legendre.leggauss(12)
    phi = np.arange(32) * 2 * np.pi / 32
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz ** 2)
    d = torch.from_numpy(np.stack([r * np.cos(pp), r * np.sin(pp), zz], -1).reshape(-1, 3))
    w = torch.from_numpy(np.repeat(wz, 32) * (2 * np.pi / 32))
    basis = _torch_impl.sh_encode(d, 8)  # [Q, 64]
    gram = basis.T @ (basis * w[:, None])
    torch.testing.assert_close(gram, torch.eye(64, dtype=torch.float64), atol=1e-10, rtol=0)


def test_module_divides_by_size_and_keeps_shape():
    enc = SHEncoder(input_dim=3, degree=4)
    assert enc.output_dim == 16 and "degree=4" in repr(enc)
    d = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    out = enc(d * 3.0, size=3.0)
    assert out.shape == (2, 5, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, sh_encode(d, 4), atol=1e-6, rtol=1e-5)
    assert enc(d.double()).dtype == torch.float64


def test_backend_selection(monkeypatch):
    require("cpp")
    assert backend_name("cpu") == "cpp"
    monkeypatch.setenv("ERNERF_BACKEND_SHENCODER", "torch")
    assert backend_name("cpu") == "torch"


@pytest.mark.parametrize("kwargs, match", [
    (dict(degree=0), "degree"), (dict(degree=9), "degree"), (dict(input_dim=2), "input_dim"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SHEncoder(**kwargs)


def test_bad_inputs():
    enc = SHEncoder()
    with pytest.raises(ValueError, match="last dim 3"):
        enc(torch.rand(4, 2))
    with pytest.raises(ValueError, match="floating point"):
        enc(torch.ones(4, 3, dtype=torch.int32))


@pytest.mark.cuda
@pytest.mark.parametrize("degree", [1, 4, 8])
def test_cuda_matches_torch(degree, monkeypatch):
    x = directions(200).cuda()
    v = torch.randn(x.shape[0], degree * degree, device="cuda")
    out_t, vx_t = run(degree, x, v, "torch", monkeypatch)
    out_c, vx_c = run(degree, x, v, "cuda", monkeypatch)
    torch.testing.assert_close(out_c, out_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vx_c, vx_t, atol=1e-4 * degree ** 2, rtol=1e-4)
