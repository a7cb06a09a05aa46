"""Vision steps of the data pipeline: landmarks, parsing, background, torso/GT, blinks.

Real-data tests run on the first 30 frames of May_5s.mp4 (they include a blink at frames 5-10);
they skip when ../shared is absent. Synthetic tests pin the exact rules.
"""
import csv
import shutil
import subprocess
import time
import warnings

import cv2
import numpy as np
import pytest
import torch

from data_utils import background, bisenet, blinks, landmarks, parsing, torso
from data_utils.landmarks import MEDIAPIPE_TO_IBUG68, LandmarkDetector
from data_utils.parsing import BACKGROUND, COLORS_BGR, HEAD, NECK, TORSO
from tests.conftest import shared_file

N_FRAMES = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Folder with ori_imgs/<k>.jpg (30 frames of May_5s.mp4) and all vision outputs."""
    import imageio_ffmpeg

    video = shared_file("May_5s.mp4")
    root = tmp_path_factory.mktemp("may")
    ori = root / "ori_imgs"
    ori.mkdir()
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(video), "-vframes", str(N_FRAMES),
         "-qmin", "1", "-q:v", "1", "-start_number", "0", str(ori / "%d.jpg")],
        check=True,
    )
    stats = {"landmarks": landmarks.detect_folder(ori)}
    stats["parsing"] = parsing.parse_folder(ori, root / "parsing")
    stats["background"] = background.extract_background(ori, root / "parsing", root / "bc.jpg", step=10)
    stats["torso"] = torso.extract_torso_and_gt(ori, root / "parsing", root / "bc.jpg", root / "torso_imgs", root / "gt_imgs", workers=1)
    stats["blinks"] = blinks.write_au_csv(ori, root / "au.csv")
    return root, stats


def _lms(root, k):
    return np.loadtxt(root / "ori_imgs" / f"{k}.lms")


def test_mapping_is_68_distinct_mesh_vertices():
    assert MEDIAPIPE_TO_IBUG68.shape == (68,)
    assert len(set(MEDIAPIPE_TO_IBUG68.tolist())) == 68
    assert MEDIAPIPE_TO_IBUG68.min() >= 0 and MEDIAPIPE_TO_IBUG68.max() < 468


@pytest.mark.parametrize("k", [0, 6, 20])
def test_landmarks_follow_ibug_semantics(clip, k):
    root, stats = clip
    assert stats["landmarks"]["n_detected"] == N_FRAMES
    lms = _lms(root, k)
    assert lms.shape == (68, 2)
    # Work in the face's own frame so head roll does not matter: v points from eyes to mouth.
    v = lms[48:68].mean(0) - lms[36:48].mean(0)
    v /= np.linalg.norm(v)
    u = np.array([v[1], -v[0]])  # image-left -> image-right for an upright face
    x, y = lms @ u, lms @ v
    assert np.argmax(y[0:17]) == 8, "chin (8) is the lowest jaw point"
    assert x[0] < x[8] < x[16], "jaw runs image-left -> chin -> image-right"
    assert np.all(np.diff(x[17:27]) > 0), "brows run left to right"
    assert x[36:42].max() < x[42:48].min(), "subject's right eye is on the image left"
    assert x[36] < x[39] and x[42] < x[45] and x[48] < x[54] and x[31] < x[33] < x[35]
    brow, eye, nose, mouth = y[17:27].mean(), y[36:48].mean(), y[30], y[48:68].mean()
    assert brow < eye < nose < mouth < y[8]
    assert abs(x[51] - x[30]) < 0.15 * (x[16] - x[0]), "mouth centre under the nose"
    outer = lms[48:60].astype(np.float32)
    for p in lms[60:68]:
        assert cv2.pointPolygonTest(outer, (float(p[0]), float(p[1])), True) > -1.0, "inner lips inside outer lips"


def test_lips_landmarks_enclose_red_lips(clip):
    root, _ = clip
    img = cv2.imread(str(root / "ori_imgs" / "0.jpg"))
    lms = _lms(root, 0)
    a = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[..., 1].astype(np.float32)
    lips = np.zeros(a.shape, np.uint8)
    cv2.fillPoly(lips, [lms[48:60].round().astype(np.int32)], 1)
    cv2.fillPoly(lips, [lms[60:68].round().astype(np.int32)], 0)
    cheeks = np.zeros(a.shape, np.uint8)
    cv2.fillPoly(cheeks, [lms[[1, 2, 3, 31, 39]].round().astype(np.int32)], 1)
    assert a[lips > 0].mean() > a[cheeks > 0].mean() + 8, "lip polygon covers redder pixels than the cheek"


def test_upper_lids_above_lower_lids_when_open(clip):
    root, _ = clip
    lms = _lms(root, 0)
    for up, low in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert lms[up, 1] < lms[low, 1]


def test_single_image_detect_matches_video_mode_and_handles_no_face(clip):
    root, _ = clip
    rgb = landmarks.read_rgb(root / "ori_imgs" / "3.jpg")
    with LandmarkDetector() as det:
        lms = det.detect(rgb)
        mesh = det.detect_mesh(rgb)
        assert det.detect(np.full((256, 256, 3), 128, np.uint8)) is None
    assert mesh.shape == (478, 3)
    diff = np.linalg.norm(lms - _lms(root, 3), axis=1)
    assert np.median(diff) < 3.0 and diff.max() < 12.0
    with pytest.raises(ValueError, match="RGB uint8"):
        LandmarkDetector().detect(rgb.astype(np.float32))


def test_detect_folder_interpolates_short_gaps_and_rejects_faceless_video(clip, tmp_path):
    root, _ = clip
    ori = tmp_path / "ori_imgs"
    ori.mkdir()
    for k in range(10):
        shutil.copy(root / "ori_imgs" / f"{k + 12}.jpg", ori / f"{k}.jpg")
    cv2.imwrite(str(ori / "4.jpg"), np.full((512, 512, 3), 90, np.uint8))
    with pytest.warns(UserWarning, match="no face in frames 4"):
        stats = landmarks.detect_folder(ori)
    assert stats["n_interpolated"] == 1
    mid = np.loadtxt(ori / "4.lms")
    np.testing.assert_allclose(mid, 0.5 * (np.loadtxt(ori / "3.lms") + np.loadtxt(ori / "5.lms")), atol=1e-4)

    for k in (6, 7):
        cv2.imwrite(str(ori / f"{k}.jpg"), np.full((512, 512, 3), 90, np.uint8))
    with pytest.raises(ValueError, match=r"3/10 frames \(frames 4, 6-7\)"):
        landmarks.detect_folder(ori)


def test_detect_folder_needs_frames(tmp_path):
    with pytest.raises(FileNotFoundError, match="no <k>.jpg frames"):
        landmarks.detect_folder(tmp_path)


def test_fan_offline_without_weights_names_the_files(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"2DFAN4-.*s3fd-.*offline mode is set"):
        LandmarkDetector("fan")  # ERNERF_OFFLINE=1 (conftest): not even tried
    assert no_network == []
    monkeypatch.delenv("ERNERF_OFFLINE")
    import face_alignment  # noqa: F401  (import time is not the offline path's)

    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"2DFAN4-.*s3fd-.*hub/checkpoints.*could not be downloaded") as err:
        LandmarkDetector("fan")
    assert time.perf_counter() - start < 5 and len(no_network) >= 1  # face-alignment tried its download
    assert "\n" not in str(err.value) and "--landmark_engine mediapipe" in str(err.value)


def test_parsing_uses_reference_colours_and_covers_the_face(clip):
    root, _ = clip
    for k in (0, 15, 29):
        bgr = cv2.imread(str(root / "parsing" / f"{k}.png"))
        flat = bgr.reshape(-1, 3)
        valid = np.zeros(len(flat), bool)
        for colour in COLORS_BGR:
            valid |= np.all(flat == colour, axis=1)
        assert valid.all(), "only the four reference colours"
        labels = parsing.bgr_to_labels(bgr)
        lms = _lms(root, k).round().astype(int)
        assert np.all(labels[lms[17:68, 1], lms[17:68, 0]] == HEAD), "inner face landmarks are head"
        assert labels[5, 5] == BACKGROUND and labels[5, -5] == BACKGROUND
        below_chin = labels[min(lms[8, 1] + 20, 511), lms[8, 0]]
        assert below_chin == NECK
        assert (labels == TORSO).sum() > 0.02 * labels.size
        assert labels[500, 256] in (NECK, TORSO)


def test_parsing_in_one_process_equals_the_worker_processes(clip, tmp_path):
    root, _ = clip  # the fixture parsed with the default 2 workers
    ori = tmp_path / "ori_imgs"
    ori.mkdir()
    for k in range(4):
        for suffix in (".jpg", ".lms"):
            shutil.copy(root / "ori_imgs" / f"{k}{suffix}", ori / f"{k}{suffix}")
    parsing.parse_folder(ori, tmp_path / "parsing", workers=1)
    for k in range(4):
        np.testing.assert_array_equal(parsing.read_labels(tmp_path / "parsing" / f"{k}.png"),
                                      parsing.read_labels(root / "parsing" / f"{k}.png"))
    assert sorted(p.name for p in (tmp_path / "parsing").iterdir()) == [f"{k}.png" for k in range(4)]


def test_labels_round_trip_through_colours():
    labels = np.random.default_rng(0).integers(0, 4, size=(7, 9)).astype(np.uint8)
    np.testing.assert_array_equal(parsing.bgr_to_labels(parsing.labels_to_bgr(labels)), labels)
    odd = parsing.labels_to_bgr(labels)
    odd[0, 0] = (10, 20, 30)
    assert parsing.bgr_to_labels(odd)[0, 0] == BACKGROUND


def test_mediapipe_parsing_needs_landmarks(tmp_path):
    cv2.imwrite(str(tmp_path / "0.jpg"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="task 4"):
        parsing.parse_folder(tmp_path, tmp_path / "parsing")


def test_bisenet_random_weights_and_weight_loading(tmp_path):
    ori = tmp_path / "ori_imgs"
    ori.mkdir()
    cv2.imwrite(str(ori / "0.jpg"), np.random.default_rng(0).integers(0, 255, (96, 64, 3), dtype=np.uint8))
    model = bisenet.BiSeNet(19)
    stats = parsing.parse_folder(ori, tmp_path / "parsing", engine="bisenet", model=model)
    assert stats["n_frames"] == 1
    bgr = cv2.imread(str(tmp_path / "parsing" / "0.png"))
    assert bgr.shape == (96, 64, 3)
    assert np.all(np.isin(parsing.bgr_to_labels(bgr), [BACKGROUND, HEAD, NECK, TORSO]))

    # A checkpoint with the training-only auxiliary heads loads (they are dropped).
    state = dict(model.state_dict())
    state["conv_out16.conv_out.weight"] = torch.zeros(19, 64, 1, 1)
    torch.save(state, tmp_path / "79999_iter.pth")
    loaded = bisenet.load_bisenet(tmp_path / "79999_iter.pth")
    torch.testing.assert_close(loaded.state_dict()["ffm.conv1.weight"], model.state_dict()["ffm.conv1.weight"])
    with pytest.raises(FileNotFoundError, match="79999_iter.pth"):
        parsing.parse_folder(ori, tmp_path / "p2", engine="bisenet", bisenet_weights=tmp_path / "absent.pth")


def test_bisenet_class_mapping_matches_reference():
    expected = [BACKGROUND] + [HEAD] * 13 + [NECK, NECK, TORSO, HEAD, HEAD]
    assert bisenet.BISENET_TO_LABEL.tolist() == expected


def test_background_synthetic_moving_person(tmp_path):
    rng = np.random.default_rng(1)
    h, w = 64, 80
    scene = np.dstack([*np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), np.full((h, w), 90.0)]).astype(np.uint8)
    (tmp_path / "ori").mkdir()
    (tmp_path / "parsing").mkdir()
    for k, left in enumerate((5, 45)):
        img = scene.copy()
        labels = np.zeros((h, w), np.uint8)
        labels[20:, left : left + 25] = TORSO
        img[labels > 0] = rng.integers(0, 255, (int((labels > 0).sum()), 3))
        cv2.imwrite(str(tmp_path / "ori" / f"{k}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
        parsing.write_labels(tmp_path / "parsing" / f"{k}.png", labels)
    stats = background.extract_background(tmp_path / "ori", tmp_path / "parsing", tmp_path / "bc.jpg", step=1)
    bc = cv2.imread(str(tmp_path / "bc.jpg")).astype(int)
    assert stats["n_used"] == 2 and stats["clean_fraction"] > 0.5
    # Pixels covered in one frame but far from the person in the other come from the other.
    assert np.abs(bc[30:, 55:65] - scene[30:, 55:65]).mean() < 4
    assert np.abs(bc[30:, 12:22] - scene[30:, 12:22]).mean() < 4


def test_background_needs_clean_pixels(tmp_path):
    (tmp_path / "ori").mkdir()
    cv2.imwrite(str(tmp_path / "ori" / "0.jpg"), np.zeros((16, 16, 3), np.uint8))
    parsing.write_labels(tmp_path / "parsing" / "0.png", np.full((16, 16), TORSO, np.uint8))
    with pytest.raises(ValueError, match="background cannot be estimated"):
        background.extract_background(tmp_path / "ori", tmp_path / "parsing", tmp_path / "bc.jpg")


def test_background_matches_frames_far_from_person(clip):
    root, stats = clip
    bc = cv2.imread(str(root / "bc.jpg")).astype(np.float32)
    far = np.ones(bc.shape[:2], bool)
    for k in range(0, N_FRAMES, 10):
        far &= background.distance_to_person(parsing.read_labels(root / "parsing" / f"{k}.png")) > 30
    assert far.mean() > 0.1
    frame = cv2.imread(str(root / "ori_imgs" / "0.jpg")).astype(np.float32)
    assert np.abs(bc[far] - frame[far]).mean() < 6


def test_torso_inpainting_rule_on_synthetic_column():
    h, w = 30, 4
    frame = np.full((h, w, 3), 200, np.uint8)
    bg = np.full((h, w, 3), 10, np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[:15, 1:3] = HEAD
    labels[15:, 1:3] = TORSO
    gt, rgba = torso.make_gt_and_torso(frame, labels, bg)
    assert np.all(gt[:, 0] == 10) and np.all(gt[:, 1] == 200)
    col = rgba[:, 1]
    for k in range(torso.TORSO_LEN):
        assert col[15 - k, 3] == 255
        assert col[15 - k, 0] == int(200 * torso.DARKEN**k)
    assert np.all(col[: 15 - torso.TORSO_LEN + 1, 3] == 0) and np.all(col[: 15 - torso.TORSO_LEN + 1, :3] == 0)
    assert np.all(rgba[:, 0, 3] == 0), "background column is transparent"


def test_torso_neck_inpainting_reaches_up_and_is_blurred():
    h, w = 100, 9
    frame = np.full((h, w, 3), 150, np.uint8)
    bg = np.zeros((h, w, 3), np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[:60, 2:7] = HEAD
    labels[60:, 2:7] = NECK
    _, rgba = torso.make_gt_and_torso(frame, labels, bg)
    # Neck grown 3 px up (top row 57), pushed down 4 -> source row 61, copied up 53 rows -> row 9.
    assert np.all(rgba[9:, 4, 3] == 255) and np.all(rgba[:9, 4, 3] == 0)
    assert abs(int(rgba[30, 4, 0]) - 150 * torso.DARKEN**31) <= 3, "darkened copy of the neck colour"


def test_mask_bbox():
    from data_utils.images import mask_bbox

    mask = np.zeros((8, 9), bool)
    assert mask_bbox(mask) is None
    mask[2, 7] = mask[5, 3] = True
    assert mask_bbox(mask) == (2, 6, 3, 8)
    assert mask_bbox(np.ones((8, 9), bool)) == (0, 8, 0, 9)


@pytest.mark.parametrize("box", [(20, 30, 5, 17), (0, 4, 0, 3), (35, 40, 25, 32), (0, 40, 0, 32), None])
def test_blur_where_equals_blurring_the_whole_image(box):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)
    mask = np.zeros((40, 32), bool)
    if box is not None:  # a random subset of the box, which may touch the image edges
        r0, r1, c0, c1 = box
        mask[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0)) < 0.6
    expected = image.copy()
    np.copyto(expected, cv2.GaussianBlur(image, (5, 5), 0), where=mask[..., None])
    torso._blur_where(image, mask)
    np.testing.assert_array_equal(image, expected)


def test_torso_and_gt_on_real_frames(clip):
    root, stats = clip
    bc = cv2.imread(str(root / "bc.jpg")).astype(np.float32)
    for k in (0, 29):
        labels = parsing.read_labels(root / "parsing" / f"{k}.png")
        rgba = cv2.imread(str(root / "torso_imgs" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(str(root / "gt_imgs" / f"{k}.jpg")).astype(np.float32)
        frame = cv2.imread(str(root / "ori_imgs" / f"{k}.jpg")).astype(np.float32)
        assert rgba.shape == (512, 512, 4)
        alpha = rgba[..., 3]
        assert set(np.unique(alpha)) <= {0, 255}
        eye_row = int(_lms(root, k)[36:48, 1].mean())
        assert np.all(alpha[:eye_row][labels[:eye_row] == HEAD] == 0), "head is cut out of the torso layer"
        # The reference grows the neck 3 px vertically before taking alpha; nothing else leaks.
        neck_grown = cv2.dilate((labels == NECK).astype(np.uint8), np.ones((3, 1), np.uint8), iterations=3) > 0
        assert np.all(alpha[(labels == BACKGROUND) & ~neck_grown] == 0)
        assert np.all(alpha[(labels == TORSO) | (labels == NECK)] == 255)
        assert np.all(rgba[alpha == 0][:, :3] == 0)
        bgm = labels == BACKGROUND
        assert np.abs(gt[bgm] - bc[bgm]).mean() < 4, "gt background is bc"
        head = labels == HEAD
        assert np.abs(gt[head] - frame[head]).mean() < 4, "gt keeps the person"


def test_torso_parallel_workers_give_identical_files(clip, tmp_path):
    root, _ = clip
    ori = tmp_path / "ori_imgs"
    ori.mkdir()
    for k in range(4):
        shutil.copy(root / "ori_imgs" / f"{k}.jpg", ori / f"{k}.jpg")
    torso.extract_torso_and_gt(ori, root / "parsing", root / "bc.jpg", tmp_path / "t", tmp_path / "g", workers=2)
    for k in range(4):
        a = cv2.imread(str(tmp_path / "t" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(root / "torso_imgs" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b)


def test_torso_needs_background(clip, tmp_path):
    root, _ = clip
    with pytest.raises(FileNotFoundError, match="task 6"):
        torso.extract_torso_and_gt(root / "ori_imgs", root / "parsing", tmp_path / "bc.jpg", tmp_path / "t", tmp_path / "g")


def test_au_csv_detects_the_blink(clip):
    root, stats = clip
    with open(root / "au.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_FRAMES
    assert list(rows[0].keys()) == list(blinks.COLUMNS)
    au = np.array([float(r["AU45_r"]) for r in rows])
    assert np.all((au >= 0) & (au <= blinks.AU_MAX))
    assert au[5:10].max() >= 2.0, "eyes are closed around frame 6"
    assert np.median(au) < 0.3, "eyes are open most of the time"
    assert stats["blinks"]["blink_frames"] >= 2


def test_eye_aspect_ratio_and_mapping():
    lms = np.zeros((68, 2))
    eye = np.array([[0, 0], [1, -0.3], [2, -0.3], [3, 0], [2, 0.3], [1, 0.3]])
    lms[36:42] = eye
    lms[42:48] = eye + [10, 0]
    assert blinks.eye_aspect_ratio(lms) == pytest.approx(0.2)
    ear = np.r_[np.full(18, 0.3), 0.15, 0.06]
    au, ear_open = blinks.au45_from_ear(ear)
    assert ear_open == pytest.approx(0.3)
    assert au[0] == 0 and au[-2] == pytest.approx(2.0) and au[-1] == pytest.approx(3.5)
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        blinks.eye_aspect_ratio(np.zeros((5, 2)))


def test_openface_au45_is_copied(tmp_path):
    ori = tmp_path / "ori_imgs"
    ori.mkdir()
    for k in range(3):
        cv2.imwrite(str(ori / f"{k}.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "of.csv").write_text("frame, face_id, AU45_r\n1, 0, 0.5\n2, 0, 2.7\n3, 0, 0.0\n")
    stats = blinks.write_au_csv(ori, tmp_path / "au.csv", openface_csv=tmp_path / "of.csv")
    assert stats["source"] == "openface"
    with open(tmp_path / "au.csv", newline="") as f:
        assert [float(r["AU45_r"]) for r in csv.DictReader(f)] == [0.5, 2.7, 0.0]
    (tmp_path / "bad.csv").write_text("frame, AU12_r\n1, 0.3\n")
    with pytest.raises(ValueError, match="no AU45_r column"):
        blinks.write_au_csv(ori, tmp_path / "au.csv", openface_csv=tmp_path / "bad.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FileNotFoundError, match="landmark file"):
            blinks.write_au_csv(ori, tmp_path / "au.csv")
