"""scripts/error_budget.py: squared error by face region, on renders built from the synthetic
subject's GT frames with known changes."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import error_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def _labels(data, img_id):
    import error_budget

    from data_utils.parsing import HEAD, read_labels
    from nerf_triplane.provider import read_lms

    return error_budget.region_labels(read_lms(data / "ori_imgs" / f"{img_id}.lms"),
                                      read_labels(data / "parsing" / f"{img_id}.png") == HEAD)


def _render(ws, data, changed_region=None):
    """``ws/results/heldout_frames``: the held-out GT frames, brightened by 60 inside
    ``changed_region`` (a name of ``error_budget.REGIONS``) when given. Returns the img_ids."""
    import error_budget

    held = json.loads((data / "transforms_val.json").read_text())["frames"]
    folder = ws / "results" / "heldout_frames"
    folder.mkdir(parents=True)
    index = []
    for k, f in enumerate(held):
        img = cv2.imread(str(data / "gt_imgs" / f"{f['img_id']}.jpg"))
        if changed_region is not None:
            inside = _labels(data, f["img_id"]) == error_budget.REGIONS.index(changed_region)
            img[inside] = np.clip(img[inside].astype(int) + 60, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{k:04d}.png"), img)
        index.append({"k": k, "img_id": f["img_id"], "aud_id": f["aud_id"]})
    (folder / "index.json").write_text(json.dumps({"frames": index, "data": str(data), "split": "test", "aud": "",
                                                   "torso": False}))
    return [f["img_id"] for f in held]


def test_regions_follow_the_landmarks_and_the_parsing(subject):
    import error_budget

    from data_utils.parsing import HEAD, read_labels
    from nerf_triplane.provider import read_lms

    img_id = json.loads((subject / "transforms_val.json").read_text())["frames"][0]["img_id"]
    lms = read_lms(subject / "ori_imgs" / f"{img_id}.lms")
    head = read_labels(subject / "parsing" / f"{img_id}.png") == HEAD
    labels = error_budget.region_labels(lms, head)
    counts = np.bincount(labels.ravel(), minlength=len(error_budget.REGIONS))
    assert (counts > 0).all(), dict(zip(error_budget.REGIONS, counts))

    def at(point):
        x, y = np.round(point).astype(int)
        return error_budget.REGIONS[labels[y, x]]

    assert at(lms[48:68].mean(axis=0)) == "mouth"
    assert at(lms[36:42].mean(axis=0)) == "eyes" and at(lms[42:48].mean(axis=0)) == "eyes"
    assert at(lms[30]) == "face_rest"  # the nose tip
    rows, _ = np.nonzero(labels == error_budget.REGIONS.index("brows_forehead"))
    assert rows.mean() < lms[36:48, 1].mean()  # above the eyes
    hair = labels == error_budget.REGIONS.index("hair")
    assert head[hair].all() and not head[labels == error_budget.REGIONS.index("outside_head")].any()
    with pytest.raises(ValueError, match="eye landmarks"):
        error_budget.region_labels(np.zeros((68, 2)), head)


@pytest.mark.parametrize("region", ["mouth", "hair", "brows_forehead"])
def test_the_error_lands_in_the_changed_region(subject, tmp_path, region):
    import error_budget

    ids = _render(tmp_path / "ws", subject, region)
    result = error_budget.error_budget(tmp_path / "ws")
    assert result["name"] == "heldout" and result["frames"] == len(ids) and result["split"] == "test"
    shares = {r: v["error"] for r, v in result["regions"].items()}
    assert shares[region] == pytest.approx(1.0) and sum(shares.values()) == pytest.approx(1.0)
    assert sum(v["pixels"] for v in result["regions"].values()) == pytest.approx(1.0)
    # Without the changed region's error a frame equals its GT: the PSNR cap.
    assert result["regions"][region]["psnr_if_perfect"] == 100.0
    others = [v["psnr_if_perfect"] for r, v in result["regions"].items() if r != region]
    assert all(p == pytest.approx(result["psnr"]) for p in others)
    assert 10 < result["psnr"] < 60 and result["regions"][region]["mse"] > result["mse"]


def test_identical_frames_and_the_cli(subject, tmp_path, capsys):
    import error_budget

    _render(tmp_path / "ws", subject)
    assert error_budget.main([str(tmp_path / "ws"), "--name", "heldout"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["psnr"] == 100.0 and result["mse"] == 0
    assert all(v["error"] == 0 for v in result["regions"].values())
    assert error_budget.main([str(tmp_path / "none")]) == 2
    assert "--test first" in error_line(capsys)
    assert error_budget.main([str(tmp_path / "ws"), "--name", "other"]) == 2
    assert "not found" in error_line(capsys)
