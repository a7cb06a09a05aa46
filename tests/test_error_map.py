"""Error-map ray sampling (nerf_triplane/error_map.py, --error_map)."""
import pytest
import torch

from nerf_triplane.error_map import CELLS, IMAGE_DECAY, SHARED_DECAY, ErrorMap
from nerf_triplane.options import parse_args
from nerf_triplane.provider import NeRFDataset
from tests.conftest import build_trainer, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")


def _pixel(row: int, col: int, W: int) -> torch.Tensor:
    return torch.tensor([row * W + col])


def test_draws_follow_the_recorded_error():
    H, W = 96, 64  # cells of 3 x 2 pixels
    em = ErrorMap(3, H, W)
    torch.testing.assert_close(em.weights(0), torch.ones(CELLS * CELLS))  # nothing measured: uniform
    # One batch over the whole image of frame 0: a low error everywhere, a high one in one cell.
    every = torch.arange(H * W)
    error = torch.full((H * W,), 1e-3)
    hot = (every // W // 3 == 10) & (every % W // 2 == 7)  # cell row 10, column 7
    error[hot] = 1.0
    em.record(0, every, error)
    hot_cell = 10 * CELLS + 7
    assert em.weights(0)[hot_cell] == pytest.approx(1.0) and em.weights(0).sum() == pytest.approx(1 + 1023e-3)
    g = torch.Generator().manual_seed(0)
    pixels = em.sample(0, 20000, generator=g)
    assert pixels.min() >= 0 and pixels.max() < H * W
    share = hot[pixels].float().mean().item()
    assert share == pytest.approx(1 / (1 + 1023e-3), abs=0.02)  # in proportion to the error
    inside = pixels[hot[pixels]]
    # Every pixel of the hot cell is drawn: uniform inside the cell.
    assert set(inside.tolist()) == set(every[hot].tolist())
    # Frame 1 has measured nothing: it draws from the all-images map, which learned the same.
    torch.testing.assert_close(em.weights(1), em.weights(0))


def test_recent_error_is_blended_per_image_and_across_images():
    H = W = 64
    em = ErrorMap(2, H, W)
    p = _pixel(5, 9, W)  # cell (2, 4)
    cell = int(em.cell_of(p))
    assert cell == 2 * CELLS + 4
    em.record(0, p, torch.tensor([0.4]))
    em.record(0, p, torch.tensor([0.2]))
    assert em.maps[0, cell] == pytest.approx((1 - IMAGE_DECAY) * 0.4 + IMAGE_DECAY * 0.2)
    assert em.shared[cell] == pytest.approx((1 - SHARED_DECAY) * 0.4 + SHARED_DECAY * 0.2)
    # Frame 1 measures the cell itself: its own value wins over the shared one.
    em.record(1, p, torch.tensor([0.05]))
    assert em.weights(1)[cell] == pytest.approx(0.05)
    # Rays of one batch in the same cell are averaged before blending.
    em2 = ErrorMap(1, H, W)
    em2.record(0, torch.cat([p, _pixel(4, 8, W)]), torch.tensor([0.1, 0.3]))
    assert em2.maps[0, cell] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="one error per pixel"):
        em2.record(0, p, torch.tensor([0.1, 0.2]))
    # A perfectly fitted image still gets rays everywhere.
    em3 = ErrorMap(1, H, W)
    em3.record(0, torch.arange(H * W), torch.zeros(H * W))
    assert em3.sample(0, 500).unique().numel() > 400


def test_option_is_a_fraction_that_fits_with_the_other_ray_shares():
    with pytest.raises(ValueError, match="--error_map is a fraction"):
        parse_args(["unused", "--error_map", "1.5"])
    with pytest.raises(ValueError, match="must not exceed 1"):
        parse_args(["unused", "--error_map", "0.5", "--lips_rays", "0.6"])
    assert parse_args(["unused"]).error_map == 0.0  # off by default: the reference's uniform rays


def test_dataset_draws_a_share_from_the_map_and_the_trainer_fills_it(subject, tmp_path):
    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--error_map", "0.5", "--lips_rays", "0.2",
                               "--iters", 4, "--eval_interval", 1000))
    ds = NeRFDataset(opt, type="train")
    assert ds.error_map is not None
    assert NeRFDataset(parse_args(tiny_args(subject, tmp_path / "ws")), type="train").error_map is None
    # All of frame 0's error in one cell: the error-map half of the batch lands there.
    em = ds.error_map
    hot = em.cell_of(torch.arange(ds.H * ds.W)) == 0
    em.record(0, torch.arange(ds.H * ds.W), hot.float())
    batch = ds.collate([0])
    pixels = batch["pixels"]
    assert pixels.shape == (opt.num_rays,) and batch["error_map"] is em
    in_hot = hot[pixels].sum().item()
    assert in_hot >= opt.num_rays // 2 and in_hot < opt.num_rays
    # The trainer records every step's errors.
    torch.manual_seed(0)
    trainer, loader, _ = build_trainer(opt)
    assert trainer.train(loader)
    recorded = loader._data.error_map
    assert recorded.seen.any(dim=1).sum() == trainer.global_step  # one frame per step
    assert recorded.shared_seen.all() and (recorded.shared < 1).all()


def test_torso_batches_draw_by_error_and_never_from_the_face_or_lips(subject, tmp_path):
    opt = parse_args(tiny_args(subject, tmp_path / "ws", "--torso", "--error_map", "0.5", "--lips_rays", "0.5"))
    ds = NeRFDataset(opt, type="train")
    em = ds.error_map
    assert em is not None
    hot = em.cell_of(torch.arange(ds.H * ds.W)) == 0
    em.record(0, torch.arange(ds.H * ds.W), hot.float())
    torch.manual_seed(0)
    pixels = ds.collate([0])["pixels"]
    # Half by error (all in the hot cell); the rest uniform: the lips share is a head setting.
    lips = ds.rects[0]["lips"]
    rows, cols = pixels // ds.W, pixels % ds.W
    in_lips = ((rows >= lips[0]) & (rows < lips[1]) & (cols >= lips[2]) & (cols < lips[3])).float().mean().item()
    assert hot[pixels].sum().item() >= opt.num_rays // 2
    assert in_lips < 0.2
