"""Frames per second and latency of the live viewer's renderer (``main.py --gui``) on this machine.

    python scripts/bench_live.py DATA --workspace W [main.py model flags] [--frames 20] [--gui_max_side 128]

Loads the workspace's newest checkpoint as ``--gui`` does and renders ``--frames`` frames through the
viewer's worker (pose track and training audio advancing, JPEG encoded as sent). Prints one JSON
line: render size, median wall and CPU milliseconds per frame (the frame's latency from request
to JPEG, the server side of what the page shows), the frame rate one tab gets (1000 / median),
the JPEG size, and the machine's load average (other processes slow a shared CPU).
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    import torch

    import main as cli
    from nerf_triplane.live.worker import LiveModel, View

    argv = list(sys.argv[1:] if argv is None else argv)
    frames = 20
    if "--frames" in argv:
        i = argv.index("--frames")
        frames = int(argv[i + 1])
        del argv[i:i + 2]
    # The option and loader log lines go to stderr, so stdout is the JSON line alone.
    with contextlib.redirect_stdout(sys.stderr):
        opt = cli.parse_args(argv)
        if opt.preset:
            from nerf_triplane.presets import apply_preset

            apply_preset(opt, argv)
        cli.remember_model_flags(opt, argv)
        device = cli.pick_device(opt.device)
        live = LiveModel(opt, device, max_side=opt.gui_max_side)
    walls, cpus, sizes = [], [], []
    try:
        for k in range(frames + 1):
            view = View(frame=live.dataset.mirror_index(k))
            w0, c0 = time.perf_counter(), time.process_time()
            jpeg, _ = live.submit(view, live.train_features, k).result()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k:  # the first frame warms the caches
                walls.append((time.perf_counter() - w0) * 1000)
                cpus.append((time.process_time() - c0) * 1000)
                sizes.append(len(jpeg))
    finally:
        live.close()
    wall = statistics.median(walls)
    print(json.dumps({"size": live.size, "device": device.type, "frames": frames, "threads": torch.get_num_threads(),
                      "wall_ms": round(wall, 1), "cpu_ms": round(statistics.median(cpus), 1),
                      "fps": round(1000 / wall, 2), "jpeg_bytes": int(statistics.median(sizes)),
                      "load_avg": [round(x, 1) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
