"""Mouth-shape targets of the audio code (nerf_triplane/mouth.py) and their training option."""
import numpy as np
import pytest
import torch

from nerf_triplane.audio_nets import AudioNet, encode_audio_window
from nerf_triplane.mouth import MouthBasis, MouthSupervision, aligned_mouth, concordance, shape_opening
from nerf_triplane.sync import mouth_opening
from tests.conftest import single_thread, tiny_args


def face(opening: float, width: float = 1.0) -> np.ndarray:
    """68 landmarks of a frontal face with eyes 100 px apart and the given mouth  # [68, 2]."""
    lms = np.zeros((68, 2))
    lms[36:42] = [200, 200]
    lms[42:48] = [300, 200]
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lms[48:60] = np.stack([250 + 30 * width * np.cos(ang), 300 + (10 + 20 * opening) * np.sin(ang)], -1)
    ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lms[60:68] = np.stack([250 + 20 * width * np.cos(ang), 300 + 20 * opening * np.sin(ang)], -1)
    return lms


class ToyAudioPath(torch.nn.Module):
    """The audio path alone (AudioNet on 4-channel windows, no attention) for ``MouthSupervision``."""

    att, emb = 0, False

    def __init__(self):
        super().__init__()
        self.audio_net = AudioNet(4, 32)

    def encode_audio(self, a):
        # One window [1, A, T] -> [1, 32] or a batch [B, 1, A, T] -> [B, 32], as NeRFNetwork's.
        return encode_audio_window(a, self.audio_net)


def transform(lms: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return lms @ (scale * np.array([[c, s], [-s, c]])) + np.asarray(shift)


def test_aligned_mouth_ignores_roll_scale_and_position():
    lms = face(0.7)
    moved = transform(lms, 0.3, 1.7, [40, -25])
    np.testing.assert_allclose(aligned_mouth(moved[None]), aligned_mouth(lms[None]), atol=1e-9)
    assert np.isnan(aligned_mouth(np.full((1, 68, 2), np.nan))).all()
    with pytest.raises(ValueError, match="68, 2"):
        aligned_mouth(np.zeros((3, 20, 2)))


def test_first_component_is_the_opening():
    rng = np.random.default_rng(0)
    openings = rng.uniform(0, 1, 200)
    lms = np.stack([transform(face(o, 1 + 0.05 * rng.standard_normal()), 0.1 * rng.standard_normal(),
                              1 + 0.1 * rng.standard_normal(), rng.normal(0, 20, 2)) for o in openings])
    basis = MouthBasis(lms, 3)
    coef = basis.project(lms)  # [200, 3]
    assert abs(np.corrcoef(coef[:, 0], mouth_opening(lms))[0, 1]) > 0.99
    assert coef[:, 0].std() == pytest.approx(1.0, rel=1e-6)  # in first-component spreads
    assert basis.explained > 0.99
    with pytest.raises(ValueError, match="more than 3 frames"):
        MouthBasis(lms[:3], 3)


def test_supervision_fits_codes_that_carry_the_mouth():
    """A toy audio path whose input is the mouth opening plus noise learns to put the
    opening into the code's first channel; the loss falls and the code correlates."""
    rng = np.random.default_rng(1)
    openings = rng.uniform(0, 1, 64)
    lms = np.stack([face(o) for o in openings])
    audio = torch.from_numpy(openings).float()[:, None, None].expand(64, 4, 16).contiguous()
    audio = audio + 0.01 * torch.randn(audio.shape)

    model = ToyAudioPath()
    sup = MouthSupervision(lms, lambda k: audio[k:k + 1], k=2)
    with single_thread():
        before = sup.loss(model, 0, positions=list(range(64))).item()
        sup.pretrain(model, steps=300, batch=16, lr=3e-3)
        after = sup.loss(model, 0, positions=list(range(64))).item()
        with torch.no_grad():
            code = sup.codes(model, list(range(64)))[:, 0].numpy()
    assert after < 0.2 * before
    assert abs(np.corrcoef(code, openings)[0, 1]) > 0.9


def test_basis_shapes_give_back_the_opening():
    """Coefficients of all components describe the aligned shape again; its inner-lip gap is
    the opening the face was drawn with (20 px per unit over eyes 100 px apart; ``face`` puts
    point 62 below point 66, the other way round from iBUG's, hence the sign)."""
    openings = np.linspace(0, 1, 30)
    lms = np.stack([face(o, 1 + 0.1 * np.sin(7 * o)) for o in openings])
    basis = MouthBasis(lms, 6)
    shapes = basis.shapes(basis.project(lms))
    np.testing.assert_allclose(shapes, aligned_mouth(lms), atol=1e-9)
    np.testing.assert_allclose(shape_opening(shapes), -0.4 * openings, atol=1e-9)


def test_concordance_rewards_the_full_spread():
    """Correlation ignores a shrunk prediction; concordance does not."""
    t = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    t = t - t.mean(0)
    torch.testing.assert_close(concordance(t, t), torch.ones(2))
    shrunk = concordance(0.5 * t, t)
    assert (shrunk < 0.85).all() and (shrunk > 0.75).all()  # 2 * 0.5 / (0.25 + 1) = 0.8
    assert (concordance(-t, t) < -0.99).all()
    assert (concordance(t + 1.0, t) < 0.7).all()


def test_spread_term_keeps_the_predicted_mouth_open():
    """With audio that only half explains the opening, MSE alone predicts a mouth that opens
    about half as wide as the measured one; ``spread`` brings the predicted spread back up."""
    rng = np.random.default_rng(3)
    openings = rng.uniform(0, 1, 256)
    lms = np.stack([face(o) for o in openings])
    heard = openings + rng.normal(0, 0.3, 256)  # what the audio tells of the opening
    audio = torch.from_numpy(heard).float()[:, None, None].expand(256, 4, 16).contiguous()

    ratios = []
    for spread in (0.0, 4.0):
        torch.manual_seed(0)
        model = ToyAudioPath()
        sup = MouthSupervision(lms, lambda k: audio[k:k + 1], k=1, spread=spread)
        with single_thread():
            sup.pretrain(model, steps=400, batch=32, lr=3e-3)
            with torch.no_grad():
                code = sup.codes(model, list(range(256)))[:, 0].numpy()
        ratios.append(code.std() / sup.targets[:, 0].numpy().std())
    assert ratios[0] < 0.85 and ratios[1] > ratios[0] + 0.1, ratios


def test_mouth_options_train_the_head(subject, tmp_path):
    """--mouth_pretrain / --mouth_sup run inside a normal head training; without them the
    audio path is untouched by the mouth targets (default = the reference)."""
    import main as cli
    from nerf_triplane.option_checks import check_numbers
    from nerf_triplane.options import parse_args

    with pytest.raises(ValueError, match="mouth_k"):
        parse_args(tiny_args(subject, tmp_path, "--mouth_k", "40"))
    with pytest.raises(ValueError, match="mouth_teacher"):
        parse_args(tiny_args(subject, tmp_path, "--mouth_teacher", "1.5"))
    with pytest.raises(ValueError, match="blocks >= 2"):
        parse_args(tiny_args(subject, tmp_path, "--mouth_teacher", "0.5", "--mouth_pretrain", "5",
                             "--mouth_crossfit", "1"))
    with pytest.raises(ValueError, match="give --mouth_teacher > 0"):
        check_numbers(parse_args(tiny_args(subject, tmp_path, "--mouth_pretrain", "5", "--mouth_crossfit", "3")))
    with single_thread():
        assert cli.main(tiny_args(subject, tmp_path / "ws", "--iters", 30, "--mouth_sup", 1,
                                  "--mouth_pretrain", 20, "--mouth_teacher", 0.5, "--mouth_spread", 1,
                                  "--mouth_crossfit", 2)) == 0
    log = next((tmp_path / "ws").glob("log_*.txt")).read_text()
    assert "audio path fitted to 6 mouth components" in log
    assert "teacher codes cross-fitted over 2 blocks" in log


def test_teacher_targets_follow_the_landmarks():
    """``MouthSupervision.teacher`` gives a training position's measured coefficients, and
    nothing for a frame without landmarks."""
    openings = np.linspace(0, 1, 12)
    lms = np.stack([face(o) for o in openings])
    lms[5] = np.nan
    sup = MouthSupervision(lms, lambda k: torch.zeros(1, 4, 16), k=3)
    assert sup.teacher(5) is None
    first = torch.cat([sup.teacher(i) for i in range(12) if i != 5])[:, 0].numpy()
    assert sup.teacher(0).shape == (1, 3)
    assert abs(np.corrcoef(first, np.delete(openings, 5))[0, 1]) > 0.99


def test_crossfit_codes_come_from_paths_that_never_heard_the_frame():
    """Audio that says nothing of the mouth can only be memorised: an audio path fitted on
    all frames reproduces their openings, cross-fitted codes do not. Where the audio does
    carry the opening, cross-fitted codes follow it. Torch's global RNG is left as it was."""
    rng = np.random.default_rng(4)
    openings = rng.uniform(0, 1, 96)
    lms = np.stack([face(o) for o in openings])
    noise = torch.from_numpy(rng.normal(0, 1, (96, 4, 16))).float()
    informative = torch.from_numpy(openings).float()[:, None, None].expand(96, 4, 16) + 0.05 * noise

    def corr(codes):
        return float(np.corrcoef(codes[:, 0].numpy(), sup.targets[:, 0].numpy())[0, 1])

    torch.manual_seed(0)
    with single_thread():
        sup = MouthSupervision(lms, lambda k: noise[k:k + 1], k=1)
        model = ToyAudioPath()
        sup.pretrain(model, steps=300, batch=32, lr=3e-3)
        with torch.no_grad():
            memorised = corr(sup.codes(model, list(range(96)))[:, :1])
        state = torch.get_rng_state()
        held = sup.crossfit(model, blocks=3, steps=300)
        assert torch.equal(torch.get_rng_state(), state)
        assert held.shape == (96, 1)
        torch.testing.assert_close(sup.teacher(7), held[7:8])
        sup_informative = MouthSupervision(lms, lambda k: informative[k:k + 1], k=1)
        followed = sup_informative.agreement(sup_informative.crossfit(model, blocks=3, steps=300))
    assert memorised > 0.8
    assert abs(corr(held)) < 0.35, corr(held)
    assert followed > 0.9
    with pytest.raises(ValueError, match="blocks"):
        sup.crossfit(model, blocks=1, steps=1)
