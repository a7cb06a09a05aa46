"""main.py end to end on a tiny synthetic subject: train, --test, and bad input."""
import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest

import main as cli
from nerf_triplane.video import probe_video
from tests.conftest import SUBJECT_FRAMES, error_line, tiny_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_train_then_test_writes_videos_and_metrics(subject, trained_head):
    results = trained_head / "results"
    # Training ends by rendering the test split, as the reference does.
    assert (results / "ngp_ep0001.mp4").is_file()
    (results / "metrics.json").unlink()
    assert cli.main(tiny_args(subject, trained_head, "--test")) == 0
    metrics = json.loads((results / "metrics.json").read_text())
    n_test = SUBJECT_FRAMES - SUBJECT_FRAMES * 10 // 11
    assert metrics["frames"] == n_test
    assert 10 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1
    assert metrics["lmd_frames"] + metrics["lmd_skipped"] == n_test
    assert metrics["checkpoint"].endswith("ngp_ep0001.pth")
    for suffix, width in (("", 64), ("_depth", 64), ("_pred_gt", 128)):
        info = probe_video(results / f"ngp_ep0001{suffix}.mp4")
        assert (info["frames"], info["width"], info["height"]) == (n_test, width, 64)
    # Lossless copies of the predictions with their frame/audio ids, for the evaluation.
    frames = results / "ngp_ep0001_frames"
    index = json.loads((frames / "index.json").read_text())
    first_val = SUBJECT_FRAMES * 10 // 11
    assert index["frames"] == [{"k": k, "img_id": first_val + k, "aud_id": first_val + k} for k in range(n_test)]
    assert (index["data"], index["split"], index["aud"], index["torso"]) == (str(subject.resolve()), "test", "", False)
    with imageio.get_reader(results / "ngp_ep0001_pred_gt.mp4") as reader:
        pred_gt = reader.get_data(0)
    png = imageio.imread(frames / "0000.png")
    assert png.shape == (64, 64, 3) and png.dtype == np.uint8
    # The mp4 is lossy: its first frame is only close to the PNG.
    assert np.abs(pred_gt[:, :64].astype(float) - png).mean() < 8
    assert not list(results.glob(".*partial*"))


def test_missing_folder_and_unbuilt_flags(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in error_line(capsys)
    assert cli.main([str(tmp_path), "--max_spp", "4"]) == 2
    assert "--max_spp" in error_line(capsys)
    assert cli.main([str(tmp_path), "--aud", "x.wav"]) == 2
    assert "--test" in error_line(capsys)


def test_small_lpips_patches_are_rejected(subject, tmp_path, capsys):
    assert cli.main(tiny_args(subject, tmp_path / "ws", "--iters", 1, "--patch_size", 16)) == 2
    assert "at least 32x32" in error_line(capsys)


def test_missing_transforms(subject, tmp_path, capsys):
    folder = tmp_path / "broken"
    shutil.copytree(subject, folder)
    (folder / "transforms_train.json").unlink()
    assert cli.main(tiny_args(folder, tmp_path / "ws", "--iters", 1)) == 2
    assert "transforms_train.json" in error_line(capsys)


def test_features_shorter_than_frames(subject, tmp_path, capsys):
    folder = tmp_path / "short"
    shutil.copytree(subject, folder)
    np.save(folder / "aud.npy", np.load(folder / "aud.npy")[:10])
    assert cli.main(tiny_args(folder, tmp_path / "ws", "--iters", 1)) == 2
    assert "aud.npy" in error_line(capsys)


def test_test_without_checkpoint(subject, tmp_path, capsys):
    assert cli.main(tiny_args(subject, tmp_path / "empty", "--test")) == 2
    assert "no checkpoint" in error_line(capsys)


def test_metrics_json_recomputed_from_the_saved_frames(subject, trained_head, tmp_path):
    """The test render's metrics.json, recomputed from its lossless frames and ``gt_imgs`` by
    ``img_id``: on the test split ``img_id`` is not the frame position ``k``, so a mix-up of the
    two gives other figures. The evaluation scores the same pairs."""
    from nerf_triplane.evaluation import evaluate_workspace
    from nerf_triplane.metrics import psnr, ssim

    ws, data = tmp_path / "ws", tmp_path / "data"
    shutil.copytree(trained_head, ws)
    shutil.copytree(subject, data)  # the floors cache their result in the data folder
    results = ws / "results"
    metrics = json.loads((results / "metrics.json").read_text())
    folder = results / f"{metrics['name']}_frames"
    index = json.loads((folder / "index.json").read_text())
    assert index["split"] == "test" and all(f["img_id"] != f["k"] for f in index["frames"])
    preds = [imageio.imread(folder / f"{f['k']:04d}.png") / 255.0 for f in index["frames"]]

    def gt(img_id):
        return imageio.imread(data / "gt_imgs" / f"{img_id}.jpg") / 255.0

    by_id = [gt(f["img_id"]) for f in index["frames"]]
    recomputed = np.mean([psnr(p, g) for p, g in zip(preds, by_id)])
    # The trainer scores the float render; the PNG is that render rounded to 1/255.
    assert recomputed == pytest.approx(metrics["psnr"], abs=0.05)
    assert np.mean([ssim(p, g) for p, g in zip(preds, by_id)]) == pytest.approx(metrics["ssim"], abs=2e-3)
    by_position = np.mean([psnr(p, gt(f["k"])) for p, f in zip(preds, index["frames"])])
    assert abs(by_position - metrics["psnr"]) > 0.5

    result = evaluate_workspace(ws, data=data)
    assert result["metrics"]["psnr"] == pytest.approx(recomputed, abs=1e-9)
    merged = json.loads((results / "metrics.json").read_text())
    assert merged["psnr"] == metrics["psnr"]  # the trainer's figure is kept
    assert merged["evaluation"]["metrics"]["psnr"] == pytest.approx(recomputed, abs=1e-9)
    for key, region in (("baseline", "outline"), ("baseline_head", "head")):
        assert merged[key]["region"] == region and merged[key]["n_frames"] == len(index["frames"])
    assert "floor: head (like for like)" in (results / "report.md").read_text()
