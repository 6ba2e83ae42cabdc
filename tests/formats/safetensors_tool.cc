// The C++ side of safetensors_interop.py: reads, writes and checks files with subq's checkpoint
// code and prints what it found as JSON, so that Python can compare it with PyPI's safetensors
// and transformers.
//
//   subq_safetensors_tool dump FILE                 tensors (dtype, shape, raw bytes, f32 values)
//   subq_safetensors_tool rewrite IN OUT [DTYPE]    read IN, write OUT (DTYPE f32|bf16|f16|keep)
//   subq_safetensors_tool check FILE                exit 0 if FILE is valid, 1 with the message
//   subq_safetensors_tool check-llama DIR           load a checkpoint, validate it against
//                                                   llama_expected_tensors, dump its tensors
//   subq_safetensors_tool resave IN_DIR OUT_DIR DTYPE MAX_SHARD_BYTES
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "subq/error.h"

namespace {

using nlohmann::json;
using namespace subq::formats;

std::string hex(const std::byte* p, uint64_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (uint64_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned char>(p[i]);
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

json describe(const SafetensorsFile& file, const SafetensorsEntry& e) {
  json t = {{"dtype", safetensors_dtype_name(e.dtype)},
            {"shape", e.shape},
            {"hex", hex(file.data(e), e.nbytes())}};
  if (subq::is_float(e.dtype) && e.shape.size() <= static_cast<size_t>(subq::kMaxRank)) {
    const subq::Tensor f = file.to_f32(e.name);
    json values = json::array();
    for (int64_t i = 0; i < f.numel(); ++i) {
      const float v = f.data_as<float>()[i];
      // JSON has no NaN or infinity: spell them as Python's float() reads them.
      if (std::isfinite(v)) {
        values.push_back(v);
      } else {
        values.push_back(std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
      }
    }
    t["f32"] = values;
  }
  return t;
}

std::optional<subq::DType> parse_dtype(const std::string& s) {
  if (s == "keep") return std::nullopt;
  return subq::dtype_from_name(s);
}

int run(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "dump" && argc == 3) {
    auto file = SafetensorsFile::open(argv[2]);
    json out = {{"metadata", file->metadata()}, {"tensors", json::object()}};
    for (const auto& e : file->tensors()) out["tensors"][e.name] = describe(*file, e);
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (cmd == "rewrite" && (argc == 4 || argc == 5)) {
    auto file = SafetensorsFile::open(argv[2]);
    std::vector<TensorToSave> tensors;
    for (const auto& e : file->tensors())
      tensors.push_back({e.name, e.dtype, e.shape, file->data(e)});
    SafetensorsWriteOptions options;
    options.float_dtype = parse_dtype(argc == 5 ? argv[4] : "keep");
    options.metadata = file->metadata();
    save_safetensors(argv[3], tensors, options);
    return 0;
  }
  if (cmd == "check" && argc == 3) {
    SafetensorsFile::open(argv[2]);
    return 0;
  }
  if (cmd == "check-llama" && argc == 3) {
    const Checkpoint c = load_checkpoint(argv[2]);
    validate_checkpoint_tensors(c, llama_expected_tensors(c.config));
    json out = {{"tensors", json::object()},
                {"tie_word_embeddings", c.config.tie_word_embeddings},
                {"lm_head_tied", llama_lm_head_is_tied(c, c.config)},
                {"head_dim", c.config.head_dim},
                {"num_key_value_heads", c.config.num_key_value_heads}};
    for (const auto& [name, t] : c.tensors) {
      json d = describe(*t.file, *t.entry);
      d["file"] = t.source().filename().string();
      out["tensors"][name] = d;
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (cmd == "resave" && argc == 6) {
    const Checkpoint c = load_checkpoint(argv[2]);
    CheckpointSaveOptions options;
    options.dtype = subq::dtype_from_name(argv[4]);
    options.max_shard_bytes = std::stoull(argv[5]);
    save_checkpoint(argv[3], c.config, tensors_to_save(c), options);
    return 0;
  }
  std::cerr << "usage: subq_safetensors_tool dump FILE | rewrite IN OUT [f32|bf16|f16|keep] | "
               "check FILE | check-llama DIR | resave IN_DIR OUT_DIR DTYPE MAX_SHARD_BYTES\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const subq::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
