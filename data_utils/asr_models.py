"""What an ``--asr_model`` value names, which file its features go to, and loading its weights.

``--asr_model`` is the model itself:

* ``mel``: the offline log-mel features (no weights);
* ``deepspeech`` (any name containing it, as in the reference): DeepSpeech 0.1.0;
* a Hugging Face model id or a local folder of a HuBERT / wav2vec2-style speech model. The
  reference's names keep their files: ``cpierse/wav2vec2-large-xlsr-53-esperanto`` (alias
  ``wav2vec``, ``esperanto``) -> ``aud_eo.npy``, ``facebook/hubert-large-ls960-ft`` (alias
  ``hubert``) -> ``aud_hu.npy``, ``deepspeech`` -> ``aud_ds.npy``, ``mel`` -> ``aud.npy``; any
  other model -> ``aud_<model>.npy``, so two models' features never overwrite each other.

Weights load the way ``transformers`` loads them (its cache, its download; ``HF_HUB_OFFLINE``,
``TRANSFORMERS_OFFLINE`` and ``ERNERF_OFFLINE`` honoured). A cached model is used without asking
the Hub; a model that is not cached is downloaded, and when the Hub cannot be reached (a 3 s probe
instead of the library's ~20 s of retries) or offline mode is set, one line says so.

Each folder holding features keeps ``audio_features.json`` (file name -> model) so a checkpoint
trained on one model's features is never fed another's (``features_model``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from data_utils.downloads import offline

WAV2VEC_MODEL = "cpierse/wav2vec2-large-xlsr-53-esperanto"
HUBERT_MODEL = "facebook/hubert-large-ls960-ft"
ALIASES = {"wav2vec": WAV2VEC_MODEL, "esperanto": WAV2VEC_MODEL, "hubert": HUBERT_MODEL}
REFERENCE_FILES = {"mel": "aud.npy", "deepspeech": "aud_ds.npy", WAV2VEC_MODEL: "aud_eo.npy",
                   HUBERT_MODEL: "aud_hu.npy"}
RECORD_NAME = "audio_features.json"
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class AsrModel:
    """A resolved ``--asr_model``.

    ``name``: the model's identity ('mel', 'deepspeech', a Hub id, or an absolute folder path);
    ``engine``: 'mel' | 'deepspeech' | 'speech' (a transformers HuBERT/wav2vec2-style model);
    ``feature_file``: the features' file name inside a data folder.
    """

    name: str
    engine: str
    feature_file: str


def _looks_like_path(value: str) -> bool:
    # A Hub id is "name" or "org/name"; transformers also prefers an existing folder of that name.
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value \
        or Path(value).expanduser().is_dir()


def resolve(asr_model: str) -> AsrModel:
    """Resolve an ``--asr_model`` value without touching the network or the weights.

    Raises ValueError for an empty value or one that is neither a Hub id nor a folder.
    """
    value = str(asr_model).strip()
    if not value:
        raise ValueError("--asr_model is empty: use mel, deepspeech, a Hugging Face model id or a model folder")
    value = ALIASES.get(value.lower(), value)
    if value.lower() == "mel":
        return AsrModel("mel", "mel", REFERENCE_FILES["mel"])
    if _looks_like_path(value):
        folder = Path(value).expanduser().resolve()
        digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
        return AsrModel(str(folder), "speech", f"aud_{_slug(folder.name)}-{digest}.npy")
    if "deepspeech" in value.lower():
        return AsrModel("deepspeech", "deepspeech", REFERENCE_FILES["deepspeech"])
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", value):
        raise ValueError(f"--asr_model {value!r} is neither mel, deepspeech, a Hugging Face model id "
                         "(org/name) nor an existing folder")
    return AsrModel(value, "speech", REFERENCE_FILES.get(value) or f"aud_{_slug(value)}.npy")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def same_model(a: str, b: str) -> bool:
    """Whether two ``--asr_model`` values name the same model (aliases included)."""
    return resolve(a).name == resolve(b).name


# ---------------------------------------------------------------------------- records

def record_features(path: str | os.PathLike, asr_model: str) -> None:
    """Note in ``<folder>/audio_features.json`` that ``path`` holds ``asr_model``'s features."""
    from data_utils.atomic import write_json

    path = Path(path)
    record = path.parent / RECORD_NAME
    entries = _read_record(record)
    entries[path.name] = {"asr_model": resolve(asr_model).name}
    write_json(record, entries)


def features_model(path: str | os.PathLike) -> str | None:
    """The model recorded for the feature file ``path``, or None when nothing was recorded."""
    path = Path(path)
    entry = _read_record(path.parent / RECORD_NAME).get(path.name)
    return entry.get("asr_model") if isinstance(entry, dict) else None


def _read_record(record: Path) -> dict:
    if not record.is_file():
        return {}
    try:
        entries = json.loads(record.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{record} is not valid JSON: delete it (the feature files stay valid)") from err
    return entries if isinstance(entries, dict) else {}


# ---------------------------------------------------------------------------- loading

def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint (``HF_ENDPOINT``) opens within ``timeout`` s.

    Behind a proxy the proxy decides, so this answers True and the library's own timeouts apply.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _unavailable(spec: AsrModel, source: str, local_only: bool, err: Exception) -> FileNotFoundError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(source).is_dir():
        return FileNotFoundError(f"{source}: not a loadable HuBERT/wav2vec2 model folder for --asr_model "
                                 f"{spec.name} ({first}); it needs config.json and the weights (save_pretrained)")
    if local_only:
        why = "offline mode is set (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE/ERNERF_OFFLINE)" if offline() else "the Hugging Face Hub is unreachable"
        return FileNotFoundError(f"--asr_model {spec.name}: not in the Hugging Face cache and {why}: run once "
                                 f"on a connected machine (it downloads into ~/.cache/huggingface/hub) or pass "
                                 f"a local model folder as --asr_model")
    return FileNotFoundError(f"--asr_model {spec.name}: could not load it from the Hugging Face Hub ({first}): "
                             "check the model id, or pass a local model folder")


class _Fetcher:
    """``from_pretrained`` from a local folder or the Hub cache first; the Hub (transformers'
    download) only on a miss.

    A cached model is loaded from its snapshot folder, so a cached run never touches the network
    and its features stay reproducible; whether the Hub is reachable is asked once, at the first miss.
    """

    def __init__(self, spec: AsrModel, source: str):
        self.spec, self.source, self.online = spec, source, None
        self.local = source if Path(source).is_dir() else self._cached_snapshot(source)

    @staticmethod
    def _cached_snapshot(repo_id: str) -> str | None:
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(repo_id, local_files_only=True)
        except (OSError, ValueError):  # not cached (LocalEntryNotFoundError) or not a valid id
            return None

    def __call__(self, cls):
        if self.local is not None:
            try:
                return cls.from_pretrained(self.local, local_files_only=True)
            except (OSError, ValueError) as err:
                if self.local == self.source:
                    raise _unavailable(self.spec, self.source, True, err) from err
                miss = err  # a partial cache: the missing files may still be downloaded
        else:
            miss = FileNotFoundError(f"{self.source} is not in the cache")
        if self.online is None:
            self.online = not offline() and hub_reachable()
        if not self.online:
            raise _unavailable(self.spec, self.source, True, miss)
        try:
            return cls.from_pretrained(self.source)
        except (OSError, ValueError) as err:
            raise _unavailable(self.spec, self.source, False, err) from err


def load_speech_model(asr_model: str, weights: str | os.PathLike | None = None):
    """Load a HuBERT / wav2vec2-style model and its feature extractor, transformers' way.

    Args:
        asr_model: Hub id or local folder (aliases allowed).
        weights: a local folder that replaces the model's download (the reference's
            ``--asr_weights``), or None.

    Returns:
        ``(model in eval mode, feature extractor or None when the model has none)``. A HuBERT
        config loads ``HubertModel`` (hidden states, as the reference); other configs with a
        ``*ForCTC`` architecture load the CTC model (logits); the rest the base model.
    """
    import transformers

    spec = resolve(asr_model)
    if spec.engine != "speech":
        raise ValueError(f"--asr_model {asr_model} is not a transformers speech model")
    source = spec.name
    if weights:
        if not Path(weights).is_dir():
            raise FileNotFoundError(f"--asr_weights {weights} does not exist: pass a folder holding the "
                                    f"model's config.json and weights ({spec.name})")
        source = str(weights)
    elif Path(source).is_absolute() and not Path(source).is_dir():
        raise FileNotFoundError(f"--asr_model {source}: no such folder (give a Hugging Face model id or "
                                "a folder written by save_pretrained)")
    fetch = _Fetcher(spec, source)
    config = fetch(transformers.AutoConfig)
    if not hasattr(config, "conv_stride"):
        raise ValueError(f"--asr_model {spec.name} is a {config.model_type!r} model: use a HuBERT or "
                         "wav2vec2-style speech model (with a convolutional feature encoder), mel or deepspeech")
    ctc = config.model_type != "hubert" and any(a.endswith("ForCTC") for a in config.architectures or ())
    model = fetch(transformers.AutoModelForCTC if ctc else transformers.AutoModel)
    try:
        extractor = fetch(transformers.AutoFeatureExtractor)
    except FileNotFoundError:
        extractor = None  # no preprocessor_config.json: the caller normalises like the default extractor
    return model.eval(), extractor
