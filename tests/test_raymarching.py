"""raymarching: the compiled CPU backends ("cpp", and the CUDA sources run by "cuda_emu") against
the torch reference, closed-form scenes, training vs inference loops, gradients, argument
checks; on a GPU the CUDA backend against the reference too."""
import functools
import math

import pytest
import torch

import raymarching as rm
from raymarching import _torch_impl
from raymarching.backend import BACKENDS
from tests import kernel_backends

AABB = torch.tensor([-1.0, -0.5, -1.0, 1.0, 0.5, 1.0])
COMPILED = kernel_backends.COMPILED
require = functools.partial(kernel_backends.require, BACKENDS)
kind = kernel_backends.compiled_fixture(BACKENDS, name="kind", scope="module")


@pytest.fixture(scope="module")
def ext(kind):
    """The compiled module of ``kind``, called directly."""
    return BACKENDS.module(kind)


@pytest.fixture
def select(use_backend):
    """Run the public API on one backend, which must load."""

    def _select(name):
        require(name)
        use_backend(name, "raymarching")

    return _select


def random_scene(N=400, H=32, C=1, occupancy=0.5, seed=0):
    """Rays from a camera at z = -2.5 into the ER-NeRF box, and a random occupancy bitfield."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(C, H ** 3, generator=g)
    bitfield = _torch_impl.morton3D_dilation(grid)  # any grid; dilation just makes it clumpier
    bits = torch.empty(C * H ** 3 // 8, dtype=torch.uint8)
    _torch_impl.packbits(bitfield, 1 - occupancy ** (1 / 7), bits)
    rays_o = torch.randn(N, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, -2.5])
    rays_d = torch.nn.functional.normalize(torch.randn(N, 3, generator=g) * 0.25 + torch.tensor([0.0, 0.0, 1.0]),
                                           dim=1)
    nears, fars = _torch_impl.near_far_from_aabb(rays_o, rays_d, AABB, 0.05)
    return rays_o, rays_d, bits, nears, fars


def field(xyzs, dirs):
    """A smooth deterministic model: sigma >= 0, rgb in (0, 1), and the three extras."""
    sigmas = 8 * (1 + torch.sin(3 * xyzs[:, 0]) * torch.cos(2 * xyzs[:, 1] + xyzs[:, 2]))
    rgbs = torch.sigmoid(torch.stack([xyzs[:, 0] * 3, xyzs[:, 1] * 2 + dirs[:, 0], xyzs[:, 2]], 1))
    extras = {"ambient_aud": xyzs[:, 0].abs(), "ambient_eye": xyzs[:, 1] ** 2, "uncertainty": xyzs[:, 2] + 1}
    return sigmas, rgbs, extras


# ----------------------------------------------------------------- utilities
@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_utilities_closed_form(backend, select):
    select(backend)
    assert rm.backend_name() == backend
    coords = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 0], [1023, 1023, 1023]], dtype=torch.int32)
    assert rm.morton3D(coords).tolist() == [1, 2, 4, 9, 2 ** 30 - 1]
    many = torch.randint(0, 1024, (500, 3), dtype=torch.int32)
    assert torch.equal(rm.morton3D_invert(rm.morton3D(many)), many)

    grid = torch.tensor([[0.0, 2.0, 0.5, 3.0, 0.0, 0.0, 0.0, 9.0, 1.0, 0, 0, 0, 0, 0, 0, 0]])
    assert rm.packbits(grid, 0.9).tolist() == [2 + 8 + 128, 1]

    # One hot cell at (1, 2, 3) of an 8^3 grid dilates to itself and its 6 face neighbours only.
    H = 8
    hot = torch.zeros(1, H ** 3)
    hot[0, int(rm.morton3D(torch.tensor([[1, 2, 3]], dtype=torch.int32)))] = 1
    dilated = rm.morton3D_dilation(hot)
    lit = rm.morton3D_invert(torch.nonzero(dilated[0]).squeeze(1).int())
    expect = {(1, 2, 3), (0, 2, 3), (2, 2, 3), (1, 1, 3), (1, 3, 3), (1, 2, 2), (1, 2, 4)}
    assert {tuple(c) for c in lit.tolist()} == expect

    rays_o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, 2.0, -3.0], [0.5, 0.1, 3.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -2.0]])
    nears, fars = rm.near_far_from_aabb(rays_o, rays_d, AABB, min_near=0.05)
    big = torch.finfo(torch.float32).max
    torch.testing.assert_close(nears, torch.tensor([2.0, 0.05, big, 1.0]), atol=0, rtol=0)
    torch.testing.assert_close(fars, torch.tensor([4.0, 1.0, big, 2.0]), atol=0, rtol=0)

    sph = rm.sph_from_ray(torch.zeros(2, 3), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), 2.0)
    torch.testing.assert_close(sph, torch.tensor([[0.0, 0.0], [-1.0, 0.0]]))


def test_utilities_compiled_equals_torch(ext):
    rays_o, rays_d, bits, nears, fars = random_scene(N=300)
    for got, want in zip(ext.near_far_from_aabb(rays_o, rays_d, AABB, 0.05),
                         _torch_impl.near_far_from_aabb(rays_o, rays_d, AABB, 0.05)):
        assert torch.equal(got, want)
    torch.testing.assert_close(ext.sph_from_ray(rays_o * 0.1, rays_d, 3.0),
                               _torch_impl.sph_from_ray(rays_o * 0.1, rays_d, 3.0), atol=1e-5, rtol=0)
    grid = torch.rand(2, 16 ** 3)
    assert torch.equal(ext.morton3D_dilation(grid), _torch_impl.morton3D_dilation(grid))
    out = torch.empty(2 * 16 ** 3 // 8, dtype=torch.uint8)
    ext.packbits(grid, 0.1, out)  # 0.1 is not a float32: both compare in float32
    ref = torch.empty_like(out)
    _torch_impl.packbits(grid, 0.1, ref)
    assert torch.equal(out, ref)


# ------------------------------------------------------------------- marching
@pytest.mark.parametrize("perturb", [False, True])
@pytest.mark.parametrize("C,H,bound,dt_gamma,max_steps", [(1, 32, 1.0, 1 / 256, 16), (1, 64, 1.0, 0.0, 256),
                                                          (2, 32, 2.0, 1 / 128, 128)])
def test_march_train_compiled_equals_torch(ext, perturb, C, H, bound, dt_gamma, max_steps):
    rays_o, rays_d, bits, nears, fars = random_scene(N=250, H=H, C=C)
    rays_o = rays_o * bound
    nears, fars = _torch_impl.near_far_from_aabb(rays_o, rays_d, AABB * bound, 0.05)
    noise = torch.rand(rays_o.shape[0]) if perturb else None
    args = (rays_o, rays_d, bits, nears, fars, noise, bound, dt_gamma, max_steps, C, H)
    got, want = ext.march_rays_train(*args), _torch_impl.march_rays_train(*args)
    xyzs, dirs, deltas, rays = got
    assert torch.equal(rays, want[3])  # counts and offsets bit-exact
    assert xyzs.shape[0] == int(rays[:, 2].sum()) > 0
    assert torch.equal(rays[:, 0], torch.arange(rays.shape[0], dtype=torch.int32))
    assert torch.equal(rays[1:, 1], (rays[:, 1] + rays[:, 2])[:-1])  # contiguous, in ray order
    assert int(rays[:, 2].max()) <= max_steps
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert xyzs.abs().max() <= bound
    # Samples lie on their rays (up to the clamp into the bound), in order along each ray.
    ray_of = torch.repeat_interleave(rays[:, 0].long(), rays[:, 2].long())
    t = deltas[:, 1] - deltas[:, 0]
    on_ray = (rays_o[ray_of] + t[:, None] * rays_d[ray_of]).clamp(-bound, bound)
    torch.testing.assert_close(xyzs, on_ray, atol=1e-4, rtol=0)
    assert torch.equal(dirs, rays_d[ray_of])


def test_march_inference_compiled_equals_torch(ext):
    rays_o, rays_d, bits, nears, fars = random_scene()
    alive = torch.randperm(rays_o.shape[0])[:150].int()
    rays_t = nears + torch.rand_like(nears) * 0.3
    noise = torch.rand(150)
    for nz in (None, noise):
        args = (alive, rays_t, rays_o, rays_d, bits, nears, fars, nz, 1.0, 1 / 256, 16, 1, 32, 5)
        for a, b in zip(ext.march_rays(*args), _torch_impl.march_rays(*args)):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- compositing
def composite_inputs(dtype=torch.float32, seed=0):
    rays_o, rays_d, bits, nears, fars = random_scene(seed=seed)
    xyzs, dirs, deltas, rays = _torch_impl.march_rays_train(rays_o, rays_d, bits, nears, fars, None, 1.0, 1 / 256,
                                                            64, 1, 32)
    g = torch.Generator().manual_seed(seed)
    M = xyzs.shape[0]
    # Heavy-tailed densities so that many rays stop early on T_thresh.
    sigmas = torch.rand(M, generator=g) ** 4 * 400
    leaves = [sigmas, torch.rand(M, 3, generator=g), torch.rand(M, generator=g), torch.rand(M, generator=g),
              torch.rand(M, generator=g)]
    return [x.to(dtype).requires_grad_() for x in leaves], deltas.to(dtype), rays


@pytest.mark.parametrize("T_thresh", [1e-4, 1e-2])
def test_composite_train_compiled_equals_torch(use_backend, kind, T_thresh):
    (sig, rgb, aud, eye, unc), deltas, rays = composite_inputs()
    results = {}
    for backend in ("torch", kind):
        use_backend(backend, "raymarching")
        out = rm.composite_rays_train(sig, rgb, deltas, rays, T_thresh, ambient_aud=aud, ambient_eye=eye,
                                      uncertainty=unc)
        cot = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(out)]
        grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out, cot)), [sig, rgb, aud, eye, unc])
        results[backend] = out, grads
    (out_t, grad_t), (out_c, grad_c) = results["torch"], results[kind]
    for a, b in zip(out_c, out_t):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # The ambient gradient is the upstream gradient on accumulated samples, 0 past the
    # early stop: equal supports mean identical termination.
    stopped_early = (grad_t[2] == 0).sum()
    assert stopped_early > 100
    assert torch.equal(grad_c[2] == 0, grad_t[2] == 0)
    for a, b in zip(grad_c, grad_t):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_composite_train_gradcheck(backend, select):
    deltas = torch.tensor([[0.1, 0.5], [0.1, 0.6], [0.2, 0.8], [0.1, 0.9], [0.05, 1.0], [0.1, 1.1], [0.1, 1.2],
                           [0.1, 1.3]], dtype=torch.float64)
    rays = torch.tensor([[1, 0, 4], [0, 4, 0], [2, 4, 4]], dtype=torch.int32)
    sigmas = torch.tensor([1.0, 3.0, 0.5, 2.0, 2.0, 400.0, 1.0, 2.0], dtype=torch.float64)  # ray 2 stops at 400
    g = torch.Generator().manual_seed(1)
    leaves = [sigmas] + [torch.rand(8, *s, generator=g, dtype=torch.float64) for s in ((3,), (), (), ())]
    leaves = [x.requires_grad_() for x in leaves]

    def fn(s, c, a, e, u):
        return tuple(rm.composite_rays_train(s, c, deltas, rays, 1e-4, ambient_aud=a, ambient_eye=e,
                                             uncertainty=u))

    select(backend)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)
    out = fn(*leaves)
    assert out[0][2] > 1 - 1e-4 and out[0][1] < 1 - 1e-2  # ray 2 terminated, ray 1 did not
    assert out[0][0] == 0  # the empty ray


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_composite_without_extras(backend, select):
    (sig, rgb, *_), deltas, rays = composite_inputs()
    select(backend)
    out = rm.composite_rays_train(sig.half(), rgb, deltas, rays)
    assert out.image.dtype == torch.float32
    assert out.ambient_aud_sum.abs().sum() == 0 and out.uncertainty_sum.abs().sum() == 0
    grad = torch.autograd.grad(out.image.sum() + out.weights_sum.sum(), sig)[0]
    assert grad.shape == sig.shape and grad.abs().sum() > 0


# -------------------------------------------------------------- closed forms
@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_constant_density_box_matches_closed_form(backend, select):
    select(backend)
    H, sigma, colour = 16, 1.5, torch.tensor([0.2, 0.5, 0.9])
    bits = rm.packbits(torch.ones(1, H ** 3), 0.5)
    g = torch.Generator().manual_seed(3)
    rays_o = torch.rand(64, 3, generator=g) * 0.4 - 0.2 + torch.tensor([0.0, 0.0, -3.0])
    rays_d = torch.nn.functional.normalize(torch.rand(64, 3, generator=g) * 0.1 - 0.05 + torch.tensor([0, 0, 1.0]),
                                           dim=1)
    nears, fars = rm.near_far_from_aabb(rays_o, rays_d, AABB, 0.05)
    assert (fars < 1e30).all()
    max_steps = 1024
    xyzs, dirs, deltas, rays = rm.march_rays_train(rays_o, rays_d, 1.0, bits, 1, H, nears, fars,
                                                   max_steps=max_steps)
    dt = 2 * math.sqrt(3) / max_steps
    M = xyzs.shape[0]
    out = rm.composite_rays_train(torch.full((M,), sigma), colour.expand(M, 3), deltas, rays, T_thresh=0.0)
    L = fars - nears
    alpha = 1 - torch.exp(-sigma * L)
    # Samples cover [near, far + dt): the discretisation error is below one step.
    tol = sigma * dt * torch.exp(-sigma * L) + 1e-5
    assert ((out.weights_sum - alpha).abs() <= tol).all()
    torch.testing.assert_close(out.image, out.weights_sum[:, None] * colour, atol=1e-5, rtol=0)
    mean_t = nears * alpha + (1 - torch.exp(-sigma * L) * (1 + sigma * L)) / sigma
    assert ((out.depth - mean_t).abs() <= 2 * dt).all()


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_empty_grid_renders_background(backend, select):
    select(backend)
    rays_o, rays_d, _, nears, fars = random_scene(N=50)
    empty = torch.zeros(32 ** 3 // 8, dtype=torch.uint8)
    xyzs, dirs, deltas, rays = rm.march_rays_train(rays_o, rays_d, 1.0, empty, 1, 32, nears, fars, max_steps=16)
    assert xyzs.shape == (0, 3) and rays[:, 2].abs().sum() == 0
    out = rm.composite_rays_train(torch.zeros(0), torch.zeros(0, 3), deltas, rays)
    assert out.weights_sum.shape == (50,) and out.weights_sum.abs().sum() == 0 and out.image.abs().sum() == 0
    inf = rm.render_inference(rays_o, rays_d, nears, fars, empty, field, H=32)
    assert inf.weights_sum.abs().sum() == 0 and inf.image.abs().sum() == 0


# ------------------------------------------------------- training vs inference
@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_train_and_inference_loops_agree(backend, select):
    select(backend)
    rays_o, rays_d, bits, nears, fars = random_scene(N=300)
    kw = dict(bound=1.0, C=1, H=32, dt_gamma=1 / 256, max_steps=24)
    for T_thresh in (0.0, 1e-4):
        train, (xyzs, *_) = rm.render_train(rays_o, rays_d, nears, fars, bits, field, T_thresh=T_thresh, **kw)
        infer = rm.render_inference(rays_o, rays_d, nears, fars, bits, field, T_thresh=T_thresh,
                                    max_step_per_call=5, **kw)
        assert xyzs.shape[0] > 1000
        # Inference computes T as 1 - weights_sum and checks it before a sample, so it may add
        # one sample whose weight is below T_thresh (and whose unweighted ambient values then
        # enter the plain sums); without the stop both see the same samples.
        tol = 1e-5 + 2 * T_thresh
        for name in ("weights_sum", "uncertainty_sum", "depth", "image"):
            a, b = getattr(train, name), getattr(infer, name)
            torch.testing.assert_close(a, b, atol=tol * max(1.0, float(b.abs().max())), rtol=0)
        for name, one_sample in (("ambient_aud_sum", 1.0), ("ambient_eye_sum", 0.25)):
            diff = (getattr(infer, name) - getattr(train, name)).abs()
            assert diff.max() <= (1e-5 if T_thresh == 0 else one_sample + 1e-5)


def test_inference_loop_compiled_equals_torch(use_backend, kind):
    rays_o, rays_d, bits, nears, fars = random_scene(N=300)
    noise = torch.rand(300)
    outs = []
    for backend in ("torch", kind):
        use_backend(backend, "raymarching")
        outs.append(rm.render_inference(rays_o, rays_d, nears, fars, bits, field, H=32, max_steps=16,
                                        perturb=True, noise=noise))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_composite_rays_marks_finished_rays(backend, select):
    # Ray 0: two samples then an empty slot (left the box); ray 2: opaque first sample; ray 1: alive.
    sigmas = torch.tensor([1.0, 1.0, 0.0, 1e4, 1.0, 1.0, 1.0, 1.0, 1.0])
    deltas = torch.tensor([[0.1, 1.1], [0.1, 1.2], [0, 0], [0.1, 2.1], [0.1, 2.2], [0.1, 2.3],
                           [0.1, 3.1], [0.1, 3.2], [0.1, 3.3]])
    select(backend)
    alive = torch.tensor([0, 2, 1], dtype=torch.int32)
    rays_t, ws, depth, image = torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3, 3)
    rm.composite_rays(3, 3, alive, rays_t, sigmas, torch.ones(9, 3), deltas, ws, depth, image, T_thresh=1e-2)
    assert alive.tolist() == [-1, -1, 1]
    assert rays_t.tolist() == [0.0, pytest.approx(3.3), 0.0]
    expect0 = 1 - math.exp(-0.2)
    assert ws[0].item() == pytest.approx(expect0, rel=1e-6)
    assert ws[2].item() == pytest.approx(1.0, abs=1e-6)  # opaque: stops after the next sample
    assert ws[1].item() == pytest.approx(1 - math.exp(-0.3), rel=1e-6)


# ---------------------------------------------------------------- CUDA device
@pytest.mark.cuda
def test_cuda_equals_torch(use_backend):
    """The CUDA kernels against the torch reference on the same GPU tensors: marching bit-exact
    (no FMA contraction, IEEE division), compositing and the two loops to float tolerance."""
    require("cuda")
    rays_o, rays_d, bits, nears, fars = (t.cuda() for t in random_scene(N=300))
    noise = torch.rand(300, device="cuda")
    args = (rays_o, rays_d, bits, nears, fars, noise, 1.0, 1 / 256, 64, 1, 32)
    for a, b in zip(BACKENDS.module("cuda").march_rays_train(*args), _torch_impl.march_rays_train(*args)):
        assert torch.equal(a, b)
    (sig, rgb, aud, eye, unc), deltas, rays = composite_inputs()
    leaves = [x.detach().cuda().requires_grad_() for x in (sig, rgb, aud, eye, unc)]
    kw = dict(bound=1.0, C=1, H=32, dt_gamma=1 / 256, max_steps=24, perturb=True, noise=noise)
    results = {}
    for backend in ("torch", "cuda"):
        use_backend(backend, "raymarching")
        out = rm.composite_rays_train(*leaves[:2], deltas.cuda(), rays.cuda(), 1e-4, ambient_aud=leaves[2],
                                      ambient_eye=leaves[3], uncertainty=leaves[4])
        grads = torch.autograd.grad(sum(o.sum() for o in out), leaves)
        train, _ = rm.render_train(rays_o, rays_d, nears, fars, bits, field, **kw)
        infer = rm.render_inference(rays_o, rays_d, nears, fars, bits, field, **kw)
        results[backend] = [*out, *grads, *train, *infer]
    for a, b in zip(results["cuda"], results["torch"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors(use_backend, kind, ext):
    use_backend(kind, "raymarching")
    rays_o, rays_d, bits, nears, fars = random_scene(N=20)
    with pytest.raises(ValueError, match="rays_o must be .*torch.float32, got torch.float64"):
        rm.near_far_from_aabb(rays_o.double(), rays_d, AABB)
    with pytest.raises(ValueError, match=r"rays_d must have shape \[20, 3\]"):
        rm.march_rays_train(rays_o, rays_d[:5], 1.0, bits, 1, 32, nears, fars)
    with pytest.raises(ValueError, match="power of two"):
        rm.march_rays_train(rays_o, rays_d, 1.0, bits, 1, 24, nears, fars)
    with pytest.raises(ValueError, match="density_bitfield must have shape"):
        rm.march_rays_train(rays_o, rays_d, 1.0, bits[:-1], 1, 32, nears, fars)
    with pytest.raises(ValueError, match="move all inputs to one device"):
        rm.march_rays_train(rays_o, rays_d, 1.0, bits, 1, 32, nears.to("meta"), fars)
    with pytest.raises(ValueError, match="noise is only used with perturb=True"):
        rm.march_rays_train(rays_o, rays_d, 1.0, bits, 1, 32, nears, fars, noise=torch.rand(20))
    with pytest.raises(ValueError, match="max_steps"):
        rm.march_rays_train(rays_o, rays_d, 1.0, bits, 1, 32, nears, fars, max_steps=0)
    with pytest.raises(ValueError, match="offset \\+ count"):
        rm.composite_rays_train(torch.rand(4), torch.rand(4, 3), torch.rand(4, 2),
                                torch.tensor([[0, 2, 3]], dtype=torch.int32))
    with pytest.raises(ValueError, match="must be given together"):
        rm.composite_rays(1, 1, torch.zeros(1, dtype=torch.int32), torch.zeros(1), torch.rand(1), torch.rand(1, 3),
                          torch.rand(1, 2), torch.zeros(1), torch.zeros(1), torch.zeros(1, 3),
                          ambient_aud=torch.rand(1))
    with pytest.raises(ValueError, match="updated in place and must be contiguous"):
        rm.composite_rays(1, 1, torch.zeros(1, dtype=torch.int32), torch.zeros(1), torch.rand(1), torch.rand(1, 3),
                          torch.rand(1, 2), torch.zeros(1), torch.zeros(1), torch.zeros(1, 6)[:, ::2])
    # The compiled entry points check their arguments too (RuntimeError from TORCH_CHECK).
    with pytest.raises(RuntimeError, match="rays_o must be Float"):
        ext.near_far_from_aabb(rays_o.double(), rays_d, AABB, 0.05)
    with pytest.raises(RuntimeError, match="density_bitfield must have C\\*H\\^3/8"):
        ext.march_rays_train(rays_o, rays_d, bits[:8], nears, fars, None, 1.0, 0.0, 16, 1, 32)
