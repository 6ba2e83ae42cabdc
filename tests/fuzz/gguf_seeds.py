"""Writes seed files for fuzz_gguf (scripts/fuzz.sh) with PyPI's gguf writer: a tiny llama with a
gpt2 tokenizer and one tensor of each quant type, and a file of metadata only.

Usage: python gguf_seeds.py OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np
import gguf

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
Q = gguf.GGMLQuantizationType
rng = np.random.default_rng(0)

w = gguf.GGUFWriter(str(out / "seed_llama.gguf"), "llama")
w.add_block_count(1)
w.add_embedding_length(32)
w.add_feed_forward_length(32)
w.add_head_count(2)
w.add_head_count_kv(1)
w.add_context_length(64)
w.add_rope_freq_base(1e4)
w.add_layer_norm_rms_eps(1e-5)
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("smollm")
w.add_token_list(["<s>", "a", "b", "ab", "1", "\u0120"])
w.add_token_types([3, 1, 1, 1, 1, 1])
w.add_token_merges(["a b"])
w.add_bos_token_id(0)
w.add_eos_token_id(0)
w.add_tensor("token_embd.weight", rng.standard_normal((6, 32)).astype(np.float32))
w.add_tensor("output_norm.weight", np.ones(32, np.float32))
for qtype in [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]:
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    w.add_tensor(f"q.{qtype.name}", rng.integers(0, 256, (2, nbytes), dtype=np.uint8),
                 raw_dtype=qtype)
for qtype in [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    w.add_tensor(f"q.{qtype.name}", rng.integers(0, 256, (1, nbytes), dtype=np.uint8),
                 raw_dtype=qtype)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

m = gguf.GGUFWriter(str(out / "seed_metadata.gguf"), "llama")
m.add_array("test.nested", [[1, 2], [3]])
m.add_string("test.s", "x")
m.add_float64("test.f", 1.5)
m.add_bool("test.b", True)
m.write_header_to_file()
m.write_kv_data_to_file()
m.close()
