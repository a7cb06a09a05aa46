"""The live viewer (``main.py --gui``) as a person uses it: a real headless Chromium opens the page,
waits for frames, moves the eye slider, uploads a wav and plays it, and the server stops on Ctrl-C.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/setup_env.sh`` installs them when
run as root); skipped with the reason otherwise. Nothing is downloaded.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from data_utils.audio import write_wav
from tests.conftest import ROOT, tiny_args

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--window-size=900,700")
START_TIMEOUT_S = 600  # model loading on a busy shared CPU (seconds on an idle one)


def find_browser() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements.txt)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no Chromium: install it with `apt-get install -y chromium chromium-driver` "
                    "(scripts/setup_env.sh does it when run as root)")
    return browser, driver


@pytest.fixture(scope="module")
def viewer(subject, trained_head):
    """``main.py --gui`` on the trained tiny head, on a free loopback port: ``(url, process)``."""
    find_browser()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # The 64² subject rendered at 64²: frames come quickly even on a busy CPU.
    cmd = [sys.executable, str(ROOT / "main.py"), *tiny_args(subject, trained_head), "--gui", "--gui_port", "0",
           "--gui_max_side", "64"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, url = [], None
    deadline = time.monotonic() + START_TIMEOUT_S
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "live viewer at " in line:
            url = line.split("live viewer at ")[1].split()[0]
    if url is None:
        proc.kill()
        pytest.fail("the viewer did not start:\n" + "".join(lines))
    state = {"lines": lines}
    yield url, proc, state
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def browser(viewer):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={ROOT / '.pytest_cache' / f'chromium-{os.getpid()}'}")
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def wait_for(fn, timeout=180, step=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what}")


def frames_received(drv) -> int:
    return int(drv.find_element("id", "count").text or 0)


def shown_pixels(drv) -> tuple[np.ndarray, dict]:
    """The image on the page (RGB, [H, W, 3] uint8) and the header of the frame it shows."""
    data = drv.execute_script("""
        const img = document.getElementById('view');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data),
                JSON.stringify(window.lastHeader)];""")
    w, h, rgba, header = data
    return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[..., :3], json.loads(header)


def next_frames(drv, n=2):
    """Wait until ``n`` more frames arrived (so the page shows the current controls)."""
    start = frames_received(drv)
    wait_for(lambda: frames_received(drv) >= start + n, what=f"{n} more frames")


def upload(drv, path):
    """Choose ``path`` in the file input, press upload; the page's reply (a new message)."""
    old = drv.find_element("id", "message").text
    drv.find_element("id", "file").send_keys(str(path))
    drv.find_element("id", "upload").click()
    return wait_for(lambda: (m := drv.find_element("id", "message").text) != old and "extracting" not in m and m,
                    what="the upload's reply")


def test_viewer_in_a_real_browser(viewer, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    url, proc, _ = viewer
    browser.get(url)
    wait_for(lambda: frames_received(browser) >= 3, what="the first frames")
    note = browser.find_element("id", "note").text
    assert "rendering" in note
    assert float(browser.find_element("id", "fps").text) > 0

    # Eye: the slider moved by keyboard (End = fully shut) changes the picture.
    before, _ = shown_pixels(browser)
    browser.find_element("id", "eye").send_keys(Keys.END)
    assert not browser.find_element("id", "eye-track").is_selected()
    next_frames(browser)
    after, _ = shown_pixels(browser)
    assert np.abs(after.astype(float) - before).mean() > 0.05

    # A short wav drives the mouth: with the pose pinned, the lips region changes with the audio.
    # 30 s, so it still plays when a frame requested on a slow machine comes back.
    t = np.arange(16000 * 30) / 16000
    speech = 0.4 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    write_wav(tmp_path / "speech.wav", speech.astype(np.float32))
    assert "frames ready" in upload(browser, tmp_path / "speech.wav")
    browser.find_element("id", "follow").click()
    browser.find_element("id", "play").click()
    # Playing: the sound's clock moves the audio frame forward.
    wait_for(lambda: browser.execute_script("return window.headers.some((h) => h.k > 0)"),
             what="a frame of a later audio frame while playing")
    # ... and the page measured the audio-video offset of the frames it showed meanwhile.
    assert browser.execute_script("return window.headers.some((h) => Number.isFinite(h.offset_ms))")
    if browser.find_element("id", "play").text == "pause":
        browser.find_element("id", "play").click()
    # Paused, the position slider picks the audio frame: 0 s, then 20 % and 40 % of the clip (6 s, 12 s).
    seek = browser.find_element("id", "seek")
    lips = {}
    for keys in ([Keys.HOME], [Keys.PAGE_UP] * 2, [Keys.PAGE_UP] * 2):
        seek.send_keys(*keys)
        want = round(float(seek.get_attribute("value")) * 25)
        wait_for(lambda: shown_pixels(browser)[1]["k"] == want, what=f"the frame of audio frame {want}")
        next_frames(browser, 1)
        pixels, header = shown_pixels(browser)
        r0, r1, c0, c1 = header["lips"]
        lips[header["k"]] = pixels[r0:r1, c0:c1].astype(float)
    assert len(lips) == 3, f"the slider gave audio frames {sorted(lips)}"
    first, *rest = lips.values()
    assert max(np.abs(img - first).mean() for img in rest) > 0.01
    assert browser.find_element("id", "offset").text == "-"  # paused: no offset to show
    shot = tmp_path / "live_viewer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    print(f"screenshot: {shot}")

    # Bad uploads: a clear message on the page, and frames keep coming.
    (tmp_path / "notes.wav").write_text("this is not audio")
    assert "not audio" in upload(browser, tmp_path / "notes.wav")
    (tmp_path / "empty.mp3").write_bytes(b"")
    assert "empty" in upload(browser, tmp_path / "empty.mp3")
    from nerf_triplane.live.sources import MAX_UPLOAD_BYTES

    with open(tmp_path / "huge.wav", "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: nothing is written
    assert "larger than" in upload(browser, tmp_path / "huge.wav")
    next_frames(browser)

    # A closed tab ends its own socket only.
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(url)
    wait_for(lambda: frames_received(browser) >= 1, what="frames in the second tab")
    browser.close()
    browser.switch_to.window(first_tab)
    next_frames(browser)
    assert proc.poll() is None


def test_huge_upload_is_refused_and_server_carries_on(viewer):
    url, proc, _ = viewer
    from nerf_triplane.live.sources import MAX_UPLOAD_BYTES

    body = b"--x\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"big.wav\"\r\n\r\n" + \
        b"\0" * (MAX_UPLOAD_BYTES + 1024) + b"\r\n--x--\r\n"
    req = urllib.request.Request(url + "upload", data=body, method="POST",
                                 headers={"Content-Type": "multipart/form-data; boundary=x"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413 and "larger than" in json.loads(err.value.read())["error"]
    with urllib.request.urlopen(url + "info", timeout=30) as r:
        assert json.loads(r.read())["frames"] > 0


def test_ctrl_c_stops_the_server_cleanly(viewer):
    url, proc, state = viewer
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    log = "".join(state["lines"]) + out
    assert proc.returncode == 0, log
    assert "live viewer stopped" in log and "Traceback" not in log
