"""Skipping optimiser steps whose loss or gradient is not finite, and stopping on a streak.

One NaN/inf step (a degenerate ray batch, an fp16 overflow) is skipped and counted; a long
streak means training has diverged (learning rate) or the data holds NaN/inf, and going on
would only burn time, so it stops with one message naming the step and the likely cause.
"""
from __future__ import annotations

import torch


def grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimiser would apply is finite (one device sync)."""
    peaks = [p.grad.detach().abs().amax().float() for group in optimizer.param_groups
             for p in group["params"] if p.grad is not None and p.grad.numel()]
    # amax propagates NaN, and inf stays inf: one check covers both.
    return not peaks or bool(torch.isfinite(torch.stack(peaks)).all())


def nonfinite_inputs(batch: dict) -> list[str]:
    """Keys of the floating-point tensors of a training batch that hold NaN/inf."""
    return [k for k, v in batch.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


class NonFiniteGuard:
    """Counts skipped steps; raises ``FloatingPointError`` after ``limit`` in a row.

    Args:
        limit: consecutive non-finite steps that stop training (``--max_nonfinite``, >= 1).
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"--max_nonfinite must be >= 1, got {limit}")
        self.limit = limit
        self.skipped = 0  # all skipped steps of the run (saved in checkpoints)
        self.streak = 0
        self.first = 0  # global step where the current streak began
        self.bad_data: str | None = None  # first batch of the streak with NaN/inf inputs

    def record(self, finite: bool, step: int, batch: dict) -> bool:
        """Account for optimiser step ``step``; returns True when it was skipped.

        Args:
            finite: whether the loss and the gradients were finite (the step was applied).
            step: global step (1-based) just taken.
            batch: its training batch (inputs checked for NaN/inf to name the cause).
        """
        if finite:
            self.streak = 0
            return False
        self.skipped += 1
        self.streak += 1
        if self.streak == 1:
            self.first, self.bad_data = step, None
        if self.bad_data is None and (bad := nonfinite_inputs(batch)):
            self.bad_data = f"frame {int(batch['index'][0])} has NaN/inf in {', '.join(bad)}"
        return True

    def stop_if_diverged(self, step: int, rates: str, kept: str) -> None:
        """Raise ``FloatingPointError`` once the streak reaches the limit.

        Args:
            step: global step just skipped.
            rates: the learning-rate flags, for the message (``--lr 0.01 ...``).
            kept: the newest checkpoint on disk, for the message.
        """
        if self.streak < self.limit:
            return
        if self.bad_data is not None:
            cause = f"the data ({self.bad_data}): repair the data folder (data_utils/process.py --force)"
        else:
            cause = f"a learning rate too high ({rates}): lower it and rerun"
        raise FloatingPointError(
            f"training stopped at step {step}: {self.streak} steps in a row (since step {self.first}) had a "
            f"non-finite loss or gradient and were skipped; likely cause: {cause}; nothing non-finite was "
            f"saved, the last good checkpoint is kept ({kept})")
