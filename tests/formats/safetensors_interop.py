#!/usr/bin/env python3
"""subq's checkpoint code against real peers: PyPI safetensors and transformers.

Usage: safetensors_interop.py PATH/TO/subq_safetensors_tool

1. Files written by safetensors.torch.save_file (f32, bf16, f16, f64, i32, i64; 0-d and empty
   tensors; inf, NaN, -0.0, subnormals; metadata) read in C++ with the same bytes and values.
2. Files written in C++ load in safetensors.torch.load_file with identical values; C++'s
   f32 -> bf16/f16 conversion equals torch's; a single-dtype file is byte-identical to the one
   safetensors writes.
3. Corrupt files the reference (Rust) reader rejects, subq rejects too.
4. Random transformers LlamaForCausalLM checkpoints (GQA; tied and untied; single file and
   sharded; f32 and bf16) load through the C++ loader and pass llama_expected_tensors, and a
   checkpoint re-saved in C++ loads in transformers with the same weights and logits.
5. With tie_word_embeddings and a stored lm_head.weight, transformers ties only when the two
   are equal; llama_lm_head_is_tied says the same.

A missing package is a failure (with the reason), never a skip.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy  # noqa: F401  (torch's tensor.numpy() needs it)
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as e:  # a broken venv must fail the test, not skip it
    print(f"FAIL: the Python environment lacks {e.name} ({e}); run scripts/setup.sh")
    sys.exit(1)

TOOL = None
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def tool(*args, ok=True):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise RuntimeError(f"{TOOL} {' '.join(map(str, args))} failed: {r.stderr}")
    return r


def raw_bytes(t):
    t = t.contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def same_values(a, b):
    """Bit-for-bit equal, except that any NaN equals any NaN (payloads may differ)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        an, bn = torch.isnan(a), torch.isnan(b)
        if not torch.equal(an, bn):
            return False
        a, b = a.masked_fill(an, 0), b.masked_fill(bn, 0)
        # -0.0 and 0.0 compare equal; compare signs too.
        if not torch.equal(torch.signbit(a), torch.signbit(b)):
            return False
    return torch.equal(a, b)


def sample_tensors():
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e-40, 3.0e38, 65504.0, 1e-8])
    return {
        "a.f32": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(4, 2, 3, generator=g).to(torch.bfloat16),
        "c.f16": torch.randn(7, generator=g).to(torch.float16),
        "d.f64": torch.randn(2, 2, generator=g, dtype=torch.float64),
        "e.i32": torch.tensor([[-5, 7], [2**31 - 1, -(2**31)]], dtype=torch.int32),
        "f.i64": torch.tensor([2**62, -3], dtype=torch.int64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "special.f32": special.clone(),
        "special.bf16": special.to(torch.bfloat16),
        "special.f16": special.to(torch.float16),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=g),
    }


def expect_dump_matches(dump, tensors, metadata, where):
    check(set(dump["tensors"]) == set(tensors), f"{where}: names {sorted(dump['tensors'])}")
    check(dump["metadata"] == (metadata or {}), f"{where}: metadata {dump['metadata']}")
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
             torch.float64: "F64", torch.int32: "I32", torch.int64: "I64"}
    for name, t in tensors.items():
        d = dump["tensors"].get(name)
        if d is None:
            continue
        check(d["dtype"] == names[t.dtype], f"{where}: {name} dtype {d['dtype']}")
        check(d["shape"] == list(t.shape), f"{where}: {name} shape {d['shape']}")
        check(bytes.fromhex(d["hex"]) == raw_bytes(t), f"{where}: {name} bytes differ")
        if t.is_floating_point():
            got = torch.tensor([float(v) for v in d["f32"]], dtype=torch.float32).reshape(t.shape)
            check(same_values(got, t.float()), f"{where}: {name} f32 values differ")


def test_python_to_cpp(tmp):
    tensors = sample_tensors()
    meta = {"format": "pt", "note": "written by safetensors.torch"}
    path = os.path.join(tmp, "py.safetensors")
    save_file(tensors, path, metadata=meta)
    dump = json.loads(tool("dump", path).stdout)
    expect_dump_matches(dump, tensors, meta, "python -> C++")
    print(f"ok: {len(tensors)} tensors written by safetensors {sys.modules['safetensors'].__version__} read in C++")


def test_cpp_to_python(tmp):
    tensors = sample_tensors()
    src = os.path.join(tmp, "src.safetensors")
    save_file(tensors, src, metadata={"format": "pt"})
    out = os.path.join(tmp, "cpp.safetensors")
    tool("rewrite", src, out, "keep")
    back = load_file(out)
    check(set(back) == set(tensors), "C++ -> python: names")
    for name, t in tensors.items():
        check(name in back and same_values(back[name], t), f"C++ -> python: {name} differs")
    with safe_open(out, framework="pt") as f:
        check(f.metadata() == {"format": "pt"}, f"C++ -> python: metadata {f.metadata()}")

    # Conversion on write equals torch's (round to nearest even, inf and NaN kept).
    for dt, torch_dt in (("bf16", torch.bfloat16), ("f16", torch.float16), ("f32", torch.float32)):
        out = os.path.join(tmp, f"cpp_{dt}.safetensors")
        tool("rewrite", src, out, dt)
        back = load_file(out)
        for name, t in tensors.items():
            want = t.to(torch_dt) if t.is_floating_point() else t
            check(same_values(back[name], want), f"C++ f32 -> {dt}: {name} differs from torch")

    # One dtype (so both writers lay tensors out the same way) and one metadata key (serde's
    # HashMap order is then fixed): the bytes must be the reference writer's.
    single = {k: v for k, v in tensors.items() if v.dtype == torch.float32}
    ref = os.path.join(tmp, "ref.safetensors")
    save_file(single, ref, metadata={"format": "pt"})
    mine = os.path.join(tmp, "mine.safetensors")
    tool("rewrite", ref, mine, "keep")
    check(open(ref, "rb").read() == open(mine, "rb").read(),
          "C++ writer: bytes differ from safetensors' for a single-dtype file")
    print("ok: C++-written files load in safetensors.torch with identical values and bytes")


def file_with(header, data_len, pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"\0" * data_len


def test_corrupt_files(tmp):
    e = lambda dt, shape, b, end: {"dtype": dt, "shape": shape, "data_offsets": [b, end]}
    cases = {
        "gap": (file_with({"a": e("F32", [1], 0, 4), "b": e("F32", [1], 8, 12)}, 12)),
        "overlap": (file_with({"a": e("F32", [2], 0, 8), "b": e("F32", [2], 4, 12)}, 12)),
        "uncovered tail": (file_with({"a": e("F32", [1], 0, 4)}, 8)),
        "size mismatch": (file_with({"a": e("F32", [3], 0, 8)}, 8)),
        "end before begin": (file_with({"a": e("F32", [0], 8, 4)}, 8)),
        "out of range": (file_with({"a": e("F32", [4], 0, 16)}, 8)),
        "header past the end": struct.pack("<Q", 1000) + b"{}",
        "header too large": struct.pack("<Q", 100_000_001) + b"{}",
        "short": b"\x01\x00",
        "not json": struct.pack("<Q", 4) + b"{abc",
        "negative shape": (file_with({"a": e("F32", [-1], 0, 4)}, 4)),
        "float shape": (file_with({"a": e("F32", [1.5], 0, 4)}, 4)),
        "unknown dtype": (file_with({"a": e("F17", [1], 0, 4)}, 4)),
        "missing field": (file_with({"a": {"dtype": "F32", "shape": [1]}}, 4)),
    }
    accepted_by_both = {
        "unpadded header": file_with({"a": e("F32", [1], 0, 4)}, 4, pad=False),
        "offset order differs from name order": file_with(
            {"a": e("F32", [1], 4, 8), "b": e("F32", [1], 0, 4)}, 8),
        "zero-size tensors": file_with({"a": e("F32", [0, 4], 0, 0), "b": e("BF16", [0], 0, 0)}, 0),
    }
    for name, blob in {**cases, **accepted_by_both}.items():
        path = os.path.join(tmp, "case.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            with safe_open(path, framework="pt") as f:
                list(f.keys())
            ref_ok = True
        except Exception:
            ref_ok = False
        ours = tool("check", path, ok=False)
        ours_ok = ours.returncode == 0
        want = name in accepted_by_both
        check(ref_ok == want, f"corrupt file '{name}': the reference reader {'accepts' if ref_ok else 'rejects'} it")
        check(ours_ok == want, f"corrupt file '{name}': subq {'accepts' if ours_ok else 'rejects'} it: {ours.stderr.strip()}")
        if not ours_ok:
            check(path in ours.stderr, f"corrupt file '{name}': message does not name the file: {ours.stderr}")
    print(f"ok: {len(cases)} corrupt files rejected and {len(accepted_by_both)} odd valid files "
          "accepted, as by the reference reader")


def tiny_llama(tied, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                         max_position_embeddings=64, tie_word_embeddings=tied, rope_theta=50000.0)
    return LlamaForCausalLM(config).to(dtype).eval()


def test_transformers_checkpoints(tmp):
    input_ids = torch.tensor([[1, 5, 9, 33, 2, 127, 64, 0]])
    for tied in (False, True):
        for shard in (None, "40KB"):
            for dtype in (torch.float32, torch.bfloat16):
                where = f"LlamaForCausalLM tied={tied} shard={shard} {dtype}"
                model = tiny_llama(tied, dtype)
                d = tempfile.mkdtemp(dir=tmp)
                if shard:
                    model.save_pretrained(d, max_shard_size=shard)
                    check(os.path.exists(os.path.join(d, "model.safetensors.index.json")), f"{where}: not sharded")
                else:
                    model.save_pretrained(d)
                r = tool("check-llama", d, ok=False)
                check(r.returncode == 0, f"{where}: C++ loader failed: {r.stderr}")
                if r.returncode != 0:
                    continue
                got = json.loads(r.stdout)
                state = {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
                check(set(got["tensors"]) == set(state), f"{where}: tensor names {sorted(set(got['tensors']) ^ set(state))}")
                check(got["tie_word_embeddings"] == tied and got["num_key_value_heads"] == 2 and got["head_dim"] == 16,
                      f"{where}: config {got}")
                index = None
                if shard:
                    with open(os.path.join(d, "model.safetensors.index.json")) as f:
                        index = json.load(f)["weight_map"]
                for name, t in state.items():
                    g = got["tensors"].get(name)
                    if g is None:
                        continue
                    check(bytes.fromhex(g["hex"]) == raw_bytes(t), f"{where}: {name} bytes differ")
                    check(g["shape"] == list(t.shape), f"{where}: {name} shape")
                    if index:
                        check(g["file"] == index[name], f"{where}: {name} in {g['file']}, index says {index[name]}")

                # Re-saved in C++ (another dtype and sharding), loaded by transformers.
                for out_dtype, out_shard in (("f32", 0), ("bf16", 30000)):
                    out = tempfile.mkdtemp(dir=tmp)
                    tool("resave", d, out, out_dtype, out_shard)
                    torch_dt = torch.float32 if out_dtype == "f32" else torch.bfloat16
                    back, info = LlamaForCausalLM.from_pretrained(out, output_loading_info=True, dtype=torch_dt)
                    check(not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")),
                          f"{where} -> C++ {out_dtype}: transformers loading info {info}")
                    for name, t in model.state_dict().items():
                        want = t.to(torch_dt)
                        check(same_values(back.state_dict()[name], want), f"{where} -> C++ {out_dtype}: {name} differs")
                    # The reference: transformers loading its own checkpoint in the same dtype
                    # (model.to() would also round the RoPE frequency buffer, which loading does not).
                    ref = LlamaForCausalLM.from_pretrained(d, dtype=torch_dt)
                    with torch.no_grad():
                        check(torch.equal(ref(input_ids).logits, back(input_ids).logits),
                              f"{where} -> C++ {out_dtype}: logits differ")
    print("ok: transformers LlamaForCausalLM checkpoints (GQA, tied/untied, single/sharded, f32/bf16) "
          f"load in C++ and C++ re-saves load in transformers {transformers.__version__}")


def test_tied_with_stored_lm_head(tmp):
    """What transformers does with tie_word_embeddings and an lm_head.weight in the file, and
    that llama_lm_head_is_tied agrees: equal to the embedding -> tied; different -> not tied."""
    model = tiny_llama(True)
    for equal in (True, False):
        d = tempfile.mkdtemp(dir=tmp)
        model.save_pretrained(d)
        state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
        state["lm_head.weight"] = (state["model.embed_tokens.weight"].clone() if equal
                                   else torch.randn(state["model.embed_tokens.weight"].shape))
        save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        back, info = LlamaForCausalLM.from_pretrained(d, output_loading_info=True)
        hf_tied = back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
        check(hf_tied == equal, f"tied config, stored lm_head equal={equal}: transformers tied={hf_tied}")
        check(torch.equal(back.lm_head.weight, state["lm_head.weight"]),
              f"tied config, stored lm_head equal={equal}: transformers does not use the stored head")
        r = tool("check-llama", d, ok=False)
        check(r.returncode == 0, f"tied config with lm_head: C++ loader failed: {r.stderr}")
        if r.returncode == 0:
            ours = json.loads(r.stdout)["lm_head_tied"]
            check(ours == hf_tied, f"tied config, stored lm_head equal={equal}: llama_lm_head_is_tied={ours}, transformers {hf_tied}")
    print("ok: a tied config with a stored lm_head.weight: transformers ties only when it equals the "
          "embedding, and llama_lm_head_is_tied agrees")


def main():
    global TOOL
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    TOOL = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="subq_interop_") as tmp:
        for test in (test_python_to_cpp, test_cpp_to_python, test_corrupt_files,
                     test_transformers_checkpoints, test_tied_with_stored_lm_head):
            try:
                test(tmp)
            except Exception as e:  # a crash in one part is a failure, and the rest still runs
                check(False, f"{test.__name__}: {type(e).__name__}: {e}")
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("all interop checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
