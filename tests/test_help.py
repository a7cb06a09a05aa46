"""--help of main.py and process.py: every option in a named section, one help entry each."""
import subprocess
import sys

import pytest

from data_utils import process
from nerf_triplane.option_sections import MAIN_SECTIONS
from nerf_triplane.options import get_parser
from tests.conftest import ROOT


def _sections(text: str) -> dict[str, list[str]]:
    """``--help`` text -> section title -> its lines."""
    sections = {}
    for block in text.split("\n\n"):
        title, _, body = block.partition(":\n")
        if body and "\n" not in title:
            sections[title] = body.splitlines()
    return sections


@pytest.mark.parametrize("parser", [get_parser(), process.get_parser()], ids=["main", "process"])
def test_every_option_sits_in_a_section_with_help(parser):
    sections = _sections(parser.format_help())
    assert [line.split()[0] for line in sections.pop("options")] == ["-h,"]  # nothing left unsectioned
    entries = {}
    for lines in sections.values():
        for k, line in enumerate(lines):
            if line.startswith("  -"):
                flag, *rest = line.split(maxsplit=1)
                helped = len(line.split("  ", 2)) > 2 or (k + 1 < len(lines) and lines[k + 1].startswith(" " * 8))
                entries[flag] = helped
    dests = [d for d in vars(parser.parse_args(["x"])) if d != "path"]
    for dest in dests:
        flag = next((f for f in (f"--{dest}", f"-{dest}") if f in entries), None)
        assert flag is not None, f"--{dest} is in no help section"
        assert entries[flag], f"{flag} has no help line"


def test_main_help_lists_the_sections_in_order():
    text = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True).stdout
    positions = [text.index(f"\n{title}:\n") for title in MAIN_SECTIONS]
    assert positions == sorted(positions)
    for title in ("data", "training", "rendering", "torso", "lips", "audio", "evaluation"):
        assert title in MAIN_SECTIONS
    assert text.startswith("usage: main.py PATH [options]\n")
    assert "  --grid_size GRID_SIZE" in text.split("\nrendering:\n")[1].split("\n\n")[0]
    assert "(default: False)" not in text


def test_process_help_sections():
    text = subprocess.run([sys.executable, "data_utils/process.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True).stdout
    assert text.index("\nsteps:\n") < text.index("\nmodels:\n") < text.index("\nstep settings:\n")
    assert "--landmark_engine" in text.split("\nmodels:\n")[1]


def test_parsing_unchanged_by_the_sections():
    opt = get_parser().parse_args(["data", "-O", "--grid_size", "64", "--asr_model", "hubert", "-l", "3"])
    assert (opt.O, opt.grid_size, opt.asr_model, opt.l, opt.num_rays) == (True, 64, "hubert", 3, 65536)
