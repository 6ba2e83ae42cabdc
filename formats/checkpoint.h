// Checkpoint directories in the Hugging Face layout:
//   config.json + model.safetensors, or
//   config.json + model.safetensors.index.json + model-00001-of-0000N.safetensors ...
// Loading maps every file and validates the index against the shards; validating against the
// tensors a model expects is a separate step (validate_checkpoint_tensors). Saving writes every
// file atomically, the index last, and is deterministic: save -> load -> save gives the same
// bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "formats/safetensors.h"
#include "subq/tensor.h"

namespace subq::formats {

inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kSingleWeightsFile = "model.safetensors";
inline constexpr const char* kWeightsIndexFile = "model.safetensors.index.json";

// One tensor of a loaded checkpoint: where it lives and what it is. Either a safetensors entry
// (file + entry), or a GGUF tensor (gguf + gguf_tensor), which reads as f32 after dequantizing
// and, for llama.cpp's q and k weights, undoing its rotary row order (gguf_rope_heads > 0).
struct CheckpointTensor {
  std::shared_ptr<const SafetensorsFile> file;  // keeps the mapping alive
  const SafetensorsEntry* entry = nullptr;      // inside *file
  std::shared_ptr<const GgufFile> gguf;
  const GgufTensorInfo* gguf_tensor = nullptr;  // inside *gguf
  int64_t gguf_rope_heads = 0;                  // heads to un-permute (gguf_unpermute_rope_rows)
  std::vector<int64_t> gguf_shape;              // torch order

  bool is_gguf() const { return gguf != nullptr; }
  // The dtype it loads as: the stored one for safetensors, f32 for GGUF (dequantized).
  DType dtype() const { return is_gguf() ? DType::kF32 : entry->dtype; }
  // How it is stored: "F32", "BF16", ... or a ggml type such as "Q4_1".
  std::string stored_type() const;
  const std::vector<int64_t>& shape() const { return is_gguf() ? gguf_shape : entry->shape; }
  const std::filesystem::path& source() const { return is_gguf() ? gguf->path() : file->path(); }
  // A read-only view into the mapping (see SafetensorsFile::view); safetensors only.
  TensorView view() const;
  Tensor to_f32() const;
};

struct CheckpointTensors {
  std::filesystem::path dir;
  std::map<std::string, CheckpointTensor> tensors;
  // Throws "<dir>: no tensor '<name>'".
  const CheckpointTensor& at(std::string_view name) const;
};

struct Checkpoint : CheckpointTensors {
  LlamaConfig config;
};

// The weights of a directory: model.safetensors, or the index and its shards. Throws subq::Error
// naming the file and the problem: no weights file, both a single file and an index, a bad
// index, a shard name that is not a plain file name, a missing or invalid shard, a tensor in a
// shard the index does not map to it, missing from its shard, or in two shards.
CheckpointTensors load_checkpoint_tensors(const std::filesystem::path& dir);
// config.json (parse_llama_config) and the weights; or, for a path ending in .gguf, the GGUF
// file's config and tensors under transformers' names (load_gguf_checkpoint).
Checkpoint load_checkpoint(const std::filesystem::path& dir_or_gguf);

// What a model expects: name -> shape. Optional tensors may be absent; when present, their shape
// is checked as any other.
struct ExpectedTensor {
  std::vector<int64_t> shape;
  bool optional = false;
};
using ExpectedTensors = std::map<std::string, ExpectedTensor>;

// The tensors of transformers' LlamaForCausalLM (or the family's class: biases, q/k norms) for
// this config. With tied embeddings
// save_pretrained leaves lm_head.weight out (it is the embedding); transformers still loads a
// file that has it, so it is optional then (see llama_lm_head_is_tied).
ExpectedTensors llama_expected_tensors(const LlamaConfig& config);

// Whether the output projection is the embedding, as transformers 5.24 decides when it loads:
// tie_word_embeddings and either no lm_head.weight, or one equal to model.embed_tokens.weight.
// A stored lm_head.weight that differs is used as an untied head (transformers warns and does
// not tie), so a model that follows this gives transformers' logits.
bool llama_lm_head_is_tied(const CheckpointTensors& checkpoint, const LlamaConfig& config);

// Throws one subq::Error listing every missing tensor, unknown tensor, shape mismatch and
// non-float dtype, each with the file it was found in.
// With allow_unknown, tensors that `expected` does not name are not problems (a check of a
// subset).
void validate_checkpoint_tensors(const CheckpointTensors& checkpoint,
                                 const ExpectedTensors& expected, bool allow_unknown = false);

struct CheckpointSaveOptions {
  // Storage dtype of float tensors: f32, bf16 or f16.
  DType dtype = DType::kF32;
  // 0: one model.safetensors. Otherwise shards holding at most this many bytes of tensor data
  // each (a larger tensor gets a shard of its own), as transformers' max_shard_size.
  uint64_t max_shard_bytes = 0;
};

// Writes config.json (with its dtype field set to the storage dtype), the weights and, when
// sharded, the index (last). Tensors go to shards in name order. Stale weights files of the
// other layout (model.safetensors, model-*-of-*.safetensors, the index) are removed, so the
// directory holds one checkpoint. Each file is written atomically.
void save_checkpoint(const std::filesystem::path& dir, const LlamaConfig& config,
                     const std::vector<TensorToSave>& tensors,
                     const CheckpointSaveOptions& options = {});

// The tensors of a loaded checkpoint, ready to save (pointers into its mappings). Safetensors
// checkpoints only: a GGUF one is saved through the model (save_model), which dequantizes.
std::vector<TensorToSave> tensors_to_save(const CheckpointTensors& checkpoint);

// "model-00001-of-00003.safetensors" (1-based, as transformers names shards).
std::string shard_file_name(int index, int count);

}  // namespace subq::formats
