"""--asr_model is the model: HuBERT / wav2vec2-style models by Hub id or folder, their feature
layouts and files, the offline path, and checkpoints refusing another model's features.

Every model here is a tiny randomly initialised one built from a config; the network is refused
(patched socket) so nothing is downloaded.
"""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import main as cli
from data_utils import process
from data_utils.asr_models import features_model, hub_reachable, record_features, resolve, same_model
from data_utils.audio_features import extract_features, feature_file_for
from tests.conftest import ROOT, error_line, tiny_args

TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def save_tiny(folder: Path, arch: str, vocab: int = 12, hidden: int = 16, extractor: bool = True, **config) -> Path:
    """A random model of ``arch`` (Wav2Vec2ForCTC, Wav2Vec2Model, HubertModel, HubertForCTC) in ``folder``."""
    import torch
    import transformers

    torch.manual_seed(0)
    config_cls = transformers.HubertConfig if arch.startswith("Hubert") else transformers.Wav2Vec2Config
    config = config_cls(**{**TINY, "hidden_size": hidden, **config}, vocab_size=vocab)
    getattr(transformers, arch)(config).save_pretrained(folder)
    if extractor:
        transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def cache_model(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder``'s files out as the Hugging Face hub cache holds a downloaded ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())


@pytest.fixture
def speech():
    return np.random.default_rng(5).standard_normal(24000).astype(np.float32) * 0.1  # 1.5 s


@pytest.mark.parametrize("arch, layout", [
    ("Wav2Vec2ForCTC", (16, 12)),   # CTC logits, windows of 16, V = vocab_size
    ("HubertModel", (2, 16)),       # hidden states, 2 steps, D = hidden_size
    ("HubertForCTC", (2, 24)),      # a HuBERT CTC checkpoint still gives hidden states (as the reference)
    ("Wav2Vec2Model", (2, 16)),     # no CTC head: hidden states
])
def test_local_folder_of_each_architecture(tmp_path, no_network, speech, arch, layout):
    folder = save_tiny(tmp_path / arch, arch, hidden=24 if arch == "HubertForCTC" else 16)
    feats = extract_features(speech, engine=str(folder))
    assert feats.shape == (round(1.5 * 25), *layout) and np.isfinite(feats).all()
    assert no_network == []  # a local folder needs no network


def test_feature_extractor_of_the_model_is_used(tmp_path, no_network, speech):
    # A model whose extractor does not normalise sees the wave's DC offset; without an extractor
    # the wave is normalised (layer-norm encoders, unlike group-norm ones, do not remove it).
    import transformers

    plain = save_tiny(tmp_path / "plain", "Wav2Vec2ForCTC", extractor=False, feat_extract_norm="layer")
    raw = save_tiny(tmp_path / "raw", "Wav2Vec2ForCTC", extractor=False, feat_extract_norm="layer")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(raw)
    wave = speech + 0.5
    a, b = extract_features(wave, engine=str(plain)), extract_features(wave, engine=str(raw))
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(a, extract_features(speech, engine=str(plain)), atol=1e-4)


def test_model_in_the_hub_cache_is_used_without_network(tmp_path, monkeypatch, no_network, speech):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache_model(cache, "tiny-org/tiny-hubert", save_tiny(tmp_path / "src", "HubertModel"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    feats = extract_features(speech, engine="tiny-org/tiny-hubert")
    assert feats.shape == (38, 2, 16)
    np.testing.assert_allclose(feats, extract_features(speech, engine=str(tmp_path / "src")), atol=1e-6)
    assert no_network == []


@pytest.mark.parametrize("offline_env", [True, False])
def test_uncached_model_offline_is_one_line_within_seconds(tmp_path, monkeypatch, no_network, speech, offline_env):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("ERNERF_OFFLINE")
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        extract_features(speech, engine="hubert")
    assert time.perf_counter() - start < 5
    line = str(err.value)
    assert "\n" not in line and "facebook/hubert-large-ls960-ft" in line and "not in the Hugging Face cache" in line
    assert ("HF_HUB_OFFLINE" in line) if offline_env else ("unreachable" in line)
    assert (no_network == []) if offline_env else (len(no_network) >= 1)
    assert not hub_reachable()


def test_names_identities_and_records(tmp_path):
    assert same_model("hubert", "facebook/hubert-large-ls960-ft") and same_model("wav2vec", "esperanto")
    assert not same_model("hubert", "TencentGameMate/chinese-hubert-large")  # issue #45 of the reference
    assert resolve(str(tmp_path)).name == str(tmp_path.resolve())
    feats = tmp_path / "x_feats.npy"
    assert features_model(feats) is None
    record_features(feats, "hubert")
    record_features(tmp_path / "aud.npy", "mel")
    assert features_model(feats) == "facebook/hubert-large-ls960-ft" and features_model(tmp_path / "aud.npy") == "mel"


def test_process_keeps_each_models_features(tmp_path, subject, no_network, capsys):
    """Two models' features sit side by side in one data folder, each recorded."""
    data = tmp_path / "data"
    data.mkdir()
    video = data / "sub.mp4"
    video.write_bytes(next(subject.glob("*.mp4")).read_bytes())
    one = save_tiny(tmp_path / "one", "HubertModel")
    two = save_tiny(tmp_path / "two", "Wav2Vec2ForCTC")
    for model in (one, two):
        assert process.main([str(video), "--task", "1"]) == 0
        assert process.main([str(video), "--task", "2", "--asr_model", str(model)]) == 0
    a, b = data / feature_file_for(str(one)), data / feature_file_for(str(two))
    assert np.load(a).shape[1:] == (2, 16) and np.load(b).shape[1:] == (16, 12)
    assert features_model(a) == str(one.resolve()) and features_model(b) == str(two.resolve())


def test_checkpoint_refuses_features_of_another_model(tmp_path, subject, trained_head, capsys):
    # Same dimension as the checkpoint's mel features, another model: caught by name, not by shape.
    feats = tmp_path / "other_feats.npy"
    np.save(feats, np.zeros((20, 16, 32), np.float32))
    record_features(feats, "TencentGameMate/chinese-hubert-large")
    assert cli.main(tiny_args(subject, trained_head, "--test", "--test_train", "--aud", feats)) == 2
    line = error_line(capsys)
    assert "TencentGameMate/chinese-hubert-large" in line and "--asr_model mel" in line and "ngp" in line


def test_cli_offline_error_is_one_line(tmp_path, subject):
    """The real command, offline by environment, in a fresh process (the library reads it at import)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "sub.mp4").write_bytes(next(subject.glob("*.mp4")).read_bytes())
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "data_utils/process.py", str(data / "sub.mp4"), "--task", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "data_utils/process.py", str(data / "sub.mp4"), "--task", "2",
                          "--asr_model", "TencentGameMate/chinese-hubert-large"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "error:" in lines[0] and "TencentGameMate/chinese-hubert-large" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert not (data / "aud_TencentGameMate-chinese-hubert-large.npy").exists()
