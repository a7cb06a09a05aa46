"""The live viewer's web server (``main.py --gui``), on aiohttp.

Routes:

* ``GET /``: the page (``static/index.html``);
* ``GET /info``: model, render size, pose-track length and the audio sources (JSON);
* ``GET /audio/{source}.wav``: a source's sound, which the page plays;
* ``POST /upload``: a wav/mp3 (form field ``audio``) -> features with the model's ``--asr_model``
  -> a new source; bad files get ``{"error": ...}`` and the server carries on;
* ``GET /ws``: the frame socket. The page sends ``{"t": seconds, "source", "playing", "view"}``
  and gets one binary message per request: a 4-byte big-endian header length, the JSON header
  (``k``, ``frame``, ``t``, ``render_ms``, ``server_ms``, ``size``, ``lips``) and the JPEG. One
  request is in flight per tab, so a slow renderer lowers the frame rate, not the freshness.

Frames are rendered on one worker thread whatever the number of tabs; a closed tab ends its own
socket only. Ctrl-C (SIGINT) or SIGTERM closes the sockets, stops the stream and returns.
"""
from __future__ import annotations

import asyncio
import json
import signal
import struct
import time
from pathlib import Path

import numpy as np
from aiohttp import WSMsgType, web

from .sources import MAX_UPLOAD_BYTES, Source, decode_upload, wav_bytes
from .worker import View

STATIC = Path(__file__).resolve().parent / "static"


class LiveServer:
    """The viewer's state: the model, its sources, the open sockets.

    Args:
        live: a ``LiveModel``.
        asr_model: the model's ``--asr_model`` (uploads are extracted with it).
        asr_weights: ``--asr_weights`` ('' = none).
        train_audio: the data folder's ``aud.wav`` (None when absent: the training source is silent).
        stream: a started ``StreamSource`` (``--asr``) or None.
    """

    def __init__(self, live, asr_model: str, asr_weights: str = "", train_audio: Path | None = None,
                 stream=None):
        self.live, self.asr_model, self.asr_weights = live, asr_model, asr_weights
        wav = None
        if train_audio is not None and train_audio.is_file():
            from data_utils.audio import load_audio

            wav = wav_bytes(load_audio(train_audio))
        self.sources: dict = {"train": Source("train", "training audio", live.train_features, wav)}
        if stream is not None:
            self.sources["stream"] = stream
        self.stream = stream
        self.uploads = 0
        self.sockets: set[web.WebSocketResponse] = set()
        self._extract_lock = asyncio.Lock()

    # ---------------------------------------------------------------------------- app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_get("/", self.index)
        app.router.add_get("/info", self.info)
        app.router.add_get("/audio/{name}.wav", self.audio)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/ws", self.socket)
        app.router.add_static("/static", STATIC)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def _close_sockets(self, app) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutting down")

    # ---------------------------------------------------------------------------- handlers

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def info(self, request: web.Request) -> web.Response:
        live = self.live
        device = live.device.type
        note = (f"rendering {live.size[1]}x{live.size[0]} on the CPU (full size {live.full_size[1]}x"
                f"{live.full_size[0]} on a GPU); the browser scales it up") if live.reduced else \
            f"rendering {live.size[1]}x{live.size[0]} on {device}"
        return web.json_response({
            "size": live.size, "full_size": live.full_size, "reduced": live.reduced, "note": note,
            "device": device, "frames": live.frames, "torso": bool(live.opt.torso),
            "eye": live.dataset.eye_area is not None, "checkpoint": str(live.checkpoint),
            "asr_model": self.asr_model, "max_upload_bytes": MAX_UPLOAD_BYTES,
            "sources": [s.describe() for s in self.sources.values()]})

    async def audio(self, request: web.Request) -> web.Response:
        source = self.sources.get(request.match_info["name"])
        if source is None or source.wav is None:
            raise web.HTTPNotFound(text="no sound for this source")
        # Byte ranges let the browser seek in the sound (Chromium cannot seek a resource without them).
        data, size = source.wav, len(source.wav)
        try:
            rng = request.http_range
        except ValueError:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
        if rng.start is None and rng.stop is None:
            return web.Response(body=data, content_type="audio/wav", headers={"Accept-Ranges": "bytes"})
        start = rng.start if rng.start is not None else 0
        start = max(0, size + start) if start < 0 else start
        stop = size if rng.stop is None else min(rng.stop, size)
        if start >= stop:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
        return web.Response(status=206, body=data[start:stop], content_type="audio/wav",
                            headers={"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{stop - 1}/{size}"})

    async def upload(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"the file is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MB: "
                                               "upload a shorter wav or mp3"}, status=413)
        field = form.get("audio")
        if field is None or not hasattr(field, "file"):
            return web.json_response({"error": "no file in the upload (form field 'audio')"}, status=400)
        name = Path(field.filename or "upload").name
        data = field.file.read()
        loop = asyncio.get_running_loop()
        try:
            async with self._extract_lock:  # one extraction at a time; rendering goes on meanwhile
                audio = await loop.run_in_executor(None, decode_upload, data, name)
                feats = await loop.run_in_executor(None, self._extract, audio)
        except (ValueError, OSError) as err:
            return web.json_response({"error": str(err)}, status=400)
        self.uploads += 1
        key = f"upload{self.uploads}"
        self.sources[key] = Source(key, name, self.live.features(feats), wav_bytes(audio))
        print(f"[INFO] live viewer: {name}: {feats.shape[0]} frames of {self.asr_model} features", flush=True)
        return web.json_response({"source": self.sources[key].describe()})

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        from data_utils.audio_features import extract_features

        return extract_features(audio, engine=self.asr_model, fps=25, weights=self.asr_weights or None)

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=1 << 16)
        await ws.prepare(request)
        self.sockets.add(ws)
        loop = asyncio.get_running_loop()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                    source = self.sources.get(req.get("source", "train")) or self.sources["train"]
                    view = View.from_dict(req.get("view", {}))
                except (ValueError, TypeError, AttributeError) as err:
                    await ws.send_str(json.dumps({"error": f"bad request: {err}"}))
                    continue
                t = float(req.get("t", 0.0))
                features, k = source.at(t)
                if features is None:
                    await ws.send_str(json.dumps({"error": "the stream has no features yet", "retry": True}))
                    await asyncio.sleep(0.2)
                    continue
                if req.get("playing") and req.get("follow", True):
                    # The pose track plays forwards then backwards, as the test renders do.
                    view.frame = self.live.dataset.mirror_index(k if not source.live else source.count)
                start = time.perf_counter()
                jpeg, info = await asyncio.wrap_future(self.live.submit(view, features, k), loop=loop)
                info.update(t=t, source=source.name, server_ms=round((time.perf_counter() - start) * 1000, 1),
                            lips=self.live.lips_rect(view.frame), stream=source.describe() if source.live else None)
                header = json.dumps(info).encode()
                if ws.closed:
                    break
                await ws.send_bytes(struct.pack(">I", len(header)) + header + jpeg)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the tab went away mid-frame: only this socket ends
        finally:
            self.sockets.discard(ws)
        return ws


async def serve(server: LiveServer, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, printing the URL once listening (port 0: a free one)."""
    runner = web.AppRunner(server.app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}/"
    print(f"[INFO] live viewer at {url} (Ctrl-C stops it)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        print("[INFO] live viewer stopped", flush=True)
