"""``main.py --gui`` (the web viewer) and ``--asr`` (streaming audio features)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import torch

FEATURE_FPS = 50  # the only --fps the streaming features run at (20 ms steps)


def check_live_options(opt) -> None:
    """ValueError (FileNotFoundError for a missing ``--asr_wav``) for live flags that cannot work
    (together), checked by ``main.py`` before any work."""
    if opt.fps != FEATURE_FPS:
        raise ValueError(f"--fps {opt.fps}: the audio features run at {FEATURE_FPS} steps per second (20 ms "
                         f"chunks); leave --fps at {FEATURE_FPS}")
    if (opt.asr_wav or opt.asr_play or opt.asr_save_feats) and not opt.asr:
        raise ValueError("--asr_wav, --asr_play and --asr_save_feats belong to --asr: add --asr")
    if opt.asr and not opt.gui and not opt.asr_save_feats:
        raise ValueError("--asr without --gui only computes features: add --gui to watch the model, or "
                         "--asr_save_feats to write them")
    if opt.asr_wav and not Path(opt.asr_wav).is_file():
        raise FileNotFoundError(f"--asr_wav {opt.asr_wav} not found: give a wav/mp3 file, or leave it out to "
                                "use the microphone")
    if opt.gui and not 0 <= opt.gui_port <= 65535:
        raise ValueError(f"--gui_port {opt.gui_port}: must be 0..65535 (0 = any free port)")
    if opt.gui and (opt.W < 8 or opt.H < 8 or opt.gui_max_side < 8):
        raise ValueError("--W, --H and --gui_max_side must be at least 8 pixels")
    if opt.gui and not 0 < opt.fovy < 180:
        raise ValueError(f"--fovy {opt.fovy}: must be between 0 and 180 degrees")


def make_streamer(opt):
    """The ``StreamingFeatures`` of ``--asr`` for the model's ``--asr_model``.

    ``--asr_wav``: the file's statistics are taken first (it is known), so the stream equals the
    offline features; the microphone uses running statistics.
    """
    from data_utils.asr_models import resolve
    from data_utils.audio import load_audio
    from data_utils.stream_features import StreamingFeatures, mel_stats, wave_stats

    stats = None
    if opt.asr_wav:
        audio = load_audio(opt.asr_wav)
        stats = mel_stats(audio) if resolve(opt.asr_model).engine == "mel" else wave_stats(audio)
    return StreamingFeatures(opt.asr_model, opt.l, opt.m, opt.r, fps=25, stats=stats,
                             weights=opt.asr_weights or None)


def save_stream(opt, frames) -> Path | None:
    """``--asr_save_feats``: write the streamed frames ``[N, 16|2, A]`` to
    ``<workspace>/results/<wav stem>_asr.npy`` (``mic_asr.npy`` for the microphone)."""
    from data_utils.asr_models import record_features
    from data_utils.atomic import save_npy

    if frames is None:
        print("[WARN] --asr_save_feats: the stream produced no features")
        return None
    stem = Path(opt.asr_wav).stem if opt.asr_wav else "mic"
    out = Path(opt.workspace) / "results" / f"{stem}_asr.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npy(out, frames)
    record_features(out, opt.asr_model)
    print(f"[INFO] {frames.shape[0]} frames of streamed {opt.asr_model} features -> {out}")
    return out


def run_live(opt, device: torch.device) -> int:
    """Run ``--gui`` (serving until Ctrl-C) and/or ``--asr``; returns the exit code."""
    from .sources import StreamSource

    streamer = make_streamer(opt) if opt.asr else None
    lookahead = {0: 0, 1: 0, 2: 3}[opt.att]  # frames after the shown one its audio window reads
    if not opt.gui:
        stream = StreamSource(streamer, None, opt.asr_wav or None, opt.asr_play, lookahead, keep_all=True)
        stream.start()
        try:
            while not stream.done:
                time.sleep(0.1)
        except KeyboardInterrupt:
            print("[INFO] stream interrupted: saving what arrived")
        stream.stop()
        save_stream(opt, stream.all_frames())
        return 0 if stream.error is None else 2

    from .server import LiveServer, serve
    from .worker import LiveModel

    live = LiveModel(opt, device, max_side=opt.gui_max_side)
    stream = None
    if streamer is not None:
        stream = StreamSource(streamer, live.features, opt.asr_wav or None, opt.asr_play, lookahead,
                              keep_all=opt.asr_save_feats)
        stream.start()
    server = LiveServer(live, opt.asr_model, opt.asr_weights, Path(opt.path) / "aud.wav", stream)
    try:
        asyncio.run(serve(server, opt.gui_host, opt.gui_port))
    finally:
        if stream is not None:
            stream.stop()
            if opt.asr_save_feats:
                save_stream(opt, stream.all_frames())
        live.close()
    return 0
