"""NeRFNetwork: dimensions, shapes and gradients of every branch (CPU, small)."""
import math

import pytest
import torch

from nerf_triplane.audio_nets import MLP, AudioAttNet, AudioNet
from nerf_triplane.freq_encoder import FreqEncoder
from nerf_triplane.network import NeRFNetwork, audio_dim_for
from nerf_triplane.options import parse_args


def make_opt(*flags):
    return parse_args(["unused_folder", "--grid_size", "16", "--ind_num", "20", *flags])


def points(n=64, bound=1.0):
    x = (torch.rand(n, 3) * 2 - 1) * bound
    x[:, 1] *= 0.5
    d = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    return x, d


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_freq_encoder_layout_and_grad():
    enc = FreqEncoder(input_dim=2, degree=3)
    assert enc.output_dim == 14
    x = torch.tensor([[0.3, -0.7]], requires_grad=True)
    y = enc(x)
    expected = [0.3, -0.7]
    for k in range(3):
        f = 2.0 ** k
        expected += [math.sin(f * 0.3), math.sin(-f * 0.7), math.cos(f * 0.3), math.cos(-f * 0.7)]
    torch.testing.assert_close(y[0], torch.tensor(expected))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert FreqEncoder(6, 3).output_dim == 42 and FreqEncoder(2, 8).output_dim == 34


def test_mlp_is_bias_free():
    mlp = MLP(36, 32, 64, 2)
    assert all(layer.bias is None for layer in mlp.net)
    assert [tuple(layer.weight.shape) for layer in mlp.net] == [(64, 36), (32, 64)]


@pytest.mark.parametrize("A,T", [(29, 16), (32, 16), (44, 16), (1024, 2)])
def test_audio_net_windows(A, T):
    net = AudioNet(A, 32)
    x = torch.randn(8, A, T, requires_grad=True)
    y = net(x)
    assert y.shape == (8, 32)
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_audio_att_net_needs_eight_frames():
    att = AudioAttNet(32)
    x = torch.randn(1, 8, 32)
    y = att(x)
    assert y.shape == (1, 32)
    # The output is a convex combination of the window's codes.
    lo, hi = x.min(dim=1).values, x.max(dim=1).values
    assert ((y >= lo - 1e-5) & (y <= hi + 1e-5)).all()
    with pytest.raises(ValueError, match="8"):
        att(torch.randn(1, 4, 32))


def test_audio_dim_for():
    assert [audio_dim_for(m) for m in ("deepspeech", "cpierse/wav2vec2-large-xlsr-53-esperanto",
                                        "facebook/hubert-large-ls960-ft", "mel")] == [29, 44, 1024, 32]


@pytest.mark.parametrize("att", [0, 1, 2])
def test_encode_audio(att):
    model = NeRFNetwork(make_opt("--att", str(att)), audio_dim=32)
    k = 1 if att == 0 else 8
    enc = model.encode_audio(torch.randn(k, 32, 16))
    assert enc.shape == (1, 32)
    assert model.encode_audio(None) is None
    if att == 0:
        with pytest.raises(ValueError):
            model.encode_audio(torch.randn(8, 32, 16))


@pytest.mark.parametrize("flags", [("--att", "0"), ("--att", "1"), ("--att", "2"), ("--emb",)])
def test_encode_audio_batch_matches_one_window_at_a_time(flags):
    # A batch of windows [B, K, A, T] in one call gives each window's code and gradients.
    emb = "--emb" in flags
    model = NeRFNetwork(make_opt(*flags), audio_dim=29 if emb else 32)
    k = 1 if flags == ("--att", "0") else 8
    windows = torch.randint(0, 29, (5, k, 16)) if emb else torch.randn(5, k, 32, 16)
    one = torch.cat([model.encode_audio(w) for w in windows])
    grads_one = torch.autograd.grad((one ** 2).sum(), list(model.audio_net.parameters()))
    batch = model.encode_audio(windows)
    grads_batch = torch.autograd.grad((batch ** 2).sum(), list(model.audio_net.parameters()))
    assert batch.shape == (5, 32)
    torch.testing.assert_close(batch, one, rtol=1e-5, atol=1e-6)
    for g_batch, g_one in zip(grads_batch, grads_one):
        torch.testing.assert_close(g_batch, g_one, rtol=1e-4, atol=1e-6)


def test_encode_audio_embedding_ids():
    model = NeRFNetwork(make_opt("--emb"), audio_dim=29)
    ids = torch.randint(0, 29, (8, 16))
    assert model.encode_audio(ids).shape == (1, 32)


def test_head_dimensions():
    model = NeRFNetwork(make_opt("--exp_eye"), audio_dim=29)
    assert model.in_dim == 36
    assert model.sigma_net.net[0].in_features == 69 and model.sigma_net.net[-1].out_features == 65
    assert model.color_net.net[0].in_features == 84
    assert model.unc_net.net[0].in_features == 36 and model.aud_ch_att_net.net[-1].out_features == 32
    assert model.audio_net.encoder_conv[0].in_channels == 29
    for enc in (model.encoder_xy, model.encoder_yz, model.encoder_xz):
        assert enc.output_dim == 12
        assert sum(p.numel() for p in enc.parameters()) == 163584
    assert model.individual_codes.shape == (20, 4)
    no_eye = NeRFNetwork(make_opt(), audio_dim=29)
    assert no_eye.sigma_net.net[0].in_features == 68 and not hasattr(no_eye, "eye_att_net")


@pytest.mark.parametrize("exp_eye,ind_dim", [(True, 4), (False, 4), (True, 0)])
def test_head_forward_shapes_and_grads(exp_eye, ind_dim):
    flags = ["--ind_dim", str(ind_dim)] + (["--exp_eye"] if exp_eye else [])
    model = NeRFNetwork(make_opt(*flags), audio_dim=32)
    x, d = points()
    enc_a = model.encode_audio(torch.randn(8, 32, 16))
    code = model.individual_codes[3:4] if ind_dim else None
    eye = torch.tensor([[0.4]]) if exp_eye else None
    sigma, rgb, amb_aud, amb_eye, unc = model(x, d, enc_a, code, eye)
    assert sigma.shape == (64,) and rgb.shape == (64, 3) and unc.shape == (64,)
    assert amb_aud.shape == (64, 1) and amb_eye.shape == (64, 1)
    assert (sigma > 0).all() and (rgb > -0.001).all() and (rgb < 1.001).all()
    if not exp_eye:
        assert (amb_eye == 0).all()
    (sigma.sum() + rgb.sum() + amb_aud.sum() + amb_eye.sum() + unc.sum()).backward()
    nets = [model.encoder_xy, model.encoder_yz, model.encoder_xz, model.sigma_net, model.color_net,
            model.aud_ch_att_net, model.unc_net, model.audio_net, model.audio_att_net]
    if exp_eye:
        nets.append(model.eye_att_net)
    for net in nets:
        assert grad_norm(net) > 0, net
    if ind_dim:
        assert model.individual_codes.grad[3].abs().sum() > 0
        assert model.individual_codes.grad[0].abs().sum() == 0


def test_uncertainty_is_detached_and_ln2_when_off():
    model = NeRFNetwork(make_opt(), audio_dim=32)
    x, d = points()
    enc_a = model.encode_audio(torch.randn(8, 32, 16)).detach()
    code = model.individual_codes[:1]
    unc = model(x, d, enc_a, code)[4]
    unc.sum().backward()
    assert grad_norm(model.unc_net) > 0
    assert grad_norm(model.encoder_xy) == 0
    model.testing = True
    torch.testing.assert_close(model(x, d, enc_a, code)[4], torch.full((64,), math.log(2.0)))
    model.testing = False
    model.opt.unc_loss = 0
    with pytest.raises(ValueError, match="ind_dim"):
        model(x, d, enc_a, None)
    torch.testing.assert_close(model(x, d, enc_a, code)[4], torch.full((64,), math.log(2.0)))


def test_density_matches_forward():
    model = NeRFNetwork(make_opt("--exp_eye"), audio_dim=32)
    x, d = points()
    enc_a = model.encode_audio(torch.randn(8, 32, 16))
    eye = torch.tensor([[0.7]])
    out = model.density(x, enc_a, eye)
    sigma, _, amb_aud, amb_eye, _ = model(x, d, enc_a, model.individual_codes[:1], eye)
    torch.testing.assert_close(out["sigma"], sigma)
    torch.testing.assert_close(out["ambient_aud"], amb_aud)
    torch.testing.assert_close(out["ambient_eye"], amb_eye)
    with pytest.raises(ValueError, match="exp_eye"):
        model.density(x, enc_a, None)


def test_density_is_float32_under_cpu_autocast():
    # As under CUDA autocast (exp is on its float32 list); float16 exp overflows above 11.09.
    model = NeRFNetwork(make_opt(), audio_dim=32)
    x, _ = points()
    enc_a = model.encode_audio(torch.randn(8, 32, 16))
    model.sigma_net.register_forward_hook(lambda module, args, out: torch.full_like(out, 12.0))
    with torch.autocast("cpu", dtype=torch.float16):
        sigma = model.density(x, enc_a)["sigma"]
    assert sigma.dtype == torch.float32
    torch.testing.assert_close(sigma, torch.full((64,), math.exp(12.0)))


def test_torso_branch():
    model = NeRFNetwork(make_opt("--torso"), audio_dim=32)
    assert model.torso_deform_net.net[0].in_features == 84
    assert model.torso_net.net[0].in_features == 116 and model.torso_encoder.output_dim == 32
    xy = torch.rand(50, 2) * 2 - 1
    pose = torch.eye(4)[None]
    pose[0, 2, 3] = 3.0
    alpha, color, dx = model.forward_torso(xy, pose, model.individual_codes_torso[2:3])
    assert alpha.shape == (50, 1) and color.shape == (50, 3) and dx.shape == (50, 2)
    assert (alpha > -0.001).all() and (alpha < 1.001).all()
    (alpha.sum() + color.sum()).backward()
    for net in (model.torso_encoder, model.torso_net, model.torso_deform_net):
        assert grad_norm(net) > 0
    assert model.anchor_points.grad.abs().sum() > 0
    assert model.individual_codes_torso.grad[2].abs().sum() > 0


def _group_params(groups):
    out = []
    for g in groups:
        out += list(g["params"])
    return out


def test_get_params_head_groups():
    model = NeRFNetwork(make_opt("--exp_eye", "--train_camera"), audio_dim=32)
    groups = model.get_params(1e-2, 1e-3)
    params = _group_params(groups)
    assert len(params) == len({id(p) for p in params}), "a parameter is in two groups"
    assert {id(p) for p in params} == {id(p) for p in model.parameters()}
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.encoder_xy.embeddings)]["lr"] == 1e-2
    assert "weight_decay" not in by_param[id(model.encoder_xy.embeddings)]
    att = by_param[id(next(model.audio_att_net.parameters()))]
    assert att["lr"] == pytest.approx(5e-3) and att["weight_decay"] == 1e-4
    assert by_param[id(model.camera_dR)]["lr"] == 1e-5
    assert by_param[id(model.individual_codes)]["lr"] == 1e-3
    # --lr_aud scales the audio path only.
    fast = {id(p): g["lr"] for g in model.get_params(1e-2, 1e-3, lr_aud=4) for p in g["params"]}
    for net, base in ((model.audio_net, 1e-3), (model.audio_att_net, 5e-3), (model.aud_ch_att_net, 1e-3)):
        assert fast[id(next(net.parameters()))] == pytest.approx(4 * base)
    assert fast[id(next(model.sigma_net.parameters()))] == pytest.approx(1e-3)
    assert fast[id(next(model.unc_net.parameters()))] == pytest.approx(1e-3)


def test_get_params_torso_only():
    model = NeRFNetwork(make_opt("--torso"), audio_dim=32)
    ids = {id(p) for p in _group_params(model.get_params(1e-2, 1e-3))}
    torso = [model.torso_encoder, model.torso_net, model.torso_deform_net]
    expected = {id(p) for m in torso for p in m.parameters()}
    expected |= {id(model.anchor_points), id(model.individual_codes_torso)}
    assert ids == expected
