#include "formats/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <regex>
#include <set>

#include "formats/atomic_file.h"
#include "formats/gguf_llama.h"
#include "formats/strict_json.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

CheckpointTensor safetensors_tensor(std::shared_ptr<const SafetensorsFile> file,
                                    const SafetensorsEntry& e) {
  CheckpointTensor t;
  t.file = std::move(file);
  t.entry = &e;
  return t;
}

// An index may only name files inside its directory: a shard name is a plain file name.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find("..") == std::string::npos &&
         name.find('\0') == std::string::npos && name != ".";
}

// The weight_map of an index file, validated: tensor name -> shard file name.
std::map<std::string, std::string> parse_weight_map(const fs::path& index_path) {
  const std::string source = index_path.string();
  const json root = parse_json_strict(read_file(index_path), source);
  SUBQ_CHECK(root.is_object(), source, ": expected a JSON object with a weight_map, got ",
             json_type_name(root));
  if (root.contains("metadata")) {
    const json& m = root["metadata"];
    SUBQ_CHECK(m.is_object(), source, ": metadata: expected an object, got ", json_type_name(m));
    if (m.contains("total_size"))
      SUBQ_CHECK(m["total_size"].is_number_unsigned(), source,
                 ": metadata.total_size: expected a non-negative integer, got ",
                 json_excerpt(m["total_size"]));
  }
  SUBQ_CHECK(root.contains("weight_map") && root["weight_map"].is_object(), source,
             ": weight_map: expected an object {tensor name: shard file name}");
  std::map<std::string, std::string> map;
  for (const auto& [tensor, shard] : root["weight_map"].items()) {
    SUBQ_CHECK(shard.is_string(), source, ": weight_map: tensor '", tensor,
               "': expected a shard file name, got ", json_excerpt(shard));
    const std::string name = shard.get<std::string>();
    SUBQ_CHECK(is_plain_file_name(name), source, ": weight_map: tensor '", tensor, "': shard \"",
               name, "\" is not a plain file name in the checkpoint directory (no '/' or '..')");
    map.emplace(tensor, name);
  }
  SUBQ_CHECK(!map.empty(), source, ": weight_map is empty");
  return map;
}

CheckpointTensors load_sharded(const fs::path& dir, const fs::path& index_path) {
  const std::string index_name = index_path.string();
  const std::map<std::string, std::string> weight_map = parse_weight_map(index_path);
  std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards;
  for (const auto& [tensor, shard] : weight_map) {
    if (shards.count(shard)) continue;
    const fs::path path = dir / shard;
    std::error_code ec;
    SUBQ_CHECK(fs::is_regular_file(path, ec), index_name, ": shard ", shard, " (of tensor '",
               tensor, "') does not exist in ", dir.string());
    shards.emplace(shard, SafetensorsFile::open(path));
  }
  CheckpointTensors out;
  out.dir = dir;
  // Every tensor of every shard must be where the index says; a tensor in two shards is
  // ambiguous (which copy would a reader take?).
  for (const auto& [shard_name, file] : shards) {
    for (const SafetensorsEntry& e : file->tensors()) {
      auto mapped = weight_map.find(e.name);
      SUBQ_CHECK(mapped != weight_map.end(), file->path().string(), ": tensor '", e.name,
                 "' is not in the weight_map of ", index_name);
      auto [it, inserted] = out.tensors.emplace(e.name, safetensors_tensor(file, e));
      SUBQ_CHECK(inserted, index_name, ": tensor '", e.name,
                 "' is in two shards: ", it->second.source().filename().string(), " and ",
                 shard_name);
      SUBQ_CHECK(mapped->second == shard_name, file->path().string(), ": tensor '", e.name,
                 "' is in this shard, but ", index_name, " maps it to ", mapped->second);
    }
  }
  for (const auto& [tensor, shard] : weight_map)
    SUBQ_CHECK(out.tensors.count(tensor), index_name, ": tensor '", tensor, "' is mapped to ",
               shard, ", which does not contain it");
  return out;
}

std::string dtype_config_name(DType dt) {
  switch (dt) {
    case DType::kF32:
      return "float32";
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
    default:
      throw Error(detail::concat("save_checkpoint: dtype: expected f32, bf16 or f16, got ",
                                 dtype_name(dt)));
  }
}

// Weights files this function may own: the single file, the index, and transformers' shard names.
bool is_weights_file(const std::string& name) {
  static const std::regex shard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return name == kSingleWeightsFile || name == kWeightsIndexFile || std::regex_match(name, shard);
}

void remove_stale_weights(const fs::path& dir, const std::set<std::string>& keep) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (is_weights_file(name) && !keep.count(name)) {
      std::error_code ec;
      fs::remove(entry.path(), ec);
      SUBQ_CHECK(!ec, entry.path().string(), ": cannot remove stale weights file: ", ec.message());
    }
  }
}

}  // namespace

std::string CheckpointTensor::stored_type() const {
  if (is_gguf()) return std::string(gguf_tensor->type_name);
  return std::string(safetensors_dtype_name(entry->dtype));
}

TensorView CheckpointTensor::view() const {
  SUBQ_CHECK(!is_gguf(), gguf->path().string(), ": tensor '", gguf_tensor->name,
             "': GGUF tensors have no view (they are dequantized by to_f32)");
  return file->view(entry->name);
}

Tensor CheckpointTensor::to_f32() const {
  if (!is_gguf()) return file->to_f32(entry->name);
  Tensor t = gguf->to_f32(*gguf_tensor);
  if (gguf_rope_heads > 0) gguf_unpermute_rope_rows(t, gguf_rope_heads);
  return t;
}

const CheckpointTensor& CheckpointTensors::at(std::string_view name) const {
  auto it = tensors.find(std::string(name));
  SUBQ_CHECK(it != tensors.end(), dir.string(), ": no tensor '", name, "'");
  return it->second;
}

CheckpointTensors load_checkpoint_tensors(const fs::path& dir) {
  std::error_code ec;
  SUBQ_CHECK(fs::is_directory(dir, ec), dir.string(), ": not a checkpoint directory");
  const fs::path single = dir / kSingleWeightsFile, index = dir / kWeightsIndexFile;
  const bool has_single = fs::exists(single, ec), has_index = fs::exists(index, ec);
  // transformers would take model.safetensors; a directory with both is more likely a save that
  // was interrupted, so say so rather than guess.
  SUBQ_CHECK(!(has_single && has_index), dir.string(), ": both ", kSingleWeightsFile, " and ",
             kWeightsIndexFile, " exist; remove the stale one");
  SUBQ_CHECK(has_single || has_index, dir.string(), ": no weights: expected ", kSingleWeightsFile,
             " or ", kWeightsIndexFile);
  if (has_index) return load_sharded(dir, index);
  CheckpointTensors out;
  out.dir = dir;
  auto file = SafetensorsFile::open(single);
  for (const SafetensorsEntry& e : file->tensors())
    out.tensors.emplace(e.name, safetensors_tensor(file, e));
  return out;
}

Checkpoint load_checkpoint(const fs::path& dir) {
  std::error_code ec;
  if (is_gguf_path(dir)) return load_gguf_checkpoint(dir);
  SUBQ_CHECK(fs::is_directory(dir, ec), dir.string(), ": not a checkpoint directory");
  const fs::path config_path = dir / kConfigFile;
  SUBQ_CHECK(fs::exists(config_path, ec), dir.string(), ": no ", kConfigFile);
  Checkpoint c;
  c.config = load_llama_config(config_path);
  static_cast<CheckpointTensors&>(c) = load_checkpoint_tensors(dir);
  return c;
}

ExpectedTensors llama_expected_tensors(const LlamaConfig& c) {
  validate_llama_config(c);
  const int64_t hidden = c.hidden_size, q_out = c.num_attention_heads * c.head_dim,
                kv_out = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
  ExpectedTensors t;
  t["model.embed_tokens.weight"] = {{c.vocab_size, hidden}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = {{hidden}};
    t[p + "self_attn.q_proj.weight"] = {{q_out, hidden}};
    t[p + "self_attn.k_proj.weight"] = {{kv_out, hidden}};
    t[p + "self_attn.v_proj.weight"] = {{kv_out, hidden}};
    t[p + "self_attn.o_proj.weight"] = {{hidden, q_out}};
    if (c.attention_qkv_bias) {
      t[p + "self_attn.q_proj.bias"] = {{q_out}};
      t[p + "self_attn.k_proj.bias"] = {{kv_out}};
      t[p + "self_attn.v_proj.bias"] = {{kv_out}};
    }
    if (c.attention_o_bias) t[p + "self_attn.o_proj.bias"] = {{hidden}};
    if (c.qk_norm) {
      t[p + "self_attn.q_norm.weight"] = {{c.head_dim}};
      t[p + "self_attn.k_norm.weight"] = {{c.head_dim}};
    }
    t[p + "post_attention_layernorm.weight"] = {{hidden}};
    t[p + "mlp.gate_proj.weight"] = {{inter, hidden}};
    t[p + "mlp.up_proj.weight"] = {{inter, hidden}};
    t[p + "mlp.down_proj.weight"] = {{hidden, inter}};
    if (c.mlp_bias) {
      t[p + "mlp.gate_proj.bias"] = {{inter}};
      t[p + "mlp.up_proj.bias"] = {{inter}};
      t[p + "mlp.down_proj.bias"] = {{hidden}};
    }
  }
  t["model.norm.weight"] = {{hidden}};
  t["lm_head.weight"] = {{c.vocab_size, hidden}, /*optional=*/c.tie_word_embeddings};
  return t;
}

bool llama_lm_head_is_tied(const CheckpointTensors& ckpt, const LlamaConfig& config) {
  if (!config.tie_word_embeddings) return false;
  auto head = ckpt.tensors.find("lm_head.weight");
  if (head == ckpt.tensors.end()) return true;
  const CheckpointTensor& embed = ckpt.at("model.embed_tokens.weight");
  if (head->second.shape() != embed.shape()) return false;
  if (!head->second.is_gguf() && !embed.is_gguf() && head->second.dtype() == embed.dtype())
    return std::memcmp(head->second.file->data(*head->second.entry), embed.file->data(*embed.entry),
                       embed.entry->nbytes()) == 0;
  const Tensor a = head->second.to_f32(), b = embed.to_f32();
  return std::equal(a.data_as<float>(), a.data_as<float>() + a.numel(), b.data_as<float>());
}

void validate_checkpoint_tensors(const CheckpointTensors& ckpt, const ExpectedTensors& expected,
                                 bool allow_unknown) {
  std::vector<std::string> problems;
  for (const auto& [name, want] : expected) {
    auto it = ckpt.tensors.find(name);
    if (it == ckpt.tensors.end()) {
      if (!want.optional) problems.push_back("missing tensor '" + name + "'");
      continue;
    }
    const CheckpointTensor& t = it->second;
    const std::string file = t.source().filename().string();
    if (t.shape() != want.shape)
      problems.push_back(detail::concat("tensor '", name, "' in ", file, " has shape ",
                                        shape_text(t.shape()), ", expected ",
                                        shape_text(want.shape)));
    if (!is_float(t.dtype()))
      problems.push_back(detail::concat("tensor '", name, "' in ", file, " has dtype ",
                                        t.stored_type(), ", expected a float dtype"));
  }
  for (const auto& [name, t] : ckpt.tensors)
    if (!allow_unknown && !expected.count(name))
      problems.push_back(
          detail::concat("unknown tensor '", name, "' in ", t.source().filename().string()));
  if (problems.empty()) return;
  // All of them at once: a wrong config shows as a pattern (every q_proj off by the same factor).
  constexpr size_t kShown = 20;
  std::string message = detail::concat(ckpt.dir.string(), ": checkpoint does not match the model (",
                                       problems.size(), " problems): ");
  for (size_t i = 0; i < std::min(problems.size(), kShown); ++i)
    message += (i ? "; " : "") + problems[i];
  if (problems.size() > kShown)
    message += detail::concat("; and ", problems.size() - kShown, " more");
  throw Error(message);
}

std::string shard_file_name(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index, count);
  return buf;
}

std::vector<TensorToSave> tensors_to_save(const CheckpointTensors& ckpt) {
  std::vector<TensorToSave> out;
  for (const auto& [name, t] : ckpt.tensors) {
    SUBQ_CHECK(!t.is_gguf(), t.source().string(),
               ": a GGUF checkpoint is saved through its model (save_model), not copied");
    out.push_back({name, t.dtype(), t.shape(), t.file->data(*t.entry)});
  }
  return out;
}

void save_checkpoint(const fs::path& dir, const LlamaConfig& config,
                     const std::vector<TensorToSave>& tensors,
                     const CheckpointSaveOptions& options) {
  LlamaConfig to_write = config;
  to_write.dtype = dtype_config_name(options.dtype);
  std::error_code ec;
  fs::create_directories(dir, ec);
  SUBQ_CHECK(fs::is_directory(dir, ec), dir.string(), ": cannot create the checkpoint directory");

  SafetensorsWriteOptions write;
  write.float_dtype = options.dtype;
  write.metadata = {{"format", "pt"}};  // transformers refuses safetensors files without it

  std::vector<const TensorToSave*> by_name;
  for (const TensorToSave& t : tensors) by_name.push_back(&t);
  std::sort(by_name.begin(), by_name.end(), [](auto* a, auto* b) { return a->name < b->name; });
  for (size_t i = 1; i < by_name.size(); ++i)
    SUBQ_CHECK(by_name[i - 1]->name != by_name[i]->name, dir.string(), ": tensor '",
               by_name[i]->name, "' given twice");

  // Greedy in name order, as transformers fills shards: a tensor that does not fit starts a new
  // shard (a tensor larger than the limit gets a shard of its own).
  std::vector<std::vector<TensorToSave>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0, total_numel = 0;
  for (const TensorToSave* t : by_name) {
    const uint64_t n = stored_nbytes(*t, write);
    if (options.max_shard_bytes > 0 && !shards.back().empty() &&
        shard_bytes + n > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(*t);
    shard_bytes += n;
    total_bytes += n;
    uint64_t numel = 1;
    for (int64_t d : t->shape) numel *= static_cast<uint64_t>(d);
    total_numel += numel;
  }

  save_llama_config(dir / kConfigFile, to_write);
  if (options.max_shard_bytes == 0) {
    save_safetensors(dir / kSingleWeightsFile, tensors, write);
    remove_stale_weights(dir, {kSingleWeightsFile});
    return;
  }
  const int count = static_cast<int>(shards.size());
  json weight_map = json::object();
  std::set<std::string> written = {kWeightsIndexFile};
  for (int i = 0; i < count; ++i) {
    const std::string name = shard_file_name(i + 1, count);
    save_safetensors(dir / name, shards[i], write);
    written.insert(name);
    for (const TensorToSave& t : shards[i]) weight_map[t.name] = name;
  }
  // A stale model.safetensors next to the new index would make the directory ambiguous; it goes
  // before the index appears, so no moment shows the new index beside the old single file.
  fs::remove(dir / kSingleWeightsFile, ec);
  const json index = {
      {"metadata", {{"total_size", total_bytes}, {"total_parameters", total_numel}}},
      {"weight_map", weight_map}};
  write_file_atomically(dir / kWeightsIndexFile, index.dump(2) + "\n");
  remove_stale_weights(dir, written);
}

}  // namespace subq::formats
