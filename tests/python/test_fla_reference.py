"""subq's torch ops against flash-linear-attention's naive references (PyPI
flash-linear-attention: the naive.py functions are plain PyTorch and run on the CPU).

Same inputs to both; outputs and final states must agree in fp32. Layouts: fla's naive
recurrent functions take [B, T, H, D] like subq; naive_parallel_based takes [B, H, T, D].
"""
import pytest
import torch

try:
    from fla.ops.based.naive import naive_parallel_based
    from fla.ops.gla.naive import naive_recurrent_gla
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn
    from fla.ops.simple_gla.naive import naive_recurrent_simple_gla
except ImportError as e:  # a missing oracle is a failure, not a skip
    raise RuntimeError(f"flash-linear-attention is not installed in this venv: {e}") from e

ops = torch.ops.subq
MODES = ["chunk", "recurrent", "parallel"]


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def inputs(B=2, T=70, H=3, K=32, V=48):
    q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
    v = torch.randn(B, T, H, V)
    return q, k, v


@pytest.mark.parametrize("mode", MODES)
def test_linear_attention(mode):
    q, k, v = inputs()
    h0 = torch.randn(2, 3, 32, 48) if mode != "parallel" else None
    ref, ref_ht = naive_recurrent_linear_attn(q, k, v, initial_state=h0, output_final_state=True)
    out, ht, _ = ops.linear_attention(q, k, v, initial_state=h0, mode=mode, chunk_size=16,
                                      output_final_state=True)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(ht, ref_ht) < 1e-4


def test_linear_attention_normalized():
    # fla divides by (q . cumsum(k)) + 1e-10; subq's eps is an option.
    q, k, v = (t.abs() for t in inputs())
    ref, (ref_s, ref_z) = naive_recurrent_linear_attn(q, k, v, output_final_state=True,
                                                      normalize=True)
    out, s, z = ops.linear_attention(q, k, v, normalize=True, eps=1e-10,
                                     output_final_state=True)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(s, ref_s) < 1e-4
    assert rel_err(z, ref_z[:, 0]) < 1e-4  # fla keeps z as [B, 1, H, K]


@pytest.mark.parametrize("mode", MODES)
def test_simple_gla(mode):
    q, k, v = inputs()
    g = -torch.rand(2, 70, 3) * 0.2
    h0 = torch.randn(2, 3, 32, 48) if mode != "parallel" else None
    ref, ref_ht = naive_recurrent_simple_gla(q, k, v, g, initial_state=h0,
                                             output_final_state=True)
    out, ht, _ = ops.linear_attention(q, k, v, g=g, initial_state=h0, mode=mode, chunk_size=16,
                                      output_final_state=True)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(ht, ref_ht) < 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_gla(mode):
    q, k, v = inputs()
    gk = torch.nn.functional.logsigmoid(torch.randn(2, 70, 3, 32)) / 8
    h0 = torch.randn(2, 3, 32, 48) if mode != "parallel" else None
    ref, ref_ht = naive_recurrent_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    out, ht, _ = ops.linear_attention(q, k, v, gk=gk, initial_state=h0, mode=mode,
                                      chunk_size=16, output_final_state=True)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(ht, ref_ht) < 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_based(mode):
    # BASED = the taylor feature map on q and k, then normalized causal linear attention.
    B, T, H, d, V = 2, 50, 3, 16, 24
    q, k = torch.randn(B, T, H, d) * 0.5, torch.randn(B, T, H, d) * 0.5
    v = torch.randn(B, T, H, V)
    ref = naive_parallel_based(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                               use_norm=True).transpose(1, 2)
    fq, fk = ops.feature_map(q, "taylor"), ops.feature_map(k, "taylor")
    out, _, _ = ops.linear_attention(fq, fk, v, normalize=True, eps=1e-6, mode=mode,
                                     chunk_size=16)
    assert rel_err(out, ref) < 1e-4
