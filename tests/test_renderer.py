"""NeRFRenderer on analytic scenes: compositing, occupancy grids, torso order (CPU, small)."""
import math

import pytest
import torch
import torch.nn.functional as F

import raymarching
from nerf_triplane.network import NeRFNetwork
from nerf_triplane.options import parse_args
from nerf_triplane.provider import audio_window
from nerf_triplane.renderer import composite_dense, near_far_from_aabb

RADIUS = 0.3
COLOUR = torch.tensor([0.2, 0.6, 0.9])
BG = torch.tensor([0.1, 0.1, 0.1])


def make_model(*flags, grid_size=16):
    opt = parse_args(["unused_folder", "--grid_size", str(grid_size), "--ind_num", "8", *flags])
    model = NeRFNetwork(opt, audio_dim=32)
    model.aud_features = torch.randn(6, 32, 16)
    model.eye_area = torch.rand(6, 1)
    model.poses = torch.eye(4).repeat(6, 1, 1)
    return model


def use_sphere(model, sigma_in):
    """Replace the head by a sphere of radius RADIUS, density sigma_in and colour COLOUR."""

    def sigma_of(x):
        return torch.where(x.norm(dim=-1) < RADIUS, sigma_in, 0.0)

    def forward(x, d, enc_a, c, e=None):
        n = x.shape[0]
        return sigma_of(x), COLOUR.expand(n, 3), torch.ones(n, 1), torch.full((n, 1), 0.5), torch.full((n,), 2.0)

    def density(x, enc_a, e=None, enc_x=None):
        return {"sigma": sigma_of(x)}

    model.forward = forward
    model.density = density


def rays_towards_minus_z(offsets):
    """Rays from (x, y, 2) along -z; offsets [N, 2] -> rays_o, rays_d [1, N, 3]."""
    n = offsets.shape[0]
    rays_o = torch.cat([offsets, torch.full((n, 1), 2.0)], dim=-1)[None]
    rays_d = torch.tensor([0.0, 0.0, -1.0]).expand(1, n, 3).contiguous()
    return rays_o, rays_d


def render(model, rays_o, rays_d, **kw):
    n = rays_o.shape[1]
    args = dict(auds=torch.randn(8, 32, 16), bg_coords=torch.zeros(1, n, 2), poses=torch.eye(4)[None],
                bg_color=BG, eye=torch.tensor([[0.5]]))
    args.update(kw)
    return model.render(rays_o, rays_d, **args)


OFFSETS = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.2], [0.25, 0.0], [0.6, 0.0]])


def closed_form_opacity(sigma_in):
    rho2 = (OFFSETS ** 2).sum(-1)
    chord = 2 * torch.sqrt((RADIUS ** 2 - rho2).clamp(min=0))
    return 1 - torch.exp(-sigma_in * chord)


def test_audio_window_padding():
    feats = torch.arange(1, 7, dtype=torch.float32)[:, None, None].expand(6, 2, 3)
    assert audio_window(feats, 0, 3)[:, 0, 0].tolist() == [4]
    assert audio_window(feats, 1, 2)[:, 0, 0].tolist() == [0] * 6 + [1, 2]
    assert audio_window(feats, 2, 0)[:, 0, 0].tolist() == [0] * 4 + [1, 2, 3, 4]
    assert audio_window(feats, 2, 5)[:, 0, 0].tolist() == [2, 3, 4, 5, 6, 0, 0, 0]


def test_near_far_and_miss():
    aabb = torch.tensor([-1.0, -0.5, -1.0, 1.0, 0.5, 1.0])
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    nears, fars = near_far_from_aabb(o, d, aabb, 0.05)
    torch.testing.assert_close(nears, torch.tensor([1.0, nears[1], 0.05]))
    torch.testing.assert_close(fars, torch.tensor([3.0, nears[1], 1.0]))


def test_near_far_of_half_rays_matches_float32():
    # A ray parallel to x starting on the box's x face: with the guard in half precision
    # (1e-15 -> 0) its slab distance was 0 * inf = NaN.
    aabb = torch.tensor([-1.0, -0.5, -1.0, 1.0, 0.5, 1.0])
    o = torch.tensor([[1.0, 0.0, 2.0], [0.25, 0.5, 2.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    want = near_far_from_aabb(o, d, aabb, 0.05)
    got = near_far_from_aabb(o.half(), d.half(), aabb, 0.05)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and torch.equal(g, w), (g, w)


def test_camera_refinement_stays_float32_under_autocast():
    model = make_model("--train_camera").train()
    with torch.no_grad():
        model.camera_dR[2] = torch.tensor([1.0, -2.0, 0.5])
    o, d = torch.randn(64, 3), F.normalize(torch.randn(64, 3), dim=-1)
    want = model._refine_camera(o, d, 2)
    with torch.autocast("cpu", dtype=torch.float16):
        got = model._refine_camera(o, d, 2)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and torch.equal(g, w)


def test_composite_dense_stops_after_opaque_sample():
    sigmas = torch.tensor([[0.0, 1e4, 1.0, 1.0]])
    weights, used = composite_dense(sigmas, torch.full((1, 4), 0.1), 1e-4)
    assert used.tolist() == [[True, True, False, False]]
    torch.testing.assert_close(weights, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("cuda_ray", [False, True])
def test_translucent_sphere_matches_closed_form(cuda_ray):
    sigma_in = 3.0
    flags = ["--num_steps", "512"] + (["--cuda_ray"] if cuda_ray else [])
    model = make_model(*flags).eval()
    use_sphere(model, sigma_in)
    if cuda_ray:
        model.update_extra_state()
    rays_o, rays_d = rays_towards_minus_z(OFFSETS)
    with torch.no_grad():
        out = render(model, rays_o, rays_d, max_steps=1024)
    opacity = closed_form_opacity(sigma_in)
    torch.testing.assert_close(out["weights_sum"][0], opacity, atol=0.02, rtol=0)
    expected = COLOUR * opacity[:, None] + BG * (1 - opacity[:, None])
    torch.testing.assert_close(out["image"][0], expected, atol=0.02, rtol=0)
    torch.testing.assert_close(out["uncertainty"][0], 2.0 * out["weights_sum"][0])
    # The last ray misses the sphere: no occupied cells to march, or 512 free-space samples.
    assert float(out["ambient_aud"][0, -1]) == (0.0 if cuda_ray else 512.0)
    assert (out["ambient_eye"][0] <= out["ambient_aud"][0]).all()


@pytest.mark.parametrize("cuda_ray", [False, True])
def test_opaque_sphere_depth(cuda_ray):
    flags = ["--num_steps", "512"] + (["--cuda_ray"] if cuda_ray else [])
    model = make_model(*flags).eval()
    use_sphere(model, 500.0)
    if cuda_ray:
        model.update_extra_state()
    rays_o, rays_d = rays_towards_minus_z(OFFSETS[:3])
    with torch.no_grad():
        out = render(model, rays_o, rays_d, max_steps=1024)
    hit = 2 - torch.sqrt(RADIUS ** 2 - (OFFSETS[:3] ** 2).sum(-1))
    # near = 1, far = 3 for these rays
    torch.testing.assert_close(out["depth"][0], (hit - 1) / 2, atol=0.01, rtol=0)
    torch.testing.assert_close(out["weights_sum"][0], torch.ones(3), atol=1e-3, rtol=0)


def test_update_extra_state_marks_the_sphere():
    model = make_model("--cuda_ray", grid_size=16).eval()
    use_sphere(model, 20.0)
    model.update_extra_state()
    H = model.grid_size
    coords = raymarching.morton3D_invert(torch.arange(H ** 3, dtype=torch.int32)).long()
    centres = (2 * coords.float() / (H - 1) - 1) * (1 - 1 / H)
    dist = centres.norm(dim=-1)
    grid = model.density_grid[0]
    bits = ((model.density_bitfield[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1).bool()
    assert (grid[dist < RADIUS - 0.1] == 20.0).all() and bits[dist < RADIUS - 0.1].all()
    far = dist > RADIUS + 0.3
    assert (grid[far] == 0).all() and not bits[far].any()
    assert 0 < model.mean_density < 20.0
    # Decayed running max: an empty scene halves nothing but the decay.
    use_sphere(model, 0.0)
    model.update_extra_state(decay=0.5)
    assert (model.density_grid[0][dist < RADIUS - 0.1] == 10.0).all()


def test_grid_refresh_block_size_does_not_change_the_grid():
    # The refresh evaluates its cells in blocks (cache-sized on the CPU): any block size, same grid.
    grids = []
    for block in (16 ** 3, 100):
        torch.manual_seed(0)
        model = make_model("--cuda_ray", grid_size=16).eval()
        model.grid_block = block
        model.update_extra_state()
        grids.append((model.density_grid.clone(), model.density_bitfield.clone()))
    torch.testing.assert_close(grids[0][0], grids[1][0], rtol=1e-5, atol=1e-6)
    assert torch.equal(grids[0][1], grids[1][1])


@pytest.mark.parametrize("frac", [0.1, 0.5])
def test_partial_grid_refresh(frac):
    from nerf_triplane.renderer import GRID_FULL_REFRESHES

    model = make_model("--cuda_ray", "--grid_sample", str(frac), grid_size=16).eval()
    use_sphere(model, 20.0)
    H3 = 16 ** 3
    unseen = torch.zeros(H3, dtype=torch.bool)
    unseen[::7] = True
    old = torch.where(unseen, -1.0, 4.0)[None]
    # Warm-up: every cell is evaluated, so every seen cell moves off its old value.
    model.density_grid.copy_(old)
    model.update_extra_state()
    assert (model.density_grid[0][~unseen] != 4.0).all()
    assert (model.density_grid[0][unseen] == -1).all()
    # After the warm-up a refresh evaluates about frac * H³ cells (the dilation reaches their
    # neighbours): the rest keep their value, undecayed; unseen cells stay -1.
    model.iter_density = GRID_FULL_REFRESHES
    model.density_grid.copy_(old)
    model.update_extra_state()
    grid = model.density_grid[0]
    changed = (grid != 4.0) & ~unseen
    assert 0.3 * frac * H3 < int(changed.sum()) < 7 * frac * H3
    assert (grid[~changed & ~unseen] == 4.0).all() and (grid[unseen] == -1).all()
    assert model.iter_density == GRID_FULL_REFRESHES + 1


def test_mark_untrained_grid():
    model = make_model("--cuda_ray", grid_size=16)
    pose = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    pose[2, 3] = 3.0
    model.mark_untrained_grid(pose[None], torch.tensor([100.0, 100.0, 10.0, 10.0]), S=8)
    H = model.grid_size
    wanted = torch.tensor([[H // 2, H // 2, H // 2], [H - 1, H // 2, H // 2], [0, 0, 0]], dtype=torch.int32)
    idx = raymarching.morton3D(wanted).long()
    assert model.density_grid[0, idx].tolist() == [0.0, -1.0, -1.0]


def look_at(eye):
    """Camera-to-world [4, 4] at ``eye`` [3] whose +z (viewing) axis points at the origin."""
    z = torch.nn.functional.normalize(-eye, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), z), dim=0)
    pose = torch.eye(4)
    pose[:3, :3] = torch.stack([x, torch.linalg.cross(z, x), z], dim=1)
    pose[:3, 3] = eye
    return pose


def test_mark_untrained_grid_matches_per_cell_test():
    model = make_model("--cuda_ray", "--bound", "2", grid_size=16)
    g = torch.Generator().manual_seed(3)
    eyes = torch.nn.functional.normalize(torch.randn(7, 3, generator=g), dim=-1) * 3
    poses = torch.stack([look_at(e) for e in eyes])
    poses[-1, :3, :3] *= -1  # a camera looking away from the scene (and mirrored)
    fx, fy, cx, cy = 60.0, 70.0, 16.0, 12.0
    model.mark_untrained_grid(poses, torch.tensor([fx, fy, cx, cy]), S=3)
    H = model.grid_size
    coords = raymarching.morton3D_invert(torch.arange(H ** 3, dtype=torch.int32)).float()
    for cas in range(model.cascade):
        b = min(2 ** cas, model.bound)
        half = b / H
        p = (2 * coords / (H - 1) - 1) * (b - half)
        cam = torch.einsum("mk,nkj->nmj", p, poses[:, :3, :3]) \
            - torch.einsum("nk,nkj->nj", poses[:, :3, 3], poses[:, :3, :3])[:, None]
        x, y, z = cam.unbind(-1)
        seen = ((z > 0) & (x.abs() < cx / fx * z + 2 * half) & (y.abs() < cy / fy * z + 2 * half)).any(0)
        unseen = model.density_grid[cas] < 0
        assert 0 < int(unseen.sum()) < H ** 3
        assert int((unseen == seen).sum()) <= 2, "cells disagree with the per-cell frustum test"


@pytest.mark.parametrize("cuda_ray", [False, True])
def test_training_and_inference_agree(cuda_ray):
    model = make_model(*(["--cuda_ray"] if cuda_ray else []), "--exp_eye")
    model.density_grid.fill_(1.0)
    model.density_bitfield.copy_(raymarching.packbits(model.density_grid, 0.5))
    g = torch.Generator().manual_seed(1)
    rays_o = torch.tensor([0.0, 0.0, 2.0]) + 0.2 * torch.randn(1, 40, 3, generator=g)
    rays_d = torch.tensor([0.0, 0.0, -1.0]) + 0.2 * torch.randn(1, 40, 3, generator=g)
    rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    auds = torch.randn(8, 32, 16)
    model.train()
    train = render(model, rays_o, rays_d, auds=auds, index=0)
    train["image"].sum().backward()
    assert model.sigma_net.net[0].weight.grad.abs().sum() > 0
    assert model.individual_codes.grad[0].abs().sum() > 0
    xyzs, dirs, enc_a, code, eye = train["rays"]
    assert xyzs.shape == dirs.shape and enc_a.shape == (1, 32) and code.shape == (1, 4) and eye.shape == (1, 1)
    model.eval()
    with torch.no_grad():
        infer = render(model, rays_o, rays_d, auds=auds)
    for key in ("image", "depth", "weights_sum", "uncertainty"):
        torch.testing.assert_close(infer[key], train[key].detach(), atol=1e-3, rtol=0)


def test_stratified_chunking_is_invisible():
    model = make_model("--max_ray_batch", "7").eval()
    rays_o, rays_d = rays_towards_minus_z(torch.rand(20, 2) * 0.6 - 0.3)
    with torch.no_grad():
        small = render(model, rays_o, rays_d)
        model.opt.max_ray_batch = 4096
        whole = render(model, rays_o, rays_d)
    for key in small:
        torch.testing.assert_close(small[key], whole[key])


def use_half_torso(model):
    """Torso of alpha 0.5 and pure red wherever bg_coords[..., 0] > 0."""

    def forward_torso(x, poses, c=None):
        alpha = (x[:, :1] > 0).float() * 0.5
        return alpha, torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3), torch.zeros_like(x)

    model.forward_torso = forward_torso


def test_torso_under_head_over_background():
    model = make_model("--torso").eval()
    use_sphere(model, 3.0)
    use_half_torso(model)
    model.density_grid_torso.fill_(1.0)
    model.mean_density_torso = 1.0
    rays_o, rays_d = rays_towards_minus_z(OFFSETS)
    bg_coords = torch.tensor([[0.5, 0.0]]).expand(1, len(OFFSETS), 2)
    with torch.no_grad():
        out = render(model, rays_o, rays_d, bg_coords=bg_coords)
    torso = 0.5 * torch.tensor([1.0, 0.0, 0.0]) + 0.5 * BG
    torch.testing.assert_close(out["torso_color"][0], torso.expand(len(OFFSETS), 3))
    torch.testing.assert_close(out["torso_alpha"][0], torch.full((len(OFFSETS), 1), 0.5))
    ws = out["weights_sum"][0][:, None]
    torch.testing.assert_close(out["image"][0], COLOUR * ws + (1 - ws) * torso)
    torso_only = model.render_torso(rays_o, rays_d, None, bg_coords, torch.eye(4)[None], bg_color=BG)
    torch.testing.assert_close(torso_only["torso_color"], out["torso_color"])


def test_torso_grid_update_follows_bg_coords():
    model = make_model("--torso")
    use_half_torso(model)
    model.update_extra_state()
    n = 6
    bg_coords = torch.stack([torch.linspace(-0.9, 0.9, n), torch.full((n,), 0.3)], dim=-1)[None]
    out = model.run_torso(torch.zeros(n, 3), bg_coords, torch.eye(4)[None], bg_color=BG)
    inside = bg_coords[0, :, 0] > 0.2
    assert (out["torso_alpha"][inside] == 0.5).all()
    assert (out["torso_alpha"][bg_coords[0, :, 0] < -0.2] == 0).all()
    assert model.mean_density_torso == pytest.approx(float(model.density_grid_torso.mean()))


def test_smooth_lips_blends_previous_code():
    model = make_model("--smooth_lips").eval()
    a1, a2 = torch.randn(8, 32, 16), torch.randn(8, 32, 16)
    with torch.no_grad():
        e1, e2 = model.encode_audio(a1), model.encode_audio(a2)
        s1 = model._encode_audio_smoothed(a1)
        s2 = model._encode_audio_smoothed(a2)
    torch.testing.assert_close(s1, e1)
    torch.testing.assert_close(s2, 0.35 * e1 + 0.65 * e2)


def test_missing_eye_is_a_clear_error():
    model = make_model("--exp_eye").eval()
    rays_o, rays_d = rays_towards_minus_z(OFFSETS)
    with pytest.raises(ValueError, match="eye"):
        render(model, rays_o, rays_d, eye=None)


def test_camera_refinement_moves_rays():
    model = make_model("--train_camera").train()
    with torch.no_grad():
        model.camera_dT[3] = torch.tensor([0.1, 0.0, 0.0])
        model.camera_dR[3] = torch.tensor([0.0, 0.0, 90.0])
    o, d = model._refine_camera(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]), 3)
    torch.testing.assert_close(o, torch.tensor([[0.1, 0.0, 0.0]]))
    torch.testing.assert_close(d, torch.tensor([[0.0, -1.0, 0.0]]), atol=1e-6, rtol=0)
    with torch.no_grad():
        assert math.isclose(float(model._refine_camera(o, d, 0)[1][0, 1]), -1.0, abs_tol=1e-6)


def test_empty_occupancy_renders_background_and_backpropagates():
    model = make_model("--cuda_ray").train()
    rays_o, rays_d = rays_towards_minus_z(OFFSETS)
    out = render(model, rays_o, rays_d, eye=None)
    torch.testing.assert_close(out["image"][0], BG.expand(len(OFFSETS), 3))
    assert out["rays"][0].shape == (0, 3)
    out["image"].sum().backward()


def test_mouth_replaces_the_first_audio_channels():
    """``render(mouth=...)`` (--mouth_teacher) swaps the code's first K channels for the given
    mouth shape: the same values as the audio's change nothing, others reach the head network
    (the rest of the code kept), and a fully swapped code passes no gradient to the audio path."""
    model = make_model("--exp_eye")
    g = torch.Generator().manual_seed(2)
    rays_o = torch.tensor([0.0, 0.0, 2.0]) + 0.2 * torch.randn(1, 30, 3, generator=g)
    rays_d = F.normalize(torch.tensor([0.0, 0.0, -1.0]) + 0.2 * torch.randn(1, 30, 3, generator=g), dim=-1)
    auds = torch.randn(8, 32, 16, generator=g)
    model.train()
    own = model.encode_audio(auds)[:, :4].detach()
    plain = render(model, rays_o, rays_d, auds=auds, index=0)
    same = render(model, rays_o, rays_d, auds=auds, index=0, mouth=own)
    other = render(model, rays_o, rays_d, auds=auds, index=0, mouth=own + 3.0)
    torch.testing.assert_close(same["image"], plain["image"], atol=1e-6, rtol=0)
    assert not torch.equal(other["image"], plain["image"])
    enc_a = other["rays"][2]  # the code the head network saw
    assert torch.equal(enc_a[:, :4], own + 3.0)
    torch.testing.assert_close(enc_a[:, 4:], plain["rays"][2][:, 4:])
    model.zero_grad()
    render(model, rays_o, rays_d, auds=auds, index=0, mouth=torch.zeros(1, 32))["image"].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.audio_net.parameters())
