#!/usr/bin/env bash
# Fuzzes the checkpoint parsers (safetensors files, config.json, GGUF files) with libFuzzer, ASan and UBSan.
#
#   scripts/fuzz.sh [seconds]     each fuzzer runs this long (default 60); non-zero exit on a crash
#
# Builds only the fuzz targets (and what they link: subq_base and subq_formats, not the
# kernels) with clang in build-fuzz/, seeds each corpus with a few valid files, and keeps the
# corpus between runs. A crash leaves its input in build-fuzz/artifacts/; reproduce it with
#   build-fuzz/formats/fuzz_safetensors build-fuzz/artifacts/crash-...
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/.."
build=build-fuzz

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSUBQ_FUZZ=ON -DSUBQ_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target fuzz_safetensors fuzz_hf_config fuzz_gguf

corpus=$build/corpus
mkdir -p "$corpus/safetensors" "$corpus/hf_config" "$corpus/gguf" "$build/artifacts"

# A safetensors file: the 8-byte little-endian header length, the header, then the data.
safetensors_seed() {  # name header data_bytes
  local name=$1 header=$2 bytes=$3 n i hex=""
  n=${#header}
  for i in 0 1 2 3 4 5 6 7; do hex+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255))); done
  { printf "$hex"; printf '%s' "$header"; head -c "$bytes" /dev/urandom; } \
    >"$corpus/safetensors/seed_$name"
}
safetensors_seed empty '{}      ' 0
safetensors_seed one '{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' 16
safetensors_seed mixed '{"__metadata__":{"format":"pt"},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"c":{"dtype":"I32","shape":[],"data_offsets":[14,18]},"d":{"dtype":"F16","shape":[0,4],"data_offsets":[18,18]}}' 18
safetensors_seed llama '{"model.norm.weight":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},"lm_head.weight":{"dtype":"F16","shape":[2,4],"data_offsets":[8,24]},"model.embed_tokens.weight":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}}' 32

cat >"$corpus/hf_config/seed_transformers5.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1,
 "dtype": "bfloat16", "eos_token_id": [2, 3], "head_dim": 16, "hidden_act": "silu",
 "hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 128, "mlp_bias": false,
 "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
 "num_key_value_heads": 2, "pad_token_id": null, "rms_norm_eps": 1e-06,
 "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
 "tie_word_embeddings": true, "vocab_size": 100}
JSON
cat >"$corpus/hf_config/seed_subq.json" <<'JSON'
{"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
 "vocab_size": 50, "torch_dtype": "float32", "rope_theta": 500000, "rope_scaling": null,
 "subq": {"version": 1, "layers": [{"mechanism": "softmax"},
   {"mechanism": "hybrid", "window": 64, "feature_map": "hedgehog"},
   {"mechanism": "linear", "options": {"normalize": true}}]}}
JSON

# GGUF seeds from PyPI's gguf writer (the project virtualenv, scripts/setup.sh).
.venv/bin/python tests/fuzz/gguf_seeds.py "$corpus/gguf"

# Tokens of the formats, so mutations produce plausible keys and values.
dict=$build/checkpoint.dict
cat >"$dict" <<'DICT'
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"BF16\""
"\"F16\""
"\"F64\""
"\"I32\""
"\"I64\""
"\"U8\""
"\"hidden_size\""
"\"num_hidden_layers\""
"\"num_attention_heads\""
"\"num_key_value_heads\""
"\"head_dim\""
"\"intermediate_size\""
"\"vocab_size\""
"\"rope_parameters\""
"\"rope_scaling\""
"\"rope_theta\""
"\"rope_type\""
"\"default\""
"\"tie_word_embeddings\""
"\"eos_token_id\""
"\"subq\""
"GGUF"
"general.architecture"
"general.alignment"
"llama.block_count"
"llama.embedding_length"
"llama.attention.head_count"
"tokenizer.ggml.model"
"tokenizer.ggml.tokens"
"tokenizer.ggml.merges"
"tokenizer.ggml.pre"
"gpt2"
"smollm"
"\"layers\""
"\"mechanism\""
"\"version\""
"\"softmax\""
"\"linear\""
"\\u0000"
"18446744073709551615"
"9223372036854775807"
"-1"
"1e308"
DICT

status=0
for target in safetensors hf_config gguf; do
  echo "fuzz_$target: $seconds s"
  log=$build/fuzz_$target.log
  # The fuzzer's own exit status decides (a crash, a leak, an out-of-memory or a timeout is
  # non-zero); the grep only shortens what is printed.
  "$build/formats/fuzz_$target" "$corpus/$target" -dict="$dict" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/${target}_" >"$log" 2>&1 || status=1
  grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|Test unit written|^==" \
    "$log" || true
done
if [ "$status" -ne 0 ]; then
  echo "fuzz: a fuzzer found a crash; inputs are in $build/artifacts/"
else
  echo "fuzz: no crashes"
fi
exit "$status"
