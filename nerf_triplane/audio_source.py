"""Which audio model the features of a run come from, checked against a checkpoint's.

Features of two models can share a dimension (two HuBERT-large variants both give 1024) yet
mean different things, so a checkpoint records its ``--asr_model`` and the features carry the
model they were made with (``data_utils.asr_models.record_features``).
"""
from __future__ import annotations

from pathlib import Path

from data_utils.asr_models import features_model, resolve, same_model


def features_source(opt) -> dict:
    """The feature file this run feeds the network and the model it came from.

    Returns:
        ``{"file": path, "model": name or None}``; the model is the recorded one, else (the data
        folder's own file, named after its model) ``--asr_model``; None for an ``--aud`` file
        nothing was recorded for.
    """
    from .provider import dataset_feature_path

    if opt.aud:
        path = Path(opt.aud)
        return {"file": str(path), "model": features_model(path)}
    path = dataset_feature_path(Path(opt.path), opt.asr_model)
    return {"file": str(path), "model": features_model(path) or resolve(opt.asr_model).name}


def check_features_model(trained_on: str | None, source: dict | None, checkpoint) -> None:
    """ValueError naming both models when ``source``'s model is not the checkpoint's.

    Args:
        trained_on: the checkpoint's ``asr_model`` (None for checkpoints that predate it).
        source: ``features_source`` of this run (None: unknown, nothing to check).
        checkpoint: the checkpoint's path, for the message.
    """
    if not trained_on or not source or not source.get("model"):
        return
    try:
        same = same_model(trained_on, source["model"])
    except ValueError:  # a name this version no longer resolves: compare it as written
        same = trained_on == source["model"]
    if not same:
        raise ValueError(f"{checkpoint} was trained on features of --asr_model {trained_on}, but {source['file']} "
                         f"holds features of {source['model']}: use {trained_on}'s features "
                         f"(process.py --asr_model {trained_on}, or --aud with an audio file) or train a new workspace")
