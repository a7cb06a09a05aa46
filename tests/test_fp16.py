"""The fp16 path (``-O`` on a GPU) run on the CPU: float16 autocast, grad scaling, kernel dtypes.

``ERNERF_CPU_FP16=1`` makes the trainer honour ``--fp16`` on the CPU (CPU autocast to
float16 and ``torch.amp.GradScaler("cpu")``), so a training step, a resume and a render
go through the same casts as under ``-O`` on CUDA, and the dtypes reaching each kernel are
recorded: the network runs in float16, the renderer and the kernel wrappers hand every kernel
float32 (on CUDA the torso's hash table is also float16; the head's planes, one channel per
level, stay float32). What this cannot show: float16 numerics of GPU kernels (tensor cores,
half hash tables, atomics). CPU autocast keeps more ops in float16 than CUDA autocast (exp,
sum, norm, softmax stay float16 on the CPU), so it is the harsher of the two.
"""
import importlib
import math

import pytest
import torch

import raymarching
from gridencoder import GridEncoder
from nerf_triplane.options import parse_args
from nerf_triplane.trainer import CPU_FP16_ENV
from shencoder import SHEncoder
from tests.conftest import build_trainer, take_steps, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")

# Kernel entry points of the compiled modules and of the torch references (the torch
# backend's grid and SH encoders are single autograd functions).
KERNELS = {
    "gridencoder": ("grid_encode_forward", "grid_encode_backward", "grid_encode"),
    "shencoder": ("sh_encode_forward", "sh_encode_backward", "sh_encode"),
    "raymarching": ("near_far_from_aabb", "sph_from_ray", "morton3D", "morton3D_invert", "packbits",
                    "morton3D_dilation", "march_rays_train", "composite_rays_train_forward",
                    "composite_rays_train_backward", "march_rays", "composite_rays"),
}


@pytest.fixture
def kernel_dtypes(monkeypatch):
    """``record(device)`` wraps the kernels of the backend chosen for ``device`` and returns a
    dict filled as they run: ``"pkg.kernel" -> set of floating dtypes of its tensor arguments``."""

    def record(device: str) -> dict:
        seen = {}
        for pkg, names in KERNELS.items():
            _, module = importlib.import_module(f"{pkg}.backend").BACKENDS.get(device)
            target = module if module is not None else importlib.import_module(f"{pkg}._torch_impl")
            for name in names:
                if hasattr(target, name):
                    monkeypatch.setattr(target, name, _recorder(seen, f"{pkg}.{name}", getattr(target, name)))
        return seen

    return record


def _recorder(seen: dict, key: str, fn):
    def call(*args, **kwargs):
        dtypes = seen.setdefault(key, set())
        dtypes.update(a.dtype for a in (*args, *kwargs.values())
                      if isinstance(a, torch.Tensor) and a.is_floating_point())
        return fn(*args, **kwargs)

    return call


def check_kernels(seen: dict, *also: str) -> None:
    """Every recorded kernel got float32 tensors only, and the grid and SH encoders, the marching,
    compositing and occupancy kernels and ``also`` all ran."""
    assert all(d <= {torch.float32} for d in seen.values()), seen
    names = {k.split(".", 1)[1] for k in seen}
    assert {"march_rays_train", "composite_rays_train_forward", "march_rays", "composite_rays", "packbits",
            "morton3D_dilation", *also} <= names, names
    assert names & {"grid_encode", "grid_encode_forward"} and names & {"sh_encode", "sh_encode_forward"}, names


def run_kernels(cast) -> dict:
    """Every kernel wrapper once, floating inputs passed through ``cast``; returns the outputs
    and the gradients of the differentiable inputs."""
    g = torch.Generator().manual_seed(0)
    C, H, N = 1, 16, 64
    grid = cast(torch.rand(C, H ** 3, generator=g))
    bitfield = raymarching.packbits(grid, 0.5)
    origins = torch.cat([torch.rand(N, 2, generator=g) - 0.5, torch.full((N, 1), -2.0)], dim=-1)
    rays_o = cast(origins)
    forward = torch.rand(N, 3, generator=g) * 0.2 + torch.tensor([0, 0, 1.0])
    rays_d = cast(torch.nn.functional.normalize(forward, dim=-1))
    nears, fars = raymarching.near_far_from_aabb(rays_o, rays_d, [-1, -1, -1, 1, 1, 1], 0.05)
    out = {"bitfield": bitfield, "dilation": raymarching.morton3D_dilation(grid), "nears": nears, "fars": fars,
           "sph": raymarching.sph_from_ray(cast(origins * 0.1), rays_d, 1.0)}
    nears, fars = cast(nears), cast(fars)
    kw = dict(bound=1.0, density_bitfield=bitfield, C=C, H=H, dt_gamma=0.0, max_steps=32)
    xyzs, dirs, deltas, rays = raymarching.march_rays_train(rays_o, rays_d, nears=nears, fars=fars, perturb=True,
                                                            noise=cast(torch.rand(N, generator=g)), **kw)
    M = xyzs.shape[0]
    sigmas = cast(torch.rand(M, generator=g) * 10).requires_grad_()
    rgbs = cast(torch.rand(M, 3, generator=g)).requires_grad_()
    uncertainty = cast(torch.rand(M, generator=g))
    comp = raymarching.composite_rays_train(sigmas, rgbs, cast(deltas), rays, 1e-4, uncertainty=uncertainty)
    (comp.image.sum() + comp.depth.sum()).backward()
    out.update(xyzs=xyzs, deltas=deltas, image=comp.image, v_sigmas=sigmas.grad, v_rgbs=rgbs.grad)

    alive, rays_t = torch.arange(N, dtype=torch.int32), nears.float().clone()
    xyzs, _, deltas = raymarching.march_rays(N, 2, alive, rays_t, rays_o, rays_d, nears=nears, fars=fars, **kw)
    image, weights, depth = torch.zeros(N, 3), torch.zeros(N), torch.zeros(N)
    raymarching.composite_rays(N, 2, alive, rays_t, cast(torch.rand(2 * N, generator=g)),
                               cast(torch.rand(2 * N, 3, generator=g)), cast(deltas), weights, depth, image)
    out.update(infer_xyzs=xyzs, infer_image=image, infer_depth=depth)

    for name, encoder, x in (("grid", GridEncoder(input_dim=3, num_levels=4, level_dim=2, base_resolution=4,
                                                  log2_hashmap_size=10), torch.rand(N, 3, generator=g) * 2 - 1),
                             ("sh", SHEncoder(degree=4), rays_d.float())):
        x = cast(x).detach().requires_grad_()
        y = encoder(x)
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        out.update({name: y, f"v_{name}": x.grad})
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_kernel_wrappers_take_half_inputs(dtype, kernel_dtypes):
    """Half inputs give the float32 results of the same (rounded) values, the kernels see
    float32 only, and gradients come back in the inputs' dtype."""
    torch.manual_seed(0)
    want = run_kernels(lambda t: t.to(dtype).float())
    seen = kernel_dtypes("cpu")
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=dtype):
        got = run_kernels(lambda t: t.to(dtype))
    for key, value in want.items():
        if key.startswith("v_"):
            assert got[key].dtype == dtype, key
            value = value.to(dtype)
        assert torch.equal(got[key], value), key
    check_kernels(seen, "near_far_from_aabb", "sph_from_ray")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fp16_training_resume_and_render(subject, tmp_path, monkeypatch, kernel_dtypes, device):
    monkeypatch.setenv(CPU_FP16_ENV, "1")
    args = tiny_args(subject, tmp_path, "--train_camera", "--iters", 30, "--device", device)
    seen = kernel_dtypes(device)
    trainer, loader, _ = build_trainer(parse_args(args))
    net_dtypes = set()
    trainer.model.sigma_net.register_forward_hook(lambda module, inputs, out: net_dtypes.add(out.dtype))
    assert trainer.fp16 and trainer.scaler.is_enabled()

    losses = take_steps(trainer, loader, range(3))
    trainer.scaler.update(1024.0)  # a loss scale the checkpoint must carry
    trainer.save_checkpoint(in_epoch=True)
    losses += take_steps(trainer, loader, [3])
    assert all(math.isfinite(v) for v in losses), losses

    resumed, loader, val_loader = build_trainer(parse_args(args))
    assert resumed.load_checkpoint("latest") is not None
    assert resumed.scaler.get_scale() == 1024.0
    # The resumed step repeats the original one (same weights, scale, RNG and batch).
    assert take_steps(resumed, loader, [3]) == pytest.approx(losses[3:], rel=1e-6)
    rgb, depth = resumed.render_frame(val_loader.collate_fn([0]), testing=True)
    assert rgb.shape == (64, 64, 3) and torch.isfinite(rgb).all() and torch.isfinite(depth).all()

    # The network ran in float16, and every kernel got float32 from the wrappers and renderer.
    assert net_dtypes == {torch.float16}
    check_kernels(seen)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_paper_preset_mouth_target_trains_under_fp16(subject, tmp_path, monkeypatch, device):
    """The ``paper`` preset's head (mouth target and its pretraining on, the reference's
    per-frame codes kept) fits its audio path and takes steps under the fp16 autocast of a
    CUDA run: the audio code's mouth channels move toward the measured shapes."""
    from nerf_triplane.presets import stage_settings

    monkeypatch.setenv(CPU_FP16_ENV, "1")
    paper = stage_settings("paper", "head")
    assert paper["mouth_sup"] > 0 and paper["mouth_pretrain"] > 0
    args = tiny_args(subject, tmp_path, "--iters", 10, "--device", device, "--mouth_sup", paper["mouth_sup"],
                     "--mouth_pretrain", 40)
    trainer, loader, _ = build_trainer(parse_args(args))
    assert trainer.fp16 and trainer.model.individual_dim > 0
    dataset = loader._data
    trainer.set_train_data(dataset)
    sup_positions = list(range(dataset.num_frames))
    from nerf_triplane.mouth import MouthSupervision

    probe = MouthSupervision(dataset.landmarks, dataset.get_audio_window, trainer.opt.mouth_k)
    with torch.no_grad():
        before = probe.loss(trainer.model, 0, positions=sup_positions).item()
    trainer.prepare_training(dataset)
    assert trainer.mouth is not None
    with torch.no_grad():
        after = probe.loss(trainer.model, 0, positions=sup_positions).item()
    losses = take_steps(trainer, loader, range(3))
    assert all(math.isfinite(v) for v in losses), losses
    assert after < 0.7 * before, (before, after)
