// config.json of a LLaMA-style checkpoint (transformers' LlamaConfig), plus subq's own section
// saying which attention mechanism each layer uses.
//
// Parsing keeps every field of the file: fields subq does not use (architectures, pad_token_id,
// initializer_range, ...) are written back unchanged, so that load -> save keeps the file
// readable by transformers. docs/checkpoints.md lists the rules.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace subq::formats {

// The mechanisms a layer may use; the model checks each one's options when it builds the layer.
inline constexpr std::string_view kLayerMechanisms[] = {"softmax", "linear", "hybrid", "short_conv",
                                                        "mamba2"};

// One entry of config.json's "subq": {"version": 1, "layers": [...]}.
struct LayerSpec {
  std::string mechanism = "softmax";
  nlohmann::json options = nlohmann::json::object();  // the entry minus "mechanism"
  bool operator==(const LayerSpec&) const = default;
};

// Rotary embeddings: transformers' rope_parameters (rope_scaling before transformers 5) for the
// types subq implements. The inverse frequencies follow modeling_rope_utils.py exactly.
struct RopeParameters {
  std::string type = "default";  // default | linear | llama3 | yarn
  double factor = 1.0;           // linear, llama3, yarn
  double low_freq_factor = 1.0;  // llama3
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;  // llama3, yarn (default: max_position_embeddings)
  double beta_fast = 32.0;                       // yarn
  double beta_slow = 1.0;
  std::optional<double> attention_factor, mscale, mscale_all_dim;
  bool truncate = true;
  bool operator==(const RopeParameters&) const = default;
};

// The decoder families that load: LLaMA (Llama 2, 3.x), Mistral, Qwen2 (Qwen2.5) and Qwen3. They
// differ only in the fields below, all of them off for plain LLaMA.
inline constexpr std::string_view kModelTypes[] = {"llama", "mistral", "qwen2", "qwen3"};

// More layers than this is a corrupt file (the deepest published decoders have a few hundred).
inline constexpr int64_t kMaxLayers = 65536;

struct LlamaConfig {
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;  // transformers' LlamaConfig defaults
  double rope_theta = 10000.0;
  RopeParameters rope;
  std::string model_type = "llama";  // one of kModelTypes
  bool attention_qkv_bias = false;   // q, k, v biases (llama, qwen3: attention_bias; qwen2: on)
  bool attention_o_bias = false;     // o bias (llama, qwen3: attention_bias)
  bool mlp_bias = false;             // gate, up, down biases (llama: mlp_bias)
  bool qk_norm = false;              // qwen3: RMSNorm over each head of q and k, before RoPE
  // One per layer, or empty: 0 = full causal attention, w = a sliding window of w keys (self
  // included), from Mistral's sliding_window or Qwen's use_sliding_window + layer_types.
  std::vector<int64_t> attention_windows;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id": int, list of ints or null
  std::string dtype;                   // "dtype" (transformers 5) or "torch_dtype"; "" if absent
  std::vector<LayerSpec> layers;       // one per layer; all softmax when "subq" is absent
  // The file as read (an object); saving starts from it so that unknown fields survive.
  nlohmann::json fields = nlohmann::json::object();
};

// Parses and validates config.json text. Throws subq::Error "<source>: <field>: <problem>".
LlamaConfig parse_llama_config(std::string_view json_text, std::string_view source = "config.json");
LlamaConfig load_llama_config(const std::filesystem::path& path);

// Validates the typed fields (as parse does), for configs built in code. Throws naming `source`.
void validate_llama_config(const LlamaConfig& config, std::string_view source = "config.json");

// The config as config.json text: `fields` updated with the typed fields, keys sorted, 2-space
// indent, trailing newline. Deterministic: the same config gives the same bytes. The "subq"
// section is written only when some layer is not a plain softmax layer.
std::string llama_config_to_json(const LlamaConfig& config);
// Atomically (model/atomic_file.h).
void save_llama_config(const std::filesystem::path& path, const LlamaConfig& config);

// True when every layer is "softmax" without options (the section can be left out).
bool all_layers_softmax(const LlamaConfig& config);

}  // namespace subq::formats
