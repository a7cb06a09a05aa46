"""mediapipe's native start-up chatter is filtered from normal runs, shown with --verbose."""
import os
import subprocess
import sys

from data_utils import process
from data_utils.quiet import VERBOSE_ENV, is_chatter
from tests.conftest import ROOT, shared_file

SCRIPT = """
import sys
import imageio.v2 as imageio
from data_utils.landmarks import LandmarkDetector
from data_utils.parsing import MediapipeParser
with imageio.get_reader(sys.argv[1]) as reader:
    frame = reader.get_data(0)
detector = LandmarkDetector("mediapipe", video=True)
assert detector.detect(frame) is not None and detector.detect(frame) is not None
assert MediapipeParser().person_mask(frame).any()
sys.stderr.write("a real warning\\n")
"""


def _run(video, verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    env.update(OMP_NUM_THREADS="1", **({VERBOSE_ENV: "1"} if verbose else {}))
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(video)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stderr


def test_chatter_hidden_unless_verbose():
    video = shared_file("May_5s.mp4")
    assert _run(video, verbose=False) == "a real warning\n"  # other lines still reach stderr
    loud = _run(video, verbose=True)
    assert "Created TensorFlow Lite XNNPACK delegate" in loud and "a real warning" in loud


def test_chatter_patterns():
    assert is_chatter("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert is_chatter("W0000 00:00:1795975277.555481    8981 inference_feedback_manager.cc:114] Feedback manager "
                      "requires a model with a single signature inference. Disabling support for feedback tensors.")
    assert is_chatter("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert not is_chatter("E0000 00:00:1795975277.555481 8981 calculator_graph.cc:887] INVALID_ARGUMENT: bad frame")
    assert not is_chatter("process.py: error: video not found")


def test_verbose_flags(monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert process.get_parser().parse_args(["v.mp4", "--verbose"]).verbose
    from nerf_triplane.options import parse_args

    assert parse_args(["data", "--verbose"]).verbose and not parse_args(["data"]).verbose
