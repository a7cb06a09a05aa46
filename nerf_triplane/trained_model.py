"""A workspace's trained model, ready to render the frames of a dataset.

    model, trainer, checkpoint = load_trained(opt, dataset, device, purpose="--test")

One loader for ``main.py --test``, the live viewer and the measuring scripts, so that all of
them check the checkpoint against the features the same way and refuse a missing one with the
same fix.
"""
from __future__ import annotations

from pathlib import Path


def load_trained(opt, dataset, device, purpose: str):
    """Build the network for ``dataset``, load ``opt.ckpt`` from ``opt.workspace``, attach the data.

    Args:
        opt: ``main.py`` options (``workspace``, ``ckpt``, the model flags of the workspace).
        dataset: the ``NeRFDataset`` whose frames will be rendered (its audio width sizes the
            network; its audio, eye values and poses serve the renders and grid refreshes).
        device: torch device.
        purpose: what needs the model, for the error message (e.g. ``"--test"``).
    Returns:
        ``(model, trainer, checkpoint)``: the ``NeRFNetwork`` in eval mode, its
        ``Trainer(train=False)`` and what ``Trainer.load_checkpoint`` returned.
    Raises:
        FileNotFoundError: no checkpoint matches ``--ckpt`` (one line naming the folder).
        ValueError: the checkpoint does not fit the options or the features (its own message).
    """
    from .audio_source import features_source
    from .network import NeRFNetwork
    from .trainer import Trainer

    model = NeRFNetwork(opt, audio_dim=dataset.audio_dim).to(device)
    # Recorded so that load_checkpoint refuses features of another audio model.
    model.audio_source = features_source(opt)
    trainer = Trainer(opt, model, opt.workspace, device, train=False)
    checkpoint = trainer.load_checkpoint(opt.ckpt)
    if checkpoint is None:
        raise FileNotFoundError(f"{purpose} needs a trained model: no checkpoint for --ckpt {opt.ckpt} in "
                                f"{Path(opt.workspace) / 'checkpoints'} (train the workspace first)")
    trainer.set_train_data(dataset)
    model.eval()
    return model, trainer, checkpoint
