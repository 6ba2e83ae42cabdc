#include "cli/bench_model.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <vector>

#include "bench/harness.h"
#include "formats/default_teacher.h"
#include "model/decoder.h"
#include "subq/error.h"
#include "subq/memory.h"
#include "subq/threads.h"
#include "torch/ops.h"

namespace subq::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Exact causal attention's FLOPs over a context of T for one forward: QKᵀ and PV, each
// 2·T²/2·head_dim per head, over every softmax layer.
double attention_flops(const model::DecoderModelImpl& m, int64_t T) {
  const auto& c = m.config();
  int64_t softmax_layers = 0;
  for (const auto& s : m.mixer_specs()) softmax_layers += s.kind == model::MixerKind::kSoftmax;
  return 2.0 * static_cast<double>(T) * static_cast<double>(T) *
         static_cast<double>(c.num_attention_heads * c.head_dim) *
         static_cast<double>(softmax_layers);
}

int64_t weight_bytes(const model::DecoderModelImpl& m) {
  int64_t b = 0;
  for (const auto& p : m.parameters()) b += static_cast<int64_t>(p.nbytes());
  return b;
}

// The GEMM the linear layers run on at the current thread count (chosen on first use).
const char* gemm_name() {
  return torch_ops::gemm_backend_name(torch_ops::linear_gemm_backend());
}

struct Row {
  int64_t length;
  std::string phase;
  int threads;
  double tok_s, ms_per_token, peak_pct, bandwidth_pct, peak_rss_mib;
};

void print(const Row& r, const ModelBenchConfig& c, const std::string& weights, bool& header) {
  if (c.csv) {
    if (!header)
      std::printf(
          "length,phase,threads,weights,tok_s,ms_per_token,peak_pct,bandwidth_pct,"
          "peak_rss_mib,gemm\n");
    std::printf("%lld,%s,%d,%s,%.1f,%.3f,%.1f,%.1f,%.1f,%s\n", static_cast<long long>(r.length),
                r.phase.c_str(), r.threads, weights.c_str(), r.tok_s, r.ms_per_token, r.peak_pct,
                r.bandwidth_pct, r.peak_rss_mib, gemm_name());
  } else {
    std::printf(
        "length %6lld  %-7s  threads %d  %s weights  %9.1f tok/s  %8.3f ms/token  "
        "peak %5.1f%%  bandwidth %5.1f%%  peak rss %.0f MiB  %s GEMM\n",
        static_cast<long long>(r.length), r.phase.c_str(), r.threads, weights.c_str(), r.tok_s,
        r.ms_per_token, r.peak_pct, r.bandwidth_pct, r.peak_rss_mib, gemm_name());
  }
  std::fflush(stdout);
  header = true;
}

}  // namespace

CLI::App* add_model_bench_command(CLI::App& bench, ModelBenchConfig& c) {
  CLI::App* m = bench.add_subcommand(
      "model", "The whole model: prefill, decode and a training step, against peak and bandwidth");
  m->add_option("--model", c.model, "Checkpoint directory or .gguf (default: the default teacher)");
  m->add_option("--lengths", c.lengths, "Context lengths, e.g. 1024,4096")->capture_default_str();
  m->add_option("--phases", c.phases, "prefill,decode,train")->capture_default_str();
  m->add_option("--weights", c.weights,
                "f32, bf16 or f32,bf16 (bf16: weights read as bf16, computed in f32)")
      ->capture_default_str();
  m->add_option("--threads", c.threads, "Thread counts, e.g. 1,2 (default: all cores)");
  m->add_option("--reps", c.reps, "Runs per figure (median)")->capture_default_str();
  m->add_option("--decode-tokens", c.decode_tokens, "Decode steps timed per length")
      ->capture_default_str();
  m->add_flag("--csv", c.csv, "CSV output");
  return m;
}

int run_model_bench(const ModelBenchConfig& c) {
  std::vector<std::string> weight_list;
  {
    std::stringstream ss(c.weights);
    for (std::string w; std::getline(ss, w, ',');) {
      SUBQ_CHECK(w == "f32" || w == "bf16", "--weights: expected f32 and/or bf16, got \"", w, "\"");
      weight_list.push_back(w);
    }
    SUBQ_CHECK(!weight_list.empty(), "--weights: expected f32 and/or bf16");
  }
  SUBQ_CHECK(c.reps >= 1 && c.reps <= 1000, "--reps: expected 1 to 1000, got ", c.reps);
  SUBQ_CHECK(c.decode_tokens >= 1 && c.decode_tokens <= 100000,
             "--decode-tokens: expected 1 to 100000, got ", c.decode_tokens);
  std::vector<int64_t> lengths;
  for (int v : bench::parse_int_list(c.lengths, "--lengths")) {
    SUBQ_CHECK(v >= 1 && v <= (1 << 20), "--lengths: expected 1 to 2^20, got ", v);
    lengths.push_back(v);
  }
  bool do_prefill = false, do_decode = false, do_train = false;
  {
    std::stringstream ss(c.phases);
    for (std::string p; std::getline(ss, p, ',');) {
      SUBQ_CHECK(p == "prefill" || p == "decode" || p == "train",
                 "--phases: expected prefill, decode or train, got \"", p, "\"");
      do_prefill |= p == "prefill";
      do_decode |= p == "decode";
      do_train |= p == "train";
    }
  }
  const std::vector<int> thread_list = bench::thread_counts(c.threads);
  const auto path =
      c.model.empty() ? formats::default_teacher_path() : std::filesystem::path(c.model);
  // One model per weight dtype: bf16 is the f32 weights rounded once.
  std::map<std::string, model::DecoderModel> models;
  for (const std::string& w : weight_list) {
    model::DecoderModel mw = model::load_model(path);
    if (w == "bf16") mw->set_weights_dtype(torch::kBFloat16);
    models.emplace(w, mw);
  }
  // The f32 model also gives the parameter count and runs the training step; loaded apart
  // only when the f32 weights were not asked for and a training step is.
  model::DecoderModel m = models.count("f32") ? models.at("f32")
                          : do_train          ? model::load_model(path)
                                              : models.begin()->second;
  const int64_t params = m->num_parameters();
  const int64_t vocab = m->config().vocab_size;
  bool header = false;
  for (int threads : thread_list) {
    set_num_threads(threads);
    const double peak = bench::peak_gflops(threads);
    const double bandwidth = bench::bandwidth_gbs(threads);
    // The GEMM choice (SUBQ_GEMM=auto times both GEMMs) before anything is timed.
    const char* gemm = gemm_name();
    const torch_ops::GemmChoiceTimes gt = torch_ops::gemm_choice_times();
    if (gt.torch_ms > 0)
      std::fprintf(stderr,
                   "threads %d: linear layers on %s's GEMM (probe: torch %.2f ms, subq %.2f ms)\n",
                   threads, gemm, gt.torch_ms, gt.subq_ms);
    for (int64_t T : lengths) {
      torch::manual_seed(static_cast<uint64_t>(T));
      const at::Tensor ids = torch::randint(0, vocab, {1, T}, torch::kInt64);
      auto prefill = [&](model::DecoderModelImpl& mw, model::ModelCache& cache) {
        for (int64_t s = 0; s < T; s += 1024)
          mw.forward(ids.narrow(1, s, std::min<int64_t>(1024, T - s)), &cache, true);
      };
      {
        torch::NoGradGuard no_grad;  // inference, until the training step
        if (do_prefill)
          for (const std::string& weights : weight_list) {
            model::DecoderModelImpl& mw = *models.at(weights);
            std::vector<double> prefill_s;
            for (int r = 0; r < c.reps; ++r) {
              model::ModelCache cache = mw.new_cache(1, T + 1, 1024);
              const auto t0 = Clock::now();
              prefill(mw, cache);
              prefill_s.push_back(seconds_since(t0));
            }
            const double sec = median(prefill_s);
            const double flops =
                2.0 * static_cast<double>(params) * static_cast<double>(T) + attention_flops(mw, T);
            print({T, "prefill", threads, static_cast<double>(T) / sec,
                   sec * 1e3 / static_cast<double>(T), 100.0 * flops / sec * 1e-9 / peak, 0.0,
                   static_cast<double>(peak_rss_bytes()) / (1 << 20)},
                  c, weights, header);
          }
        if (do_decode) {
          // Decode after a prefill, one token at a time, each step timed. With f32 and bf16 the
          // two models' steps alternate: this machine's bandwidth drifts by tens of per cent
          // within seconds, and alternating steps see the same drift (their ratio is what
          // matters).
          struct Run {
            model::DecoderModelImpl* m;
            model::ModelCache cache;
            at::Tensor next;
            std::vector<double> step_s;
          };
          std::vector<Run> runs;
          for (const std::string& weights : weight_list) {
            model::DecoderModelImpl& mw = *models.at(weights);
            runs.push_back({&mw,
                            mw.new_cache(1, T + c.decode_tokens + 1, 1024),
                            torch::zeros({1, 1}, torch::kInt64),
                            {}});
            prefill(mw, runs.back().cache);
          }
          for (int i = 0; i < c.decode_tokens; ++i)
            for (Run& run : runs) {
              const auto t1 = Clock::now();
              const at::Tensor logits = run.m->forward(run.next, &run.cache);
              run.next = logits.argmax(-1);
              run.step_s.push_back(seconds_since(t1));
            }
          for (size_t wi = 0; wi < runs.size(); ++wi) {
            const Run& run = runs[wi];
            const double ms = median(run.step_s) * 1e3;
            // Bytes per step: every weight once, and the KV cache of the context read once.
            const double bytes = static_cast<double>(weight_bytes(*run.m)) +
                                 static_cast<double>(run.m->cache_cost(1024).bytes_per_token) *
                                     static_cast<double>(T + c.decode_tokens / 2);
            const double bound_ms = bytes / (bandwidth * 1e9) * 1e3;
            print({T, "decode", threads, 1e3 / ms, ms, 0.0, 100.0 * bound_ms / ms,
                   static_cast<double>(peak_rss_bytes()) / (1 << 20)},
                  c, weight_list[wi], header);
          }
        }
      }
      if (do_train) {
        // One step of every parameter: forward, next-token cross-entropy, backward (no
        // optimizer update: that is the training engine's, and memory-bound).
        m->set_weights_dtype(torch::kFloat32);
        m->train();
        for (auto& p : m->parameters()) p.set_requires_grad(true);
        std::vector<double> step_s;
        for (int r = 0; r < c.reps + 1; ++r) {
          m->zero_grad();
          const auto t0 = Clock::now();
          const at::Tensor logits = m->forward(ids);
          const at::Tensor loss = torch::nn::functional::cross_entropy(
              logits.narrow(1, 0, T - 1).reshape({T - 1, vocab}),
              ids.narrow(1, 1, T - 1).reshape({T - 1}));
          loss.backward();
          if (r > 0) step_s.push_back(seconds_since(t0));  // the first run warms up
        }
        const double s = median(step_s);
        const double flops = 6.0 * static_cast<double>(params) * static_cast<double>(T) +
                             3.0 * attention_flops(*m, T);
        print({T, "train", threads, static_cast<double>(T) / s, s * 1e3 / static_cast<double>(T),
               100.0 * flops / s * 1e-9 / peak, 0.0,
               static_cast<double>(peak_rss_bytes()) / (1 << 20)},
              c, "f32", header);
        m->zero_grad();
        for (auto& p : m->parameters()) p.set_requires_grad(false);
        m->eval();
      }
    }
  }
  return 0;
}

}  // namespace subq::cli
