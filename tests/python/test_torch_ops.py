"""subq's torch ops against plain-torch references: forward, autograd backward, and errors.

Every op runs in fp32 through torch.ops.subq.*; the references are written here in plain torch
(float64) and differentiated by torch's own autograd.
"""
import math

import pytest
import torch

ops = torch.ops.subq


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def softmax_attention_ref(q, k, v, causal, window_left=-1):
    """q [B,Tq,H,D], k, v [B,Tk,Hkv,D]; causal bottom-right; GQA by repeating kv heads."""
    B, Tq, H, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    k = k.repeat_interleave(H // Hkv, dim=2)
    v = v.repeat_interleave(H // Hkv, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
    i = torch.arange(Tq)[:, None] + (Tk - Tq)
    j = torch.arange(Tk)[None, :]
    visible = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        visible &= j <= i
    if window_left >= 0:
        visible &= j >= i - window_left
    s = s.masked_fill(~visible, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)


@pytest.mark.parametrize("causal,H,Hkv,Tq,Tk,window", [
    (True, 4, 4, 37, 37, -1),
    (True, 4, 2, 20, 53, -1),
    (False, 6, 1, 33, 17, -1),
    (True, 2, 2, 70, 70, 9),
])
def test_flash_attention_forward_backward(causal, H, Hkv, Tq, Tk, window):
    B, D = 2, 32
    q = torch.randn(B, Tq, H, D, requires_grad=True)
    k = torch.randn(B, Tk, Hkv, D, requires_grad=True)
    v = torch.randn(B, Tk, Hkv, D, requires_grad=True)
    out, lse = ops.flash_attention(q, k, v, causal=causal, window_left=window,
                                   window_right=0 if window >= 0 else -1)
    assert lse.dtype == torch.float32 and lse.shape == (B, H, Tq)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = softmax_attention_ref(qd, kd, vd, causal, window)
    assert rel_err(out, ref) < 2e-5
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout.double())
    for name, got, want in (("dq", q.grad, qd.grad), ("dk", k.grad, kd.grad),
                            ("dv", v.grad, vd.grad)):
        assert rel_err(got, want) < 5e-5, name


def test_flash_attention_raw_ops_match_autograd():
    q, k, v = (torch.randn(1, 24, 2, 16) for _ in range(3))
    out, lse = ops.flash_attention_forward(q, k, v, causal=True)
    dout = torch.randn_like(out)
    dq, dk, dv = ops.flash_attention_backward(q, k, v, out, lse, dout, causal=True)
    qa, ka, va = (t.clone().requires_grad_() for t in (q, k, v))
    out_a, _ = ops.flash_attention(qa, ka, va, causal=True)
    out_a.backward(dout)
    assert torch.equal(out, out_a)
    assert torch.equal(dq, qa.grad) and torch.equal(dk, ka.grad) and torch.equal(dv, va.grad)


def test_flash_attention_decode_matches_forward():
    B, T, H, D = 2, 40, 4, 16
    q, k, v = (torch.randn(B, T, H, D) for _ in range(3))
    full, _ = ops.flash_attention_forward(q, k, v, causal=True)
    k_cache = torch.zeros(B, 64, H, D)
    v_cache = torch.zeros(B, 64, H, D)
    k_cache[:, :T - 1] = k[:, :T - 1]
    v_cache[:, :T - 1] = v[:, :T - 1]
    seqlens = torch.full((B,), T - 1, dtype=torch.int32)
    out, _ = ops.flash_attention_decode(q[:, -1:], k_cache, v_cache, seqlens, k[:, -1:],
                                        v[:, -1:], causal=True)
    assert rel_err(out, full[:, -1:]) < 1e-5
    assert torch.equal(k_cache[:, T - 1], k[:, -1])  # appended in place


def gated_linear_ref(q, k, v, gk, h0):
    """The recurrence S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T, o_t = q_t^T S_t / sqrt(K)."""
    B, T, H, K = q.shape
    S = h0.clone()
    outs = []
    for t in range(T):
        S = S * gk[:, t].exp()[..., None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] / math.sqrt(K), S))
    return torch.stack(outs, 1), S


@pytest.mark.parametrize("gate", ["g", "gk"])
@pytest.mark.parametrize("mode", ["chunk", "recurrent", "parallel"])
def test_gated_linear_attention_forward_backward(gate, mode):
    B, T, H, K, V = 2, 45, 3, 16, 24
    q, k = (torch.randn(B, T, H, K, requires_grad=True) for _ in range(2))
    v = torch.randn(B, T, H, V, requires_grad=True)
    shape = (B, T, H) if gate == "g" else (B, T, H, K)
    g = (-torch.rand(shape) * 0.3).requires_grad_()
    h0 = torch.randn(B, H, K, V, requires_grad=True) if mode != "parallel" else None
    kwargs = {gate: g, "mode": mode, "chunk_size": 16, "output_final_state": True}
    if h0 is not None:
        kwargs["initial_state"] = h0
    out, ht, _ = ops.linear_attention(q, k, v, **kwargs)
    qd, kd, vd, gd = (t.detach().double().requires_grad_() for t in (q, k, v, g))
    h0d = (h0.detach().double() if h0 is not None else torch.zeros(B, H, K, V,
                                                                     dtype=torch.float64))
    h0d.requires_grad_()
    gkd = gd[..., None].expand(B, T, H, K) if gate == "g" else gd
    ref, ref_ht = gated_linear_ref(qd, kd, vd, gkd, h0d)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(ht, ref_ht) < 1e-4
    # Gradients through both outputs (dout and dht).
    dout, dht = torch.randn_like(out), torch.randn_like(ht)
    torch.autograd.backward((out, ht), (dout, dht))
    torch.autograd.backward((ref, ref_ht), (dout.double(), dht.double()))
    pairs = [("dq", q, qd), ("dk", k, kd), ("dv", v, vd), ("dg", g, gd)]
    if h0 is not None:
        pairs.append(("dh0", h0, h0d))
    for name, got, want in pairs:
        assert rel_err(got.grad, want.grad) < 2e-4, name


def test_linear_attention_step_matches_full():
    B, T, H, K = 1, 12, 2, 8
    q, k, v = (torch.randn(B, T, H, K) for _ in range(3))
    g = -torch.rand(B, T, H) * 0.2
    full, _, _ = ops.linear_attention(q, k, v, g=g, mode="recurrent")
    state = torch.zeros(B, H, K, K)
    for t in range(T):
        o = ops.linear_attention_step(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], state,
                                      g=g[:, t:t + 1])
        assert rel_err(o, full[:, t:t + 1]) < 1e-5


def test_feature_map_and_short_conv_against_torch():
    x = torch.randn(2, 10, 3, 8, requires_grad=True)
    y = ops.feature_map(x, "elu1")
    xd = x.detach().double().requires_grad_()
    ref = torch.nn.functional.elu(xd) + 1
    assert rel_err(y, ref) < 1e-6
    dy = torch.randn_like(y)
    y.backward(dy)
    ref.backward(dy.double())
    assert rel_err(x.grad, xd.grad) < 1e-6

    # Hedgehog: [softmax(x W), softmax(-x W)], W [H, d, d'] learned.
    w = torch.randn(3, 8, 4, requires_grad=True)
    y = ops.feature_map(x.detach(), "hedgehog", weight=w)
    wd = w.detach().double().requires_grad_()
    u = torch.einsum("bthd,hde->bthe", x.detach().double(), wd)
    ref = torch.cat([u.softmax(-1), (-u).softmax(-1)], -1)
    assert rel_err(y, ref) < 1e-5
    dy = torch.randn_like(y)
    y.backward(dy)
    ref.backward(dy.double())
    assert rel_err(w.grad, wd.grad) < 1e-5

    # Short conv: causal depthwise conv over [B, T, D] with SiLU, against F.conv1d.
    B, T, D, W = 2, 19, 6, 4
    x = torch.randn(B, T, D, requires_grad=True)
    w = torch.randn(D, W, requires_grad=True)
    b = torch.randn(D, requires_grad=True)
    out, _ = ops.short_conv(x, w, bias=b, silu=True)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    u = torch.nn.functional.conv1d(torch.nn.functional.pad(xd.transpose(1, 2), (W - 1, 0)),
                                   wd[:, None, :], bd, groups=D)
    ref = torch.nn.functional.silu(u).transpose(1, 2)
    assert rel_err(out, ref) < 1e-5
    dy = torch.randn_like(out)
    out.backward(dy)
    ref.backward(dy.double())
    for name, got, want in (("dx", x, xd), ("dw", w, wd), ("db", b, bd)):
        assert rel_err(got.grad, want.grad) < 1e-5, name


def test_hybrid_attention_autograd_matches_raw_backward():
    B, T, H, d, f = 1, 30, 2, 8, 8
    q, k, v = (torch.randn(B, T, H, d) for _ in range(3))
    fq, fk = torch.rand(B, T, H, f), torch.rand(B, T, H, f)
    wf = torch.full((H,), -2.0)
    ins = [t.clone().requires_grad_() for t in (q, k, fq, fk, v, wf)]
    out = ops.hybrid_attention(*ins[:5], ins[5], window=8)
    dout = torch.randn_like(out)
    out.backward(dout)
    raw = ops.hybrid_attention_backward(q, k, fq, fk, v, dout, wf, window=8)
    assert torch.equal(out, ops.hybrid_attention_forward(q, k, fq, fk, v, wf, window=8))
    for got, want in zip(ins, raw[:6]):
        assert torch.equal(got.grad, want)


def test_hybrid_cache_decode_matches_forward():
    B, T, H, d, f, w, P = 2, 30, 2, 8, 8, 6, 11
    q, k, v = (torch.randn(B, T, H, d) for _ in range(3))
    fq, fk = torch.rand(B, T, H, f), torch.rand(B, T, H, f)
    g = -torch.rand(B, T, H) * 0.2
    wf = torch.randn(H)
    full = ops.hybrid_attention(q, k, fq, fk, v, wf, window=w, g=g)
    cache = torch.classes.subq.HybridCache(B, H, d, f, d, w)
    cache.prefill(k[:, :P], fk[:, :P], v[:, :P], g[:, :P], wf, None, 64)
    for t in range(P, T):
        s = slice(t, t + 1)
        out = cache.step(q[:, s], k[:, s], fq[:, s], fk[:, s], v[:, s], g[:, s], wf, None, 64)
        assert rel_err(out, full[:, s]) < 1e-5, t
    assert cache.nbytes() > 0


@pytest.mark.parametrize("shape,inp,out,bias", [
    ((37, 70), 70, 45, False),
    ((2, 19, 300), 300, 70, True),   # more than one depth pass; 3-D x
    ((5, 1), 1, 1, True),
    ((260, 33), 33, 2100, False),    # more than one block of rows and of columns
])
def test_linear_forward_backward(shape, inp, out, bias):
    """subq::linear (subq's GEMM, forward and backward) against float64 torch."""
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(out, inp, requires_grad=True)
    b = torch.randn(out, requires_grad=True) if bias else None
    y = ops.linear(x, w, b)
    dy = torch.randn_like(y)
    y.backward(dy)
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    bd = b.detach().double().requires_grad_() if bias else None
    yd = torch.nn.functional.linear(xd, wd, bd)
    yd.backward(dy.double())
    assert y.shape == yd.shape
    assert rel_err(y, yd) < 1e-5
    assert rel_err(x.grad, xd.grad) < 1e-5
    assert rel_err(w.grad, wd.grad) < 1e-5
    if bias:
        assert rel_err(b.grad, bd.grad) < 1e-5


def test_linear_errors():
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match=r"subq::linear: x: expected an f32 tensor \[\.\.\., 9\]"):
        ops.linear(x, torch.randn(3, 9))
    with pytest.raises(RuntimeError, match=r"subq::linear: weight: expected a 2-D f32"):
        ops.linear(x, torch.randn(3, 8).double())
    with pytest.raises(RuntimeError, match=r"subq::linear: bias: expected an f32 tensor \[3\]"):
        ops.linear(x, torch.randn(3, 8), torch.randn(4))


def test_errors_are_clear():
    q = torch.randn(1, 8, 2, 16)
    with pytest.raises(RuntimeError, match=r"subq::flash_attention: q: expected dtype"):
        ops.flash_attention(q.to(torch.complex64), q, q)
    with pytest.raises(RuntimeError, match=r"head dim"):
        ops.flash_attention(q, torch.randn(1, 8, 2, 8), torch.randn(1, 8, 2, 8))
    with pytest.raises(RuntimeError, match=r"mode: expected chunk, recurrent or parallel"):
        ops.linear_attention(q, q, q, mode="fast")
    with pytest.raises(RuntimeError, match=r"g: .*<= 0|positive"):
        ops.linear_attention(q, q, q, g=torch.ones(1, 8, 2))
    with pytest.raises(RuntimeError, match=r"subq::feature_map: map: expected identity, elu1"):
        ops.feature_map(q, "nope")
