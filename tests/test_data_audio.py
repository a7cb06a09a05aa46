"""Audio I/O, audio features, frame extraction and atomic writes of the data pipeline."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from data_utils import atomic
from data_utils.audio import extract_wav, ffmpeg_exe, load_audio, write_wav
from data_utils.audio_features import (
    default_n_frames,
    deepspeech_input,
    engine_for,
    extract_features,
    feature_file_for,
    frame_windows,
    log_mel,
    mel_features,
    mel_filterbank,
    _conv_frames,
)
from data_utils.frames import extract_frames, probe_video
from tests.conftest import shared_file


def make_clip(src: Path, dst: Path, seconds: float, fps: float | None = None, audio: bool = True) -> Path:
    """Cut the first ``seconds`` of ``src`` (re-encoded, optionally at another frame rate) to ``dst``."""
    args = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-t", str(seconds)]
    if fps is not None:
        args += ["-vf", f"fps={fps}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast"]
    args += ["-c:a", "aac"] if audio else ["-an"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*args, str(dst)], check=True)
    return dst


@pytest.fixture(scope="session")
def may_clip(tmp_path_factory) -> Path:
    """1.2 s (30 frames at 25 fps, with audio) cut of the real May_5s.mp4."""
    src = shared_file("May_5s.mp4")
    return make_clip(src, tmp_path_factory.mktemp("may") / "may.mp4", 1.2)


# ---------------------------------------------------------------------------- audio

def test_extract_wav_is_16k_mono_and_as_long_as_the_video(may_clip, tmp_path):
    out = extract_wav(may_clip, tmp_path / "aud.wav")
    sr, data = wavfile.read(out)
    assert sr == 16000 and data.ndim == 1 and data.dtype == np.int16
    assert abs(len(data) / sr - probe_video(may_clip)["duration"]) <= 0.04
    assert np.abs(data).max() > 1000  # real speech, not silence
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over


def test_extract_wav_errors(tmp_path, may_clip):
    with pytest.raises(FileNotFoundError, match="video not found"):
        extract_wav(tmp_path / "nope.mp4", tmp_path / "aud.wav")
    silent = make_clip(may_clip, tmp_path / "silent.mp4", 0.5, audio=False)
    with pytest.raises(ValueError, match="extract the audio"):
        extract_wav(silent, tmp_path / "aud.wav")
    assert not (tmp_path / "aud.wav").exists()


def test_load_audio_downmixes_and_resamples(tmp_path):
    sr_in, f0 = 44100, 440.0
    t = np.arange(int(sr_in * 0.5)) / sr_in
    tone = 0.5 * np.sin(2 * np.pi * f0 * t)
    stereo = (np.stack([tone, tone], 1) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "tone.wav", sr_in, stereo)
    audio = load_audio(tmp_path / "tone.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 8000
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(f0, abs=2.0)
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.02)


def test_load_audio_reads_video_and_stereo_wav(may_clip):
    from_video = load_audio(may_clip)
    assert abs(len(from_video) / 16000 - 1.2) <= 0.04
    zozo = load_audio(shared_file("zozo.wav"))
    assert zozo.dtype == np.float32 and zozo.ndim == 1 and len(zozo) == 174080


def test_write_wav_roundtrip_and_errors(tmp_path):
    audio = np.linspace(-1.5, 1.5, 1600, dtype=np.float32)
    path = write_wav(tmp_path / "a.wav", audio)
    back = load_audio(path)
    np.testing.assert_allclose(back, np.clip(audio, -1, 1), atol=1e-4)
    with pytest.raises(ValueError, match="mono"):
        write_wav(tmp_path / "b.wav", np.zeros((10, 2)))
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")


# ---------------------------------------------------------------------------- features: names and windows

def test_engine_and_file_names(tmp_path):
    assert [engine_for(n) for n in ("mel", "deepspeech", "wav2vec", "cpierse/wav2vec2-large-xlsr-53-esperanto",
                                    "hubert", "facebook/hubert-large-ls960-ft", "TencentGameMate/chinese-hubert-large",
                                    str(tmp_path))] == [
        "mel", "deepspeech", "speech", "speech", "speech", "speech", "speech", "speech"]
    # The reference's names keep the reference's files; any other model gets its own file.
    assert [feature_file_for(n) for n in ("deepspeech", "esperanto", "wav2vec", "cpierse/wav2vec2-large-xlsr-53-esperanto",
                                          "hubert", "facebook/hubert-large-ls960-ft", "mel")] == [
        "aud_ds.npy", "aud_eo.npy", "aud_eo.npy", "aud_eo.npy", "aud_hu.npy", "aud_hu.npy", "aud.npy"]
    assert feature_file_for("TencentGameMate/chinese-hubert-large") == "aud_TencentGameMate-chinese-hubert-large.npy"
    one, two = tmp_path / "a" / "model", tmp_path / "b" / "model"
    one.mkdir(parents=True), two.mkdir(parents=True)
    assert feature_file_for(str(one)).startswith("aud_model-") and feature_file_for(str(one)) != feature_file_for(str(two))
    with pytest.raises(ValueError, match="--asr_model"):
        engine_for("not a model!")


def test_frame_windows_centre_on_step_2i_with_zero_padding():
    seq = np.arange(1, 21, dtype=np.float32)[:, None]  # 20 steps, value = step + 1
    win = frame_windows(seq, n_frames=12)
    assert win.shape == (12, 16, 1)
    np.testing.assert_array_equal(win[0, :, 0], [0] * 8 + list(range(1, 9)))
    np.testing.assert_array_equal(win[5, :, 0], np.arange(3, 19))  # steps 2..17
    assert win[11, :, 0].tolist() == list(range(15, 21)) + [0] * 10  # steps 14..29, 20+ absent
    hub = frame_windows(seq, n_frames=3, win=2, offset=0)
    np.testing.assert_array_equal(hub[:, :, 0], [[1, 2], [3, 4], [5, 6]])


def test_mel_filterbank_is_ordered_and_unit_area():
    fb = mel_filterbank()
    assert fb.shape == (32, 257)
    assert (fb.sum(1) > 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all() and peaks[0] < peaks[-1]
    area = fb.sum(1) * (8000 / 256)
    np.testing.assert_allclose(area, 1.0, rtol=0.1)


# ---------------------------------------------------------------------------- features: mel engine

def test_mel_features_on_real_audio_are_25_per_second(may_clip):
    zozo = load_audio(shared_file("zozo.wav"))
    feats = extract_features(zozo)
    assert feats.shape == (round(len(zozo) / 16000 * 25), 16, 32) == (272, 16, 32)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    seq = mel_features(zozo)
    np.testing.assert_allclose(seq.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(seq.std(0), 1, atol=1e-3)
    clip = extract_features(load_audio(may_clip))
    assert clip.shape == (30, 16, 32)


def test_mel_features_are_aligned_with_video_frames():
    audio = np.zeros(3 * 16000, dtype=np.float32)
    rng = np.random.default_rng(0)
    burst = slice(int(1.0 * 16000) - 80, int(1.0 * 16000) + 80)  # 10 ms of noise at t = 1.0 s
    audio[burst] = rng.standard_normal(160).astype(np.float32) * 0.3
    feats = extract_features(audio)  # [75, 16, 32]
    centre_energy = feats[:, 8, :].mean(1)  # step 2i of frame i
    assert int(np.argmax(centre_energy)) == 25
    # the burst sits at window position 8 + 2 (i - 25) for neighbouring frames
    assert int(np.argmax(feats[24].mean(1))) == 10 and int(np.argmax(feats[26].mean(1))) == 6


def test_mel_features_ignore_loudness():
    speech = load_audio(shared_file("Obama_5s.wav"))
    loud, quiet = extract_features(speech), extract_features(speech * 0.25)
    assert np.corrcoef(loud.ravel(), quiet.ravel())[0, 1] > 0.97
    # without the per-band normalisation a 12 dB change shifts every log-mel value by ~2.8
    raw_gap = np.abs(log_mel(speech) - log_mel(speech * 0.25)).mean()
    assert np.abs(loud - quiet).mean() < raw_gap / 10


def test_n_frames_pads_with_zeros_or_crops():
    audio = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    base = extract_features(audio)
    assert base.shape[0] == default_n_frames(len(audio)) == 25
    longer = extract_features(audio, n_frames=40)
    np.testing.assert_array_equal(longer[:25], base)
    assert not longer[34:].any()  # frames beyond the audio by > 8 steps are pure padding
    np.testing.assert_array_equal(extract_features(audio, n_frames=10), base[:10])
    assert log_mel(audio).shape == (51, 32)


def test_bad_feature_inputs():
    with pytest.raises(ValueError, match="mono"):
        extract_features(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="16000 Hz"):
        extract_features(np.zeros(100, np.float32), sr=44100)
    with pytest.raises(ValueError, match="n_frames"):
        extract_features(np.zeros(100, np.float32), n_frames=0)


# ---------------------------------------------------------------------------- features: weight-based engines

def _tiny_config(cls):
    return cls(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
               vocab_size=44)


def test_hubert_engine_with_tiny_model():
    import torch
    from transformers import HubertConfig, HubertModel

    model = HubertModel(_tiny_config(HubertConfig)).eval()
    audio = np.random.default_rng(2).standard_normal(32000).astype(np.float32) * 0.1
    feats = extract_features(audio, engine="hubert", model=model)
    assert feats.shape == (50, 2, 16)  # 25 per second, 2 steps of 20 ms each
    wave = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    used = 320 * 98 + 400  # exactly the samples the 99 conv steps see
    with torch.no_grad():
        hidden = model(torch.from_numpy(wave[:used])[None]).last_hidden_state[0].numpy()  # [99, 16]
    np.testing.assert_allclose(feats[7], hidden[14:16], atol=1e-5)
    rows = _conv_frames(model, wave, "last_hidden_state", chunk_steps=7)
    assert rows.shape == ((32000 - 400) // 320 + 1, 16)


def test_wav2vec_engine_with_tiny_model():
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC(_tiny_config(Wav2Vec2Config)).eval()
    audio = np.random.default_rng(3).standard_normal(24000).astype(np.float32) * 0.1
    feats = extract_features(audio, engine="cpierse/wav2vec2-large-xlsr-53-esperanto", model=model)
    assert feats.shape == (round(1.5 * 25), 16, 44) and np.isfinite(feats).all()


def test_deepspeech_engine_with_stand_in_network():
    audio = np.random.default_rng(4).standard_normal(32000).astype(np.float32) * 0.1
    inputs = deepspeech_input(audio)
    assert inputs.shape == (100, 19 * 26)
    assert abs(inputs.mean()) < 1e-4 and inputs.std() == pytest.approx(1, abs=1e-3)
    feats = extract_features(audio, engine="deepspeech", model=lambda x: x[:, :29])
    assert feats.shape == (50, 16, 29)


def test_missing_weights_give_clear_errors(tmp_path):
    audio = np.zeros(16000, np.float32)
    with pytest.raises(FileNotFoundError, match="--asr_weights .* does not exist"):
        extract_features(audio, engine="wav2vec", weights=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"deepspeech-0_1_0-b90017e8\.pb.*DeepSpeech v0\.1\.0 release"):
        extract_features(audio, engine="deepspeech", weights=tmp_path / "deepspeech-0_1_0-b90017e8.pb")


# ---------------------------------------------------------------------------- frames

def test_probe_video(may_clip):
    meta = probe_video(may_clip)
    assert meta["fps"] == 25 and (meta["width"], meta["height"]) == (512, 512)
    assert meta["n_frames"] == 30 and meta["has_audio"]
    assert meta["duration"] == pytest.approx(1.2, abs=0.05)


def test_extract_frames_resamples_30fps_to_25(may_clip, tmp_path):
    clip30 = make_clip(may_clip, tmp_path / "c30.mp4", 1.0, fps=30, audio=False)
    assert probe_video(clip30)["fps"] == 30
    n = extract_frames(clip30, tmp_path / "ori_imgs", progress=False)
    names = sorted(p.name for p in (tmp_path / "ori_imgs").iterdir())
    assert n == 25 and names == sorted(f"{k}.jpg" for k in range(25))
    import cv2

    assert cv2.imread(str(tmp_path / "ori_imgs" / "0.jpg")).shape == (512, 512, 3)


def test_extract_frames_replaces_an_old_folder(may_clip, tmp_path):
    out = tmp_path / "ori_imgs"
    out.mkdir()
    (out / "999.jpg").write_bytes(b"stale")
    assert extract_frames(may_clip, out, progress=False) == 30
    assert not (out / "999.jpg").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ori_imgs"]


def test_unreadable_videos_are_rejected(tmp_path):
    real = shared_file("May_5s.mp4")
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(real.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="not a readable video"):
        probe_video(truncated)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError):
        probe_video(text)
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.mp4")


def test_truncated_stream_with_header_first_is_detected(may_clip, tmp_path):
    fast = tmp_path / "fast.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(may_clip), "-c", "copy",
                    "-movflags", "+faststart", str(fast)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 3])
    with pytest.raises(ValueError, match="truncated|cannot decode"):
        extract_frames(cut, tmp_path / "ori_imgs", progress=False)
    assert not (tmp_path / "ori_imgs").exists()


# ---------------------------------------------------------------------------- atomic writes

def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    atomic.write_json(final, {"a": 1})
    assert final.read_text().strip() == '{\n  "a": 1\n}'
    with pytest.raises(FileNotFoundError, match="produced no file"):
        with atomic.atomic_path(tmp_path / "never.txt"):
            pass


def test_atomic_paths_commit_all_files_or_none(tmp_path):
    finals = [tmp_path / "a" / f"{k}.txt" for k in range(3)] + [tmp_path / "b" / "0.txt"]
    finals[0].parent.mkdir()
    finals[0].write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_paths(finals) as tmps:
            for tmp in tmps:
                tmp.write_text("new")
            raise RuntimeError("killed")
    assert finals[0].read_text() == "old" and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["0.txt"]
    with pytest.raises(FileNotFoundError, match="produced no file for 1 of 4"):
        with atomic.atomic_paths(finals) as tmps:
            for tmp in tmps[:-1]:
                tmp.write_text("new")
    assert finals[0].read_text() == "old" and not finals[1].exists()
    with atomic.atomic_paths(finals) as tmps:
        assert [t.parent for t in tmps] == [f.parent for f in finals]
        for k, tmp in enumerate(tmps):
            tmp.write_text(str(k))
    assert [f.read_text() for f in finals] == ["0", "1", "2", "3"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["0.txt"]


def test_atomic_paths_flush_once_before_any_rename(tmp_path, monkeypatch):
    events = []
    real_sync, real_replace = os.sync, os.replace
    monkeypatch.setattr(atomic.os, "sync", lambda: (events.append("sync"), real_sync()))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    with atomic.atomic_paths([tmp_path / f"{k}.txt" for k in range(5)]) as tmps:
        for tmp in tmps:
            tmp.write_text("x")
    assert events == ["sync"] + ["replace"] * 5


def test_atomic_dir_keeps_old_folder_on_failure(tmp_path):
    final = tmp_path / "frames"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "new").write_text("new")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["frames"] and (final / "old").exists()
    with atomic.atomic_dir(final) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]
