"""Whole-model parity of the kernel backends (issue 13, item 1.11): the torch reference vs the
C++ CPU backends of gridencoder, shencoder and raymarching, driven through ``NeRFNetwork``.

From the same weights, batches and seeds, each backend (``ERNERF_BACKEND=torch|cpp``)
  * renders a full 32x32 test frame with ``-O`` (occupancy-grid marching, inference loop),
  * refreshes the occupancy grid (``update_extra_state``: density of every cell, dilation,
    packbits),
  * takes the forward and backward of one training step (training marcher, 256 rays, every
    loss term: uncertainty, ambient audio/eye, and the smoothness regulariser, which runs
    on steps that are multiples of 16),
and the torso branch does the same (torso grid refresh, torso training step, full frame of
head + torso). The head is first trained for 60 steps (default backend), then its density
output is sharpened (row of the last sigma layer x5, i.e. sigma -> sigma^5): a 60-step head is
still translucent, and the sharpened one has rays that terminate early (transmittance below
1e-4; 24 of the 1024 rays) as a fully trained head's do, so that path is compared too.

Measured torch-vs-C++ differences (2-core x86 CPU, one thread), and the tolerances: 20x or
more above them, and the image one still 400x below one 8-bit level (1/255):
    image, weights_sum, depth, torso alpha  <= 1.2e-7, 1.2e-7, 4.7e-7, 0   atol 1e-5
    (all in [0, 1])
    training loss                           relative <= 8e-8             rtol 1e-5
    gradients, per parameter tensor         max |diff| <= 3.3e-6 x       1e-4 x
                                            that tensor's max |grad|
    occupancy grid (head, torso)            0                            rtol 1e-5, atol 1e-6
    occupancy bitfield                      identical                    identical
Runtime: 5-12 s for both tests on the busy 2-core machine, 3.5-7 s of it the shared setup.
"""
from __future__ import annotations

import copy

import pytest
import torch

from data_utils.synthetic import make_synthetic_subject
from nerf_triplane.network import NeRFNetwork
from nerf_triplane.options import parse_args
from nerf_triplane.provider import NeRFDataset
from nerf_triplane.trainer import Trainer
from tests.conftest import single_thread

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, FRAMES = 32, 11  # 10 train + 1 test frame
PRETRAIN_STEPS = 60
DENSITY_SHARPEN = 5.0
IMAGE_ATOL = 1e-5
LOSS_RTOL = 1e-5
GRAD_REL = 1e-4
GRID_RTOL, GRID_ATOL = 1e-5, 1e-6


def options(folder, workspace, *extra):
    return parse_args([str(folder), "--workspace", str(workspace), "-O", "--num_rays", "256", "--grid_size", "32",
                       "--ind_num", "16", *map(str, extra)])


def attach(model, train: NeRFDataset) -> None:
    """Give the model the training-set audio, eye areas and poses its grid refresh draws from."""
    model.aud_features, model.eye_area, model.poses = train.auds, train.eye_area, train.poses


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(subject folder, head model) on a 32x32 synthetic subject: trained PRETRAIN_STEPS steps,
    then its density sharpened (see the module docstring) and its occupancy grid refreshed."""
    root = tmp_path_factory.mktemp("parity")
    with single_thread():
        folder = make_synthetic_subject(root / "subject", n_frames=FRAMES, size=SIZE, seed=0)
        opt = options(folder, root / "pretrain", "--iters", PRETRAIN_STEPS)
        train = NeRFDataset(opt, device="cpu", type="train")
        torch.manual_seed(0)
        model = NeRFNetwork(opt, audio_dim=train.audio_dim)
        assert Trainer(opt, model, root / "pretrain", "cpu").train(train.dataloader())
        with torch.no_grad():
            # sigma = exp(h0): scaling h0's row raises sigma to a power, dense stays dense.
            model.sigma_net.net[-1].weight[0] *= DENSITY_SHARPEN
        torch.manual_seed(2)
        model.update_extra_state()
    return folder, model


def run_backend(backend: str, use_backend, base, opt, train, batch, frame, workspace) -> dict:
    """Outputs of one backend on a copy of ``base``: frame, refreshed grid, one step's loss and grads."""
    use_backend(backend)
    model = copy.deepcopy(base)
    attach(model, train)
    trainer = Trainer(opt, model, workspace / backend, "cpu", train=True)
    model.eval()
    with torch.no_grad():
        out = model.render(frame["rays_o"], frame["rays_d"], frame["auds"], frame["bg_coords"], frame["poses"],
                           eye=frame["eye"], bg_color=frame["bg_color"], max_steps=opt.max_steps)
    image = {k: out[k] for k in ("image", "depth", "weights_sum", "torso_alpha") if k in out}

    refreshed = copy.deepcopy(model)
    torch.manual_seed(4)
    refreshed.update_extra_state()
    grids = {name: buf.clone() for name, buf in refreshed.named_buffers() if name.startswith("density_")}

    model.train()
    # Halfway through the schedule every loss term has a non-zero weight, and the step is a
    # multiple of 16, so the smoothness regulariser runs too.
    trainer.global_step = opt.iters // 2
    assert trainer.global_step % 16 == 0
    torch.manual_seed(1)  # the marcher's start jitter and the regulariser's jitter
    _, _, loss = trainer.train_step(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"image": image, "loss": loss.item(), "grads": grads, "grids": grids}


def assert_same(ref: dict, other: dict) -> None:
    for key, value in ref["image"].items():
        torch.testing.assert_close(other["image"][key], value, atol=IMAGE_ATOL, rtol=0, msg=key)
    assert other["loss"] == pytest.approx(ref["loss"], rel=LOSS_RTOL)
    assert other["grads"].keys() == ref["grads"].keys()
    for name, g in ref["grads"].items():
        scale = float(g.abs().max())
        err = float((other["grads"][name] - g).abs().max())
        assert err <= GRAD_REL * scale, f"{name}: gradients differ by {err:.3e} (largest gradient {scale:.3e})"
    assert other["grids"].keys() == ref["grids"].keys()
    for name, grid in ref["grids"].items():
        if grid.dtype == torch.uint8:
            assert torch.equal(other["grids"][name], grid), name
        else:
            torch.testing.assert_close(other["grids"][name], grid, rtol=GRID_RTOL, atol=GRID_ATOL, msg=name)


def test_head_frame_grid_and_step_match(pretrained, use_backend, tmp_path):
    folder, base = pretrained
    opt = options(folder, tmp_path)
    train = NeRFDataset(opt, device="cpu", type="train")
    frame = NeRFDataset(opt, device="cpu", type="test").collate([0])
    torch.manual_seed(3)
    batch = train.collate([0])
    results = {b: run_backend(b, use_backend, base, opt, train, batch, frame, tmp_path) for b in ("torch", "cpp")}
    # The frame must show the head, with rays that terminate early (transmittance < 1e-4).
    weights = results["torch"]["image"]["weights_sum"]
    hit, opaque = float((weights > 0.01).float().mean()), int((weights > 1 - 1e-4).sum())
    assert hit > 0.05 and opaque >= 10, f"{hit:.1%} of the rays hit the head, {opaque} terminate early"
    assert_same(results["torch"], results["cpp"])


def test_torso_frame_grid_and_step_match(pretrained, use_backend, tmp_path):
    folder, head = pretrained
    opt = options(folder, tmp_path, "--torso")
    train = NeRFDataset(opt, device="cpu", type="train")
    frame = NeRFDataset(opt, device="cpu", type="test").collate([0])
    torch.manual_seed(0)
    base = NeRFNetwork(opt, audio_dim=train.audio_dim)
    missing, _ = base.load_state_dict(head.state_dict(), strict=False)
    assert missing and all(k.startswith(("torso_", "anchor_", "individual_codes_torso", "density_grid_torso"))
                           for k in missing)
    base.mean_density = head.mean_density
    attach(base, train)
    # An empty torso grid would leave the torso unrendered: refresh it once for both backends.
    torch.manual_seed(2)
    base.update_extra_state()
    torch.manual_seed(3)
    batch = train.collate([0])
    results = {b: run_backend(b, use_backend, base, opt, train, batch, frame, tmp_path) for b in ("torch", "cpp")}
    assert results["torch"]["grads"].keys() >= {"torso_encoder.embeddings", "anchor_points"}
    torso = float((results["torch"]["image"]["torso_alpha"] > 0.1).float().mean())
    assert torso > 0.1, f"the torso covers only {torso:.1%} of the frame"
    assert_same(results["torch"], results["cpp"])
