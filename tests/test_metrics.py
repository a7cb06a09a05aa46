"""Metrics (PSNR, SSIM, LMD, LPIPS loading), checkpoint bookkeeping and mp4 writing."""
import math
import time

import numpy as np
import pytest
import torch

from nerf_triplane import metrics
from nerf_triplane.checkpoint import CheckpointDir, atomic_torch_save, rng_state, set_rng_state
from nerf_triplane.video import probe_video, write_video


def _image(seed=0, shape=(32, 40, 3)):
    return np.random.default_rng(seed).random(shape)


def test_psnr_identical_is_inf_and_known_value():
    img = _image()
    assert metrics.psnr(img, img) == math.inf
    # A constant error of 0.1 everywhere: MSE 0.01 -> exactly 20 dB.
    other = np.clip(img, 0.2, 0.8)
    assert metrics.psnr(other, other + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert metrics.psnr(torch.from_numpy(other), torch.from_numpy(other + 0.1)) == pytest.approx(20.0, abs=1e-9)


def test_ssim_identical_is_one_and_drops_with_noise():
    img = _image()
    assert metrics.ssim(img, img) == 1.0
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 0.1, img.shape), 0, 1)
    worse = np.clip(img + np.random.default_rng(2).normal(0, 0.3, img.shape), 0, 1)
    s1, s2 = metrics.ssim(img, noisy), metrics.ssim(img, worse)
    assert 0 < s2 < s1 < 1
    assert metrics.ssim(noisy, img) == pytest.approx(s1, abs=1e-12)


def test_ssim_matches_closed_form_on_constant_images():
    # Constant images: variances and covariance vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = np.full((16, 16, 3), 0.3), np.full((16, 16, 3), 0.6)
    c1 = 0.01 ** 2
    assert metrics.ssim(a, b) == pytest.approx((2 * 0.3 * 0.6 + c1) / (0.09 + 0.36 + c1), rel=1e-9)


def test_metric_shape_errors_are_clear():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(_image(shape=(8, 8, 3)), _image(shape=(8, 9, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(_image(shape=(8, 8, 3)), _image(shape=(8, 8, 3)))


def test_mouth_lmd():
    lms = np.random.default_rng(0).random((68, 2)) * 100
    assert metrics.mouth_lmd(lms, lms) == 0.0
    # A rigid shift of the mouth is removed by mean-centring; other points are ignored.
    moved = lms.copy()
    moved[48:68] += [5.0, -3.0]
    moved[:48] += 40.0
    assert metrics.mouth_lmd(moved, lms) == pytest.approx(0.0, abs=1e-12)
    # Widening the mouth by scale 2 about its centre: mean |p - c| over the 20 points.
    centre = lms[48:68].mean(0)
    wide = lms.copy()
    wide[48:68] = centre + 2 * (lms[48:68] - centre)
    expected = np.linalg.norm(lms[48:68] - centre, axis=1).mean()
    assert metrics.mouth_lmd(wide, lms) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        metrics.mouth_lmd(lms[:60], lms)


class _FakeDetector:
    """Landmarks from image content: None on a black frame, else a mouth scaled by brightness."""

    def __init__(self):
        base = np.random.default_rng(3).random((68, 2)) * 50
        self.base = base

    def detect(self, rgb):
        level = rgb.mean() / 255
        if level == 0:
            return None
        lms = self.base.copy()
        lms[48:68] *= 1 + level
        return lms


def test_lmd_meter_counts_failed_detections():
    meter = metrics.LMDMeter(_FakeDetector())
    frame = np.full((8, 8, 3), 100, np.uint8)
    black = np.zeros((8, 8, 3), np.uint8)
    assert meter.update(frame, frame) == 0.0
    assert meter.update(frame, black) is None
    assert meter.update(np.full((8, 8, 3), 200, np.uint8), frame) > 0
    assert meter.skipped == 1 and len(meter.values) == 2
    assert meter.result() == pytest.approx(np.mean(meter.values))


def test_lmd_real_detector_on_identical_frames():
    from tests.conftest import shared_file
    import imageio.v2 as imageio

    video = shared_file("May_5s.mp4")
    with imageio.get_reader(video) as reader:
        frame = reader.get_data(10)
    meter = metrics.LMDMeter()
    assert meter.update(frame, frame.copy()) == 0.0


def test_lpips_offline_mode_names_the_file_without_trying(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.delenv("ERNERF_LPIPS_RANDOM", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    assert metrics.load_lpips() is None and no_network == []  # ERNERF_OFFLINE=1 (conftest)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "alexnet-owt-7be5be79.pth" in line and "offline mode is set" in line and "--lpips_weights" in line


def test_lpips_unreachable_network_is_none_with_one_line_notice(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.delenv("ERNERF_LPIPS_RANDOM", raising=False)
    monkeypatch.delenv("ERNERF_OFFLINE")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    import lpips  # noqa: F401  (import time is not the offline path's)
    import torchvision.models  # noqa: F401

    start = time.perf_counter()
    assert metrics.load_lpips() is None
    assert time.perf_counter() - start < 5 and len(no_network) >= 1  # torchvision tried its download
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "alexnet-owt-7be5be79.pth" in line and "could not be downloaded" in line and "--lpips_weights" in line
    with pytest.raises(FileNotFoundError, match="--lpips_weights"):
        metrics.load_lpips(tmp_path / "missing.pth")


def test_lpips_uses_the_torch_hub_cache_without_network(tmp_path, monkeypatch, no_network):
    import torchvision

    monkeypatch.delenv("ERNERF_LPIPS_RANDOM", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    alex = torchvision.models.alexnet(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(alex.state_dict(), tmp_path / "checkpoints" / metrics.ALEXNET_FILE)
    net = metrics.load_lpips()
    assert torch.equal(net.net.slice1._modules["0"].weight, alex.features[0].weight)
    assert no_network == []


def test_lpips_loads_local_alexnet_file(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv("ERNERF_LPIPS_RANDOM", raising=False)
    alex = torchvision.models.alexnet(weights=None)
    path = tmp_path / metrics.ALEXNET_FILE
    torch.save(alex.state_dict(), path)
    net = metrics.load_lpips(path)
    assert torch.equal(net.net.slice1._modules["0"].weight, alex.features[0].weight)
    assert torch.equal(net.net.slice5._modules["10"].bias, alex.features[10].bias)
    img = _image(shape=(32, 32, 3))
    assert metrics.lpips_distance(net, img, img) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_distance(net, img, 1 - img) > 0


def test_checkpoint_dir_order_keep_and_resolve(tmp_path):
    ck = CheckpointDir(tmp_path / "checkpoints", keep=2)
    assert ck.latest() is None and ck.resolve("latest") == (None, False)
    ck.save({"a": 1}, epoch=1)
    ck.save({"a": 2}, epoch=2, step=250)  # inside epoch 2
    assert ck.latest().name == "ngp_ep0002_step00000250.pth"
    ck.save({"a": 3}, epoch=2)
    assert [p.name for p in ck.list()] == ["ngp_ep0002_step00000250.pth", "ngp_ep0002.pth"]
    assert ck.resolve("latest_model") == (ck.root / "ngp_ep0002.pth", True)
    assert ck.resolve("best") == (ck.root / "ngp_ep0002.pth", False)
    atomic_torch_save({"b": 1}, ck.best_path)
    assert ck.resolve("best")[0] == ck.best_path
    assert not list(ck.root.glob(".*partial"))
    with pytest.raises(FileNotFoundError, match="--ckpt"):
        ck.resolve(str(tmp_path / "nope.pth"))


def test_rng_state_roundtrip():
    state = rng_state()
    a = (torch.rand(3), np.random.rand(), __import__("random").random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_video_with_muxed_audio(tmp_path):
    from data_utils.audio import write_wav

    wav = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(np.linspace(0, 2000, 16000 * 2)).astype(np.float32))
    frames = [np.full((24, 32, 3), 10 * i, np.uint8) for i in range(20)]
    out = write_video(tmp_path / "v.mp4", frames, fps=25, audio_path=wav)
    info = probe_video(out)
    # Audio (2 s) is longer than the video (0.8 s): the frame count stays 20.
    assert info == {"frames": 20, "width": 32, "height": 24, "fps": 25.0, "has_audio": True}
    silent = probe_video(write_video(tmp_path / "d.mp4", [f[..., 0] for f in frames]))
    assert silent["frames"] == 20 and not silent["has_audio"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mp4", "tone.wav", "v.mp4"]


def test_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((5, 6, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", [np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(FileNotFoundError, match="audio"):
        write_video(tmp_path / "a.mp4", [np.zeros((4, 4, 3), np.uint8)], audio_path=tmp_path / "x.wav")
    assert not list(tmp_path.iterdir())
