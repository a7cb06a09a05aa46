"""scripts/run_many.py: two tiny real subjects and a broken video on a local Ray with 2 CPUs."""
import csv
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, shared_file


def _cut(src, dst, start: float, seconds: float) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-ss", str(start), "-i", str(src),
                    "-t", str(seconds), "-vf", "scale=96:96", str(dst)], check=True)


@pytest.mark.slow
@pytest.mark.shared
def test_two_subjects_and_a_broken_video(tmp_path):
    from data_utils.audio import load_audio, write_wav

    may = shared_file("May_5s.mp4")
    videos = tmp_path / "videos"
    videos.mkdir()
    _cut(may, videos / "a.mp4", 0, 1.5)
    _cut(may, videos / "b.mp4", 2, 1.5)
    (videos / "broken.mp4").write_bytes(b"not a video")
    write_wav(videos / "speech.wav", load_audio(shared_file("Obama_5s.wav"))[:4800])  # 0.3 s
    with open(tmp_path / "subjects.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["video", "audio", "preset"], ["videos/a.mp4", "videos/speech.wav", "tiny"],
                     ["videos/b.mp4", "", ""], ["videos/broken.mp4", "", ""]])
    work = tmp_path / "work"
    cmd = [sys.executable, "scripts/run_many.py", str(tmp_path / "subjects.csv"), "--work", str(work),
           "--preset", "tiny", "--num_cpus", "2", "--size", "96"]  # 96² clips: no head crop
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # one subject failed
    rows = {r["subject"]: r for r in csv.DictReader(open(work / "run_many.csv"))}
    assert set(rows) == {"a", "b", "broken"}
    for sid in ("a", "b"):
        row = rows[sid]
        assert row["status"] == "done" and not row["error"], row
        assert float(row["head_psnr"]) > 10 and float(row["torso_psnr"]) > 10  # LMD: none found at 96²
        assert all(row[f"{s}_s"] for s in ("process", "head", "torso", "test", "new_audio")), row
    assert (work / "a" / "trial_a_torso" / "results" / "speech.mp4").is_file()  # the CSV's new audio
    broken = rows["broken"]
    assert broken["status"] == "failed" and broken["error"].startswith("process: process.py: error:")
    assert "broken.mp4" in broken["error"] and "\n" not in broken["error"]
    assert "| broken | failed |" in (work / "run_many.md").read_text()

    times = {sid: (work / sid / "stage_times.tsv").read_text() for sid in ("a", "b")}
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "[run_many] 1 stages run, 1 of 3 subjects failed" in again.stdout, again.stdout[-3000:]  # only broken's process
    assert {sid: (work / sid / "stage_times.tsv").read_text() for sid in ("a", "b")} == times


def test_table_of_unfinished_subjects(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "x.mp4").write_bytes(b"")
    (tmp_path / "w" / "x").mkdir(parents=True)
    (tmp_path / "w" / "x" / "stage_times.tsv").write_text("x\tprocess\t12\nx\ttest_head\t3\nx\ttest\t4\n")
    run = subprocess.run([sys.executable, "scripts/run_many.py", str(tmp_path / "v"), "--work", str(tmp_path / "w"),
                          "--table"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (row,) = csv.DictReader(open(tmp_path / "w" / "run_many.csv"))
    assert (row["status"], row["process_s"], row["test_s"], row["head_s"]) == ("incomplete", "12", "7", "")


def test_bad_lists_are_one_line(tmp_path):
    (tmp_path / "list.csv").write_text("clip\nx.mp4\n")
    for args, fragment in (([str(tmp_path / "list.csv")], "no 'video' column"),
                           ([str(tmp_path / "nowhere")], "does not exist"),
                           ([str(tmp_path), "--index", "0"], "lists no videos")):
        run = subprocess.run([sys.executable, "scripts/run_many.py", *args, "--work", str(tmp_path / "w")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0]
