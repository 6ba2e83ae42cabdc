// The test driver behind tests/python/test_model.py: runs the decoder model on files the Python
// side prepares, and writes results as safetensors (read back with PyPI's safetensors).
//
//   model_tool init CONFIG.json OUT_DIR SEED     a model of that config, random weights
//                                                (LoRA B and gates too, so they matter)
//   model_tool logits DIR IDS.json OUT.safetensors [PREFILL CHUNK]
//        IDS.json: [[ids of sequence 0], ...] (equal lengths). Without PREFILL: one forward.
//        With it: the first PREFILL tokens through the cache in chunks of CHUNK, then one
//        token at a time. Writes "logits" f32 [B, T, vocab].
//   model_tool resave DIR OUT_DIR DTYPE SHARD_BYTES   load, then save (f32 | bf16 | f16)
// SUBQ_MODEL_TOOL_WEIGHTS=bf16 makes `logits` keep the weight matrices in bf16
// (DecoderModelImpl::set_weights_dtype).
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "model/decoder.h"
#include "subq/error.h"

using namespace subq;
using namespace subq::model;
using namespace subq::formats;

namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  SUBQ_CHECK(f, "cannot open ", path);
  return nlohmann::json::parse(f);
}

int init(const std::string& config_path, const std::string& out, uint64_t seed) {
  torch::manual_seed(seed);
  const LlamaConfig config = formats::load_llama_config(config_path);
  DecoderModel model(config);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    // Zero-initialised LoRA B and small gates would hide bugs: give them weight.
    if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.02);
    if (p.key().find("window_factor") != std::string::npos) p.value().normal_(0, 1);
  }
  save_model(*model, out);
  return 0;
}

int logits(const std::string& dir, const std::string& ids_path, const std::string& out,
           int64_t prefill, int64_t chunk) {
  DecoderModel model = load_model(dir);
  if (const char* w = std::getenv("SUBQ_MODEL_TOOL_WEIGHTS"); w && std::string(w) == "bf16")
    model->set_weights_dtype(torch::kBFloat16);
  torch::NoGradGuard no_grad;
  const auto j = read_json(ids_path);
  std::vector<std::vector<int64_t>> rows = j.get<std::vector<std::vector<int64_t>>>();
  const int64_t B = static_cast<int64_t>(rows.size()), T = static_cast<int64_t>(rows[0].size());
  at::Tensor ids = torch::empty({B, T}, torch::kInt64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) ids[b][t] = rows[b][t];
  at::Tensor result;
  if (prefill < 0) {
    result = model->forward(ids);
  } else {
    ModelCache cache = model->new_cache(B, T, std::max<int64_t>(chunk, 1));
    std::vector<at::Tensor> parts;
    for (int64_t t = 0; t < prefill; t += chunk)
      parts.push_back(model->forward(ids.narrow(1, t, std::min(chunk, prefill - t)), &cache));
    for (int64_t t = prefill; t < T; ++t)
      parts.push_back(model->forward(ids.narrow(1, t, 1), &cache));
    result = torch::cat(parts, 1);
  }
  result = result.contiguous();
  save_safetensors(out, {{"logits", DType::kF32, result.sizes().vec(), result.data_ptr()}});
  return 0;
}

int resave(const std::string& dir, const std::string& out, const std::string& dtype,
           uint64_t shard_bytes) {
  DecoderModel model = load_model(dir);
  save_model(*model, out, dtype_from_name(dtype), shard_bytes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> a(argv + 1, argv + argc);
    if (a.size() == 4 && a[0] == "init") return init(a[1], a[2], std::stoull(a[3]));
    if ((a.size() == 4 || a.size() == 6) && a[0] == "logits")
      return logits(a[1], a[2], a[3], a.size() == 6 ? std::stoll(a[4]) : -1,
                    a.size() == 6 ? std::stoll(a[5]) : 0);
    if (a.size() == 5 && a[0] == "resave") return resave(a[1], a[2], a[3], std::stoull(a[4]));
    std::cerr << "usage: model_tool init|logits|resave ... (see the source)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "model_tool: " << e.what() << "\n";
    return 1;
  }
}
