"""The decoder model against real peers and against itself.

- transformers' LlamaForCausalLM (random models, several configs) saved with save_pretrained:
  subq loads them and its logits match to 1e-4 relative in fp32;
- prefill (in chunks) + token-by-token decode gives the logits of one full forward, for every
  mechanism;
- save -> load -> save is byte-identical (f32, bf16, f16, sharded);
- subq's files load in PyPI safetensors and in transformers.

The C++ side runs through tests/model/model_tool.cc (SUBQ_MODEL_TOOL, set by CTest).
"""
import json
import os
import subprocess

import pytest
import torch

try:
    import transformers
    from safetensors.torch import load_file
except ImportError as e:  # a missing oracle is a failure, not a skip
    raise RuntimeError(f"transformers and safetensors must be in the venv: {e}") from e

TOOL = os.environ.get("SUBQ_MODEL_TOOL", "")


def tool(*args):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"model_tool {' '.join(map(str, args))}: {r.stderr}"


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


def subq_logits(model_dir, ids, tmp_path, prefill=None, chunk=None):
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids.tolist()))
    out = tmp_path / "logits.safetensors"
    extra = [prefill, chunk] if prefill is not None else []
    tool("logits", model_dir, ids_file, out, *extra)
    return load_file(str(out))["logits"]


def perturbed(model):
    """Norms start at 1 and biases at 0: perturb every weight so that each one matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def random_llama(**kw):
    cfg = transformers.LlamaConfig(**kw)
    torch.manual_seed(0)
    return perturbed(transformers.LlamaForCausalLM(cfg).eval())


LLAMA_CONFIGS = {
    "mha_untied": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, intermediate_size=128, vocab_size=101),
    "gqa4_tied_theta5e5": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=8,
                               num_key_value_heads=2, intermediate_size=256, vocab_size=300,
                               rope_theta=500000.0, tie_word_embeddings=True),
    "mqa_odd_sizes": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                          num_key_value_heads=1, intermediate_size=100, vocab_size=97,
                          rms_norm_eps=1e-5),
    "head_dim_32_gqa2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=32, intermediate_size=96,
                             vocab_size=128, tie_word_embeddings=True, rope_theta=1e6),
}


@pytest.mark.parametrize("name", sorted(LLAMA_CONFIGS))
def test_logits_match_transformers(name, tmp_path):
    model = random_llama(**LLAMA_CONFIGS[name])
    model.save_pretrained(tmp_path / "m")
    ids = torch.randint(0, model.config.vocab_size, (2, 37))
    with torch.no_grad():
        want = model(ids).logits
    got = subq_logits(tmp_path / "m", ids, tmp_path)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4


# The families linearization papers start from, as random models of each transformers class:
# Llama 3.2 (llama3 RoPE, tied), Llama with linear and yarn RoPE and attention/MLP biases,
# Qwen2.5 (q, k, v biases), Qwen3 (q and k RMSNorm, explicit head_dim), Mistral (sliding window
# shorter than the sequence), and Qwen2 with sliding layers. T = 37 > every window.
SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, vocab_size=211)
FAMILY_CONFIGS = {
    "llama3_2_rope_llama3": ("LlamaConfig", dict(
        SMALL, tie_word_embeddings=True, max_position_embeddings=64,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})),
    "llama_rope_linear_biases": ("LlamaConfig", dict(
        SMALL, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
    "llama_rope_yarn": ("LlamaConfig", dict(
        SMALL, max_position_embeddings=128,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 32, "beta_fast": 16.0})),
    "llama_rope_yarn_mscale": ("LlamaConfig", dict(
        SMALL, max_position_embeddings=128,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                         "original_max_position_embeddings": 16, "mscale": 1.0,
                         "mscale_all_dim": 0.5, "truncate": False})),
    "qwen2_5": ("Qwen2Config", dict(SMALL, rope_parameters={"rope_type": "default",
                                                            "rope_theta": 1000000.0})),
    "qwen2_sliding_layers": ("Qwen2Config", dict(
        SMALL, use_sliding_window=True, sliding_window=9, max_window_layers=1)),
    "qwen3": ("Qwen3Config", dict(SMALL, head_dim=32, tie_word_embeddings=True)),
    "qwen3_bias_yarn": ("Qwen3Config", dict(
        SMALL, head_dim=16, attention_bias=True, max_position_embeddings=256,
        rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64})),
    "mistral_sliding_window": ("MistralConfig", dict(SMALL, sliding_window=11)),
}
CAUSAL_LM = {"LlamaConfig": "LlamaForCausalLM", "Qwen2Config": "Qwen2ForCausalLM",
             "Qwen3Config": "Qwen3ForCausalLM", "MistralConfig": "MistralForCausalLM"}


def random_family_model(config_class, kw):
    cfg = getattr(transformers, config_class)(**kw)
    cfg._attn_implementation = "eager"  # the reference masks: sliding windows included
    torch.manual_seed(0)
    return perturbed(getattr(transformers, CAUSAL_LM[config_class])(cfg).eval())


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_families_match_transformers(name, tmp_path):
    config_class, kw = FAMILY_CONFIGS[name]
    model = random_family_model(config_class, kw)
    model.save_pretrained(tmp_path / "m")
    ids = torch.randint(0, model.config.vocab_size, (2, 37))
    with torch.no_grad():
        want = model(ids).logits
    got = subq_logits(tmp_path / "m", ids, tmp_path)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-4, name
    # Prefill in chunks, then token by token: the same logits (ring caches for the windows).
    decoded = subq_logits(tmp_path / "m", ids, tmp_path, prefill=20, chunk=8)
    assert rel_err(decoded, want) < 1e-4, name


@pytest.mark.parametrize("field,value,message", [
    ("rope_parameters", {"rope_type": "dynamic", "factor": 2.0}, "unsupported rope_type"),
    ("rope_parameters", {"rope_type": "linear"}, "factor"),
    ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "beta_fast": 3}, "'beta_fast'"),
    ("model_type", "gemma", "model_type"),
    ("layer_types", ["full_attention", "chunked_attention"], "layer_types[1]"),
])
def test_unsupported_config_fields_are_named(field, value, message, tmp_path):
    model = random_llama(**LLAMA_CONFIGS["mha_untied"])
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    r = subprocess.run([TOOL, "logits", tmp_path / "m", tmp_path / "x.json", tmp_path / "o"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_bf16_and_sharded_checkpoints_match_transformers(tmp_path):
    model = random_llama(**LLAMA_CONFIGS["gqa4_tied_theta5e5"]).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "m", max_shard_size="100KB")
    assert (tmp_path / "m" / "model.safetensors.index.json").exists()
    ids = torch.randint(0, 300, (1, 25))
    with torch.no_grad():
        want = model.float()(ids).logits  # the same bf16-rounded weights, in fp32
    assert rel_err(subq_logits(tmp_path / "m", ids, tmp_path), want) < 1e-4


BASE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=120, rms_norm_eps=1e-6, rope_theta=10000.0,
            max_position_embeddings=4096, tie_word_embeddings=False, model_type="llama",
            hidden_act="silu")
LORA = {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj", "o_proj", "down_proj"]}
MECHANISMS = {
    "softmax": [{"mechanism": "softmax"}],
    "softmax_window": [{"mechanism": "softmax", "window": 7}],
    "linear_hedgehog": [{"mechanism": "linear", "feature_map": "hedgehog", "feature_dim": 8}],
    "linear_scalar_gate": [{"mechanism": "linear", "feature_map": "elu1", "gate": "scalar"}],
    "linear_per_dim_gate": [{"mechanism": "linear", "feature_map": "relu", "gate": "per_dim",
                             "normalize": False}],
    "linear_t2r_taylor": [{"mechanism": "linear", "feature_map": "t2r"},
                          {"mechanism": "linear", "feature_map": "taylor", "rope": False}],
    "hybrid": [{"mechanism": "hybrid", "feature_map": "hedgehog", "window": 5}],
    "hybrid_gated": [{"mechanism": "hybrid", "feature_map": "elu1", "window": 6,
                      "gate": "scalar"}],
    "short_conv": [{"mechanism": "short_conv", "conv_width": 4}],
    "mamba2": [{"mechanism": "mamba2", "state_size": 16, "head_dim": 32, "n_groups": 2}],
    "mixed_with_lora": [{"mechanism": "softmax", "lora": LORA},
                        {"mechanism": "linear", "gate": "scalar", "lora": LORA},
                        {"mechanism": "hybrid", "window": 4},
                        {"mechanism": "short_conv"},
                        {"mechanism": "mamba2", "state_size": 8}],
}


def make_student(tmp_path, layers, seed=1):
    cfg = dict(BASE, num_hidden_layers=len(layers), subq={"version": 1, "layers": layers})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tool("init", tmp_path / "config.json", tmp_path / "model", seed)
    return tmp_path / "model"


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_prefill_then_decode_equals_forward(name, tmp_path):
    model_dir = make_student(tmp_path, MECHANISMS[name])
    ids = torch.randint(0, 120, (2, 40))
    full = subq_logits(model_dir, ids, tmp_path)
    assert torch.isfinite(full).all()
    # 3 prefill chunks (16, 16, 2) then 6 single-token steps.
    split = subq_logits(model_dir, ids, tmp_path, prefill=34, chunk=16)
    assert rel_err(split, full) < 1e-4, name
    # And all of it token by token.
    steps = subq_logits(model_dir, ids, tmp_path, prefill=0, chunk=1)
    assert rel_err(steps, full) < 1e-4, name


def files_of(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("dtype,shard", [("f32", 0), ("bf16", 0), ("f16", 0), ("f32", 60000)])
def test_save_load_save_is_byte_identical(dtype, shard, tmp_path):
    src = make_student(tmp_path, MECHANISMS["mixed_with_lora"])
    tool("resave", src, tmp_path / "a", dtype, shard)
    tool("resave", tmp_path / "a", tmp_path / "b", dtype, shard)
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert a.keys() == b.keys()
    assert (len(a) > 2) == (shard > 0)  # sharded: config, index and several shards
    for name in a:
        assert a[name] == b[name], name


def test_subq_files_load_in_safetensors_and_transformers(tmp_path):
    model = random_llama(**LLAMA_CONFIGS["mqa_odd_sizes"])
    model.save_pretrained(tmp_path / "hf")
    tool("resave", tmp_path / "hf", tmp_path / "subq", "f32", 0)
    ours = load_file(str(tmp_path / "subq" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "subq").eval()
    ids = torch.randint(0, 97, (1, 20))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


# ---- the commands: subq generate and subq info ----

CLI = os.environ.get("SUBQ_CLI", "")


def subq(*args):
    return subprocess.run([CLI, *map(str, args)], capture_output=True)


def byte_level_student(tmp_path, layers):
    # vocab 300 >= the built-in byte-level tokenizer's 258 ids (no tokenizer file in the dir).
    cfg = dict(BASE, vocab_size=300, num_hidden_layers=len(layers), eos_token_id=257,
               subq={"version": 1, "layers": layers})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tool("init", tmp_path / "config.json", tmp_path / "model", 3)
    return tmp_path / "model"


def test_generate_is_deterministic(tmp_path):
    d = byte_level_student(tmp_path, MECHANISMS["mixed_with_lora"])
    greedy = [subq("generate", "--model", d, "--prompt", "Hello, world", "--max-new-tokens", 24,
                   "--temperature", 0, "--ignore-eos") for _ in range(2)]
    for r in greedy:
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"Hello, world")
    assert greedy[0].stdout == greedy[1].stdout
    assert len(greedy[0].stdout) > len(b"Hello, world\n")
    sampled = [subq("generate", "--model", d, "--prompt", "Hi", "--max-new-tokens", 24,
                    "--temperature", 1.0, "--top-k", 0, "--top-p", 1.0, "--seed", seed,
                    "--ignore-eos").stdout for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def one_line_error(r):
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (r.returncode, err)
    assert err.count("\n") == 1 and err.startswith("subq: error: "), err
    return err


def test_generate_on_corrupt_checkpoints_exits_2_with_one_line(tmp_path):
    good = byte_level_student(tmp_path, MECHANISMS["linear_scalar_gate"])
    weights = (good / "model.safetensors").read_bytes()
    config = (good / "config.json").read_text()

    def case(name, files):
        d = tmp_path / name
        d.mkdir()
        for fname, content in files.items():
            (d / fname).write_bytes(content if isinstance(content, bytes) else content.encode())
        return one_line_error(subq("generate", "--model", d, "--prompt", "x",
                                   "--max-new-tokens", 2))

    assert "model.safetensors" in case("truncated", {"config.json": config,
                                                     "model.safetensors": weights[:-100]})
    assert "model.safetensors" in case("short", {"config.json": config,
                                                 "model.safetensors": weights[:5]})
    bad_header = bytearray(weights)
    bad_header[8:12] = b"!!!!"
    assert "model.safetensors" in case("header", {"config.json": config,
                                                  "model.safetensors": bytes(bad_header)})
    assert "config.json" in case("config", {"config.json": config[:-20],
                                            "model.safetensors": weights})
    assert "model.safetensors" in case("no_weights", {"config.json": config})
    # A tensor the config needs is absent: rewrite the file without it.
    tensors = load_file(str(good / "model.safetensors"))
    del tensors["model.norm.weight"]
    from safetensors.torch import save_file
    save_file(tensors, str(tmp_path / "missing.safetensors"))
    err = case("missing", {"config.json": config,
                           "model.safetensors": (tmp_path / "missing.safetensors").read_bytes()})
    assert "model.norm.weight" in err
    # The wrong mechanism for the weights: the config says softmax, the file has gates.
    cfg = json.loads(config)
    cfg["subq"]["layers"] = [{"mechanism": "softmax"}]
    assert "g_proj" in case("unknown", {"config.json": json.dumps(cfg),
                                        "model.safetensors": weights})
    cfg["subq"]["layers"] = [{"mechanism": "linear", "gate": "sometimes"}]
    assert "gate" in case("bad_option", {"config.json": json.dumps(cfg),
                                         "model.safetensors": weights})


def test_info(tmp_path):
    d = byte_level_student(tmp_path, MECHANISMS["mixed_with_lora"])
    r = subq("info", "--model", d, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert [l["mechanism"] for l in info["layers"]] == [
        "softmax", "linear", "hybrid", "short_conv", "mamba2"]
    # Only the softmax layer grows: K and V, 2 kv heads of 16 dims, fp32.
    assert info["cache_bytes_per_token"] == 2 * 2 * 16 * 4
    assert info["fixed_state_bytes_per_sequence"] > 0
    total = sum(v.numel() for v in load_file(str(d / "model.safetensors")).values())
    assert info["parameters"] == total
    text = subq("info", "--model", d)
    assert text.returncode == 0 and b"mamba2" in text.stdout


def test_all_linear_decode_memory_is_constant(tmp_path):
    d = byte_level_student(tmp_path, [{"mechanism": "linear", "gate": "scalar"}] * 2)
    info = json.loads(subq("info", "--model", d, "--json").stdout)
    assert info["cache_bytes_per_token"] == 0
    stats = {}
    for n in (1024, 32768):
        prompt = tmp_path / f"prompt{n}.txt"
        prompt.write_bytes(bytes(32 + (i * 7) % 90 for i in range(n - 1)))  # + BOS = n tokens
        r = subq("generate", "--model", d, "--prompt-file", prompt, "--max-new-tokens", 16,
                 "--temperature", 0, "--ignore-eos", "--stats")
        assert r.returncode == 0, r.stderr
        line = r.stderr.decode().strip().splitlines()[-1]
        assert f"prompt {n} tokens" in line, line
        stats[n] = line
    cache = {n: s.split("cache ")[1].split(";")[0] for n, s in stats.items()}
    assert cache[1024] == cache[32768], stats
    rss = {n: float(s.split("rss ")[1].split(" MiB")[0]) for n, s in stats.items()}
    # The 32K prompt itself (file, bytes, ids) adds well under 2 MiB; states do not grow.
    assert rss[32768] < rss[1024] * 1.1 + 8, stats


def test_greedy_generate_matches_transformers_with_a_bpe_tokenizer(tmp_path):
    """End to end: a tokenizer.json (trained with PyPI tokenizers) and a random LlamaForCausalLM;
    `subq generate --temperature 0` must print what transformers' greedy generate decodes to."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog " * 3,
              "linear attention keeps a fixed state while softmax attention keeps every key",
              "Once upon a time, in 1984, there were 3 little pigs."] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = random_llama(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128,
                         vocab_size=tok.get_vocab_size(), eos_token_id=None, bos_token_id=None)
    d = tmp_path / "m"
    model.save_pretrained(d)
    tok.save(str(d / "tokenizer.json"))
    prompt = "Once upon a time"
    ids = torch.tensor([tok.encode(prompt).ids])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False, min_new_tokens=20,
                             pad_token_id=0)
    want = tok.decode(out[0].tolist())
    r = subq("generate", "--model", d, "--prompt", prompt, "--max-new-tokens", 20,
             "--temperature", 0, "--ignore-eos")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == want + "\n"


# ---- loading that cannot be abused: every bad size is one line and exit 2, before allocating ----

def one_line_exit_2(r):
    err = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    assert r.returncode == 2, (r.returncode, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subq: error: "), err[-2000:]
    return lines[0]


def tiny_safetensors(path):
    from safetensors.torch import save_file
    save_file({"model.norm.weight": torch.ones(4)}, str(path))


@pytest.mark.parametrize("sizes,message", [
    (dict(hidden_size=2**31 - 1), "the checkpoint holds 1 tensors"),
    (dict(vocab_size=2**31 - 1), "the checkpoint holds 1 tensors"),
    (dict(num_hidden_layers=10**6), "num_hidden_layers: expected at most 65536"),
    (dict(num_hidden_layers=60000), "at least 300002 tensors"),
    (dict(intermediate_size=2**40), "intermediate_size: expected a positive integer below 2^31"),
])
def test_absurd_config_sizes_are_refused_before_allocating(tmp_path, sizes, message):
    cfg = dict(hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
               vocab_size=4, **{})
    cfg.update(sizes)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    tiny_safetensors(tmp_path / "model.safetensors")
    assert len((tmp_path / "config.json").read_bytes()) < 1024
    # The messages come from checks that run before the model is built (nothing of that size is
    # allocated: the model would take from 16 GB to 64 PB).
    assert message in one_line_exit_2(subq("info", "--model", tmp_path))


def test_absurd_counts_are_refused(tmp_path):
    d = byte_level_student(tmp_path, MECHANISMS["softmax"])
    line = one_line_exit_2(subq("generate", "--model", d, "--prompt", "x", "--max-new-tokens",
                                10**12, "--temperature", 0))
    assert "GiB of memory is available" in line
    line = one_line_exit_2(subq("generate", "--model", d, "--prompt", "x", "--max-new-tokens",
                                2**62))
    assert "max_new_tokens: expected at most 2^40" in line
    assert "--threads" in one_line_exit_2(
        subq("generate", "--model", d, "--prompt", "x", "--threads", 10**6))
    assert "--threads" in one_line_exit_2(subq("check", "--threads", 10**6))
    assert "--threads" in one_line_exit_2(subq("bench", "flash", "--threads", "1,4294967297"))
    env = dict(os.environ, SUBQ_NUM_THREADS="99999999999")
    r = subprocess.run([CLI, "bench", "peak"], capture_output=True, env=env)
    assert "SUBQ_NUM_THREADS" in one_line_exit_2(r)


def test_deeply_nested_tokenizer_json_is_refused(tmp_path):
    d = byte_level_student(tmp_path, MECHANISMS["softmax"])
    (d / "tokenizer.json").write_text("[" * 200000 + "]" * 200000)
    line = one_line_exit_2(subq("generate", "--model", d, "--prompt", "x"))
    assert "tokenizer.json" in line and "nested deeper than 64" in line


def test_peak_rss_is_this_process_not_its_parent(tmp_path):
    """--stats reports VmHWM: a parent of 1.5 GB must not show up as subq's peak (getrusage's
    ru_maxrss survives fork and exec, so it reports at least the parent's size)."""
    d = byte_level_student(tmp_path, MECHANISMS["softmax"])
    ballast = bytearray(1536 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    r = subq("generate", "--model", d, "--prompt", "x", "--max-new-tokens", 4, "--stats")
    del ballast
    assert r.returncode == 0, r.stderr
    peak = float(r.stderr.decode().rsplit("peak rss ", 1)[1].split(" MiB")[0])
    assert 0 < peak < 1024, r.stderr
