"""Streaming audio features (``main.py --asr``): the features computed from 20 ms chunks equal the
offline features of the same audio (``data_utils/stream_features.py`` says when)."""
import numpy as np
import pytest

from data_utils.audio_features import HOP, extract_features
from data_utils.stream_features import StreamingFeatures, mel_stats, wave_stats
from tests.test_asr_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def audio():
    rng = np.random.default_rng(7)
    t = np.arange(16000 * 3 + 123) / 16000
    # A tone whose loudness changes, over noise: the features differ from step to step.
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
            + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def stream(feats: StreamingFeatures, audio: np.ndarray, sizes=None) -> tuple[np.ndarray, list[int]]:
    """Push ``audio`` in 20 ms chunks (or chunks of ``sizes``); returns the frames and, per frame,
    the number of samples pushed when it came out."""
    out, arrival, pos, k = [], [], 0, 0
    while pos < len(audio):
        size = HOP if sizes is None else int(sizes[k % len(sizes)])
        frames = feats.push(audio[pos:pos + size])
        pos += size
        k += 1
        out.append(frames)
        arrival += [min(pos, len(audio))] * len(frames)
    out.append(feats.finish())
    return np.concatenate(out), arrival


@pytest.mark.parametrize("lmr", [(10, 50, 10), (1, 1, 1), (3, 7, 2)])
def test_mel_stream_equals_offline(audio, lmr):
    offline = extract_features(audio, engine="mel")
    sizes = np.random.default_rng(1).integers(1, 900, size=50)
    feats, _ = stream(StreamingFeatures("mel", *lmr, stats=mel_stats(audio)), audio, sizes)
    assert feats.shape == offline.shape
    np.testing.assert_allclose(feats, offline, atol=1e-5)


def test_mel_stream_with_running_statistics_approaches_offline(audio):
    offline = extract_features(audio, engine="mel")
    feats, _ = stream(StreamingFeatures("mel"), audio)
    assert feats.shape == offline.shape
    err = np.abs(feats - offline).mean(axis=(1, 2))
    # The microphone's statistics are only those heard so far: the first block is off, later ones close.
    assert err[-20:].mean() < 0.25 * err[:5].mean()


def test_frames_come_out_within_the_stated_latency(audio):
    feats = StreamingFeatures("mel", 10, 50, 10, stats=mel_stats(audio))
    frames, arrival = stream(feats, audio)
    early = [(i, n) for i, n in enumerate(arrival) if n < len(audio)]
    assert len(early) > 10  # most frames come out before the stream ends
    for i, n in early:
        # Frame i is at step 2 i; it is out once at most latency_steps more steps have arrived.
        assert n <= (2 * i + feats.latency_steps + 1) * HOP
    assert feats.latency_s == pytest.approx((50 + 10 + 7) * 0.02)


def tiny_model(arch):
    import torch
    import transformers

    torch.manual_seed(0)
    config_cls = transformers.HubertConfig if arch.startswith("Hubert") else transformers.Wav2Vec2Config
    return getattr(transformers, arch)(config_cls(**TINY, vocab_size=12)).eval()


@pytest.mark.parametrize("arch", ["HubertModel", "Wav2Vec2ForCTC"])
def test_speech_stream_equals_offline_when_the_window_spans_it(audio, arch):
    model = tiny_model(arch)
    offline = extract_features(audio, engine="hubert", model=model)
    # One block covering the recording gives the transformer the offline context.
    whole = StreamingFeatures("hubert", 10, 1000, 10, stats=wave_stats(audio), model=model)
    feats, _ = stream(whole, audio)
    assert feats.shape == offline.shape
    np.testing.assert_allclose(feats, offline, atol=1e-5)


@pytest.mark.parametrize("arch", ["HubertModel", "Wav2Vec2ForCTC"])
def test_speech_stream_does_not_depend_on_chunk_sizes(audio, arch):
    model = tiny_model(arch)
    offline = extract_features(audio, engine="hubert", model=model)
    by_20ms, arrival = stream(StreamingFeatures("hubert", 10, 50, 10, stats=wave_stats(audio), model=model), audio)
    sizes = np.random.default_rng(2).integers(1, 2000, size=40)
    ragged, _ = stream(StreamingFeatures("hubert", 10, 50, 10, stats=wave_stats(audio), model=model), audio, sizes)
    assert by_20ms.shape == ragged.shape == offline.shape
    np.testing.assert_allclose(by_20ms, ragged, atol=1e-5)
    assert sum(n < len(audio) for n in arrival) > 10
    # The window of 70 steps instead of the whole recording changes the transformer's output.
    assert np.abs(by_20ms - offline).max() > 1e-3


def test_bad_contexts_and_deepspeech_are_refused():
    with pytest.raises(ValueError, match="-l 0"):
        StreamingFeatures("mel", 0, 50, 10)
    with pytest.raises(ValueError, match="DeepSpeech"):
        StreamingFeatures("deepspeech")


def test_cli_streams_a_wav_and_saves_the_offline_features(subject, tmp_path):
    import main as cli

    ws = tmp_path / "ws"
    args = [str(subject), "--workspace", str(ws), "--device", "cpu"]
    assert cli.main([*args, "--asr", "--asr_wav", str(subject / "aud.wav"), "--asr_save_feats"]) == 0
    from data_utils.asr_models import features_model
    from data_utils.audio import load_audio

    out = ws / "results" / "aud_asr.npy"
    offline = extract_features(load_audio(subject / "aud.wav"), engine="mel")
    np.testing.assert_allclose(np.load(out), offline, atol=1e-5)
    assert features_model(out) == "mel"


@pytest.mark.parametrize("extra, message", [
    (["--asr_wav", "x.wav"], "add --asr"),
    (["--asr"], "--asr_save_feats"),
    (["--asr", "--asr_save_feats", "--asr_wav", "missing.wav"], "missing.wav not found"),
    (["--asr", "--asr_save_feats", "--fps", "25"], "--fps 25"),
    (["--gui", "--test"], "leave out --test"),
])
def test_cli_refuses_bad_live_flags(subject, tmp_path, capsys, extra, message):
    import main as cli
    from tests.conftest import error_line

    assert cli.main([str(subject), "--workspace", str(tmp_path / "ws"), "--device", "cpu", *extra]) == 2
    assert message in error_line(capsys)
