"""Lip finetuning (--finetune_lips --patch_size 32) continuing a head run, as the reference:
batches alternate lips rectangles and random 32x32 patches, each adding an LPIPS term."""
import shutil

import numpy as np
import pytest
import torch

import main as cli
from nerf_triplane.options import parse_args
from nerf_triplane.provider import NeRFDataset, read_lms
from nerf_triplane.rays import rect_pixels
from nerf_triplane.trainer import Trainer
from tests.conftest import HEAD_ITERS, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")
PATCH = 32


def _inds(batch: dict) -> np.ndarray:
    """Flat pixel indices of a batch, recovered from its [-1, 1] pixel coordinates."""
    coords = batch["bg_coords"].reshape(-1, 2)
    H, W = batch["H"], batch["W"]
    rows = torch.round((coords[:, 0] + 1) / 2 * (H - 1)).long()
    cols = torch.round((coords[:, 1] + 1) / 2 * (W - 1)).long()
    return (rows * W + cols).numpy()


def test_patches_stay_inside_and_lips_batches_cover_the_lips_rect(subject, tmp_path):
    opt = parse_args(tiny_args(subject, tmp_path, "--finetune_lips", "--patch_size", PATCH))
    dataset = NeRFDataset(opt, type="train")
    H, W = dataset.H, dataset.W
    lips_frames = 0
    for k in range(8):
        opt.finetune_lips = k % 2 == 0  # the trainer flips it after every step
        batch = dataset.collate([k])
        f = batch["index"][0]
        inds = _inds(batch)
        rows, cols = inds // W, inds % W
        if opt.finetune_lips:
            lips_frames += 1
            rect = dataset.rects[f]["lips"]
            assert tuple(batch["rect"]) == tuple(rect)
            xmin, xmax, ymin, ymax = rect
            assert 0 <= xmin < xmax <= H and 0 <= ymin < ymax <= W
            # Exactly the rectangle's pixels, row-major, so the trainer can reshape them to an image.
            np.testing.assert_array_equal(inds, rect_pixels(H, W, rect).numpy())
            # The square holds the mouth landmarks: the reference floors the centre and the
            # half side, which can leave out the last landmark row/column (hence the - 1).
            mouth = read_lms(subject / "ori_imgs" / f"{dataset.img_ids[f]}.lms")[48:60]
            assert xmin <= int(mouth[:, 1].min()) and int(mouth[:, 1].max()) - 1 <= xmax
            assert ymin <= int(mouth[:, 0].min()) and int(mouth[:, 0].max()) - 1 <= ymax
        else:
            assert "rect" not in batch
            assert len(rows) == opt.num_rays  # 1024 rays = one 32x32 patch
            assert rows.min() >= 0 and rows.max() < H and cols.min() >= 0 and cols.max() < W
            patch_r, patch_c = rows.reshape(-1, PATCH, PATCH), cols.reshape(-1, PATCH, PATCH)
            np.testing.assert_array_equal(patch_r - patch_r[:, :1, :1], np.tile(np.arange(PATCH)[:, None], PATCH)[None])
            np.testing.assert_array_equal(patch_c - patch_c[:, :1, :1], np.tile(np.arange(PATCH), (PATCH, 1))[None])
    assert lips_frames == 4


@pytest.mark.slow
def test_finetune_continues_the_head_run_with_lpips_terms(subject, trained_head, tmp_path, monkeypatch):
    # A random AlexNet stands in for the real weights, which cannot be downloaded here.
    monkeypatch.setenv("ERNERF_LPIPS_RANDOM", "1")
    ws = tmp_path / "ws"
    shutil.copytree(trained_head / "checkpoints", ws / "checkpoints")
    iters = 2 * HEAD_ITERS  # one more epoch, like --iters 125000 after a 100000-step head run
    opt = parse_args(tiny_args(subject, ws, "--finetune_lips", "--patch_size", PATCH, "--iters", iters))
    from nerf_triplane.network import NeRFNetwork

    train_set = NeRFDataset(opt, type="train")
    trainer = Trainer(opt, NeRFNetwork(opt, audio_dim=train_set.audio_dim), ws, "cpu")
    trainer.load_checkpoint("latest")
    assert trainer.global_step == HEAD_ITERS

    terms, lrs = [], []
    step = trainer.optimise

    def record(data):
        out = step(data)
        terms.append(dict(trainer.loss_terms))
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return out

    trainer.optimise = record
    assert trainer.train(train_set.dataloader())
    assert trainer.global_step == iters
    # Lips-rect and patch batches alternate, starting with the lips.
    assert [("lpips_lips" in t, "lpips_patch" in t) for t in terms] == [(k % 2 == 0, k % 2 == 1) for k in range(30)]
    values = [t.get("lpips_lips", t.get("lpips_patch")) for t in terms]
    assert all(np.isfinite(v) and v > 0 for v in values), values
    assert all(np.isfinite(t["mse"]) for t in terms)
    # The finetune schedule decays to 0.05x (not the head run's 0.5x) over the total --iters.
    base = trainer.optimizer.param_groups[0]["initial_lr"]
    assert lrs[-1] == pytest.approx(base * 0.05 ** (iters / iters))
    assert lrs[0] == pytest.approx(base * 0.05 ** ((HEAD_ITERS + 1) / iters))
    ckpt = torch.load(ws / "checkpoints" / "ngp_ep0002.pth", weights_only=True)
    assert ckpt["lips_phase"] is True  # 30 flips from the start: the next batch is a lips batch again


def test_missing_alexnet_weights_stop_with_one_line(subject, tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.delenv("ERNERF_LPIPS_RANDOM", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    args = tiny_args(subject, tmp_path / "ws", "--finetune_lips", "--patch_size", PATCH, "--iters", 1)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "alexnet-owt-7be5be79.pth" in line and str(tmp_path / "empty_hub") in line and "--lpips_weights" in line
