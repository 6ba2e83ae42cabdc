#include "eval/tasks.h"

#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "model/generate.h"
#include "subq/error.h"
#include "subq/memory.h"
#include "subq/random.h"
#include "subq/threads.h"
#include "train/synthetic.h"
#include "train/token_cache.h"

namespace subq::eval {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Bounds of the options: lengths up to 2^20 tokens (a million-token prompt is far past any
// model here, and bounds every allocation below), trials and windows to what a day could run.
constexpr int64_t kMaxLength = int64_t{1} << 20;
constexpr int64_t kMaxCount = 100000;

void check_lengths(const std::vector<int64_t>& lengths, const char* task) {
  SUBQ_CHECK(!lengths.empty(), task, ": --lengths: expected at least one length");
  for (int64_t l : lengths)
    SUBQ_CHECK(l >= 16 && l <= kMaxLength, task, ": --lengths: expected 16 to ", kMaxLength,
               " tokens, got ", l);
}

void check_count(int64_t n, const char* what) {
  SUBQ_CHECK(n >= 1 && n <= kMaxCount, what, ": expected 1 to ", kMaxCount, ", got ", n);
}

// A seed per (task seed, length, trial), so that adding a length or trials leaves the others'
// trials as they were.
uint64_t trial_seed(uint64_t seed, int64_t length, int64_t trial) {
  return seed_for(seed ^ (static_cast<uint64_t>(trial) << 32), static_cast<uint64_t>(length));
}

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600,
                  static_cast<int>(s) / 60 % 60);
  return buf;
}

// Counts a task's units and estimates the time left from the work done so far in this process,
// each unit weighted by its token count (resumed units took no time here and are not counted).
class Progress {
 public:
  Progress(std::string task, const ProgressFn& fn) : task_(std::move(task)), fn_(fn) {}
  void plan(double weight) {
    left_ += weight;
    ++units_;
  }
  void skip(double weight) {
    left_ -= weight;
    ++done_;
  }
  void finish(double weight, const std::string& what, double secs) {
    ++done_;
    ran_ += weight;
    ran_secs_ += secs;
    left_ -= weight;
    if (!fn_) return;
    char buf[96];
    std::snprintf(buf, sizeof buf, " (%.1f s; %lld/%lld, eta %s)", secs,
                  static_cast<long long>(done_), static_cast<long long>(units_),
                  fmt_duration(ran_ > 0 ? ran_secs_ / ran_ * left_ : 0).c_str());
    fn_(task_ + ": " + what + buf);
  }

 private:
  std::string task_;
  const ProgressFn& fn_;
  double left_ = 0, ran_ = 0, ran_secs_ = 0;
  int64_t units_ = 0, done_ = 0;
};

std::string sanitize(std::string s) {
  for (char& c : s)
    if (c == ',' || c == '"' || c == '|' || c == '\n' || c == '\r' || c == ' ') c = '_';
  return s.empty() ? "model" : s;
}

std::vector<int64_t> encode(const formats::Tokenizer& tok, const std::string& text) {
  const std::vector<int32_t> ids = tok.encode(text, /*add_special_tokens=*/true);
  return {ids.begin(), ids.end()};
}

// The ids the answer gets when it follows the prompt after a space: the tail of the prompt +
// answer's ids past the prompt's (a BPE may merge across the seam, in which case the answer is
// tokenized alone).
std::vector<int64_t> answer_ids(const formats::Tokenizer& tok, const std::vector<int64_t>& prompt,
                                const std::string& prompt_text, const std::string& answer) {
  const std::vector<int64_t> full = encode(tok, prompt_text + " " + answer);
  if (full.size() > prompt.size() && std::equal(prompt.begin(), prompt.end(), full.begin()))
    return {full.begin() + static_cast<std::ptrdiff_t>(prompt.size()), full.end()};
  const std::vector<int32_t> alone = tok.encode(" " + answer, /*add_special_tokens=*/false);
  return {alone.begin(), alone.end()};
}

std::vector<int64_t> greedy(EvalModel& m, const std::vector<int64_t>& prompt, int64_t new_tokens,
                            int64_t prefill_chunk) {
  model::GenerateOptions g;
  g.max_new_tokens = new_tokens;
  g.prefill_chunk = prefill_chunk;
  g.sampling.temperature = 0;
  g.sample_vocab = m.tokenizer->vocab_size();
  g.stop_ids = model::default_stop_ids(*m.model, m.tokenizer->eos_id());
  std::vector<int64_t> out;
  model::generate(*m.model, prompt, g, [&](int64_t id) { out.push_back(id); });
  return out;
}

enum class Retrieval { kPasskey, kNiah };

std::vector<Row> run_retrieval(Retrieval kind, std::vector<EvalModel>& models,
                               const RetrievalOptions& o, ResultStore& store,
                               const ProgressFn& progress) {
  const char* task = kind == Retrieval::kPasskey ? "passkey" : "niah";
  check_lengths(o.lengths, task);
  check_count(o.trials, "--trials");
  SUBQ_CHECK(o.digits == 0 || (o.digits >= 1 && o.digits <= 18), task,
             ": --digits: expected 1 to 18 (0: the template's), got ", o.digits);
  SUBQ_CHECK(o.filler.size() <= 4096, task, ": --filler: expected at most 4096 characters");
  // A trial: its prompt for a filler of `chars` characters.
  auto make = [&](uint64_t seed, int64_t chars) {
    if (kind == Retrieval::kPasskey) {
      train::PasskeyOptions p;
      p.filler_chars = chars;
      if (!o.filler.empty()) p.filler = o.filler;
      p.digits = o.digits;
      return train::passkey_trial(p, seed);
    }
    train::NiahOptions n;
    n.filler_chars = chars;
    if (!o.filler.empty()) n.filler = o.filler;
    if (o.digits) n.digits = o.digits;
    return train::niah_trial(n, seed);
  };
  Progress prog(task, progress);
  for (size_t mi = 0; mi < models.size(); ++mi)
    for (int64_t L : o.lengths)
      for (int64_t t = 0; t < o.trials; ++t) prog.plan(static_cast<double>(L));
  std::vector<Row> rows;
  for (EvalModel& m : models) {
    for (int64_t L : o.lengths) {
      double correct = 0;
      for (int64_t t = 0; t < o.trials; ++t) {
        const std::string unit =
            m.name + "|" + task + "|" + std::to_string(L) + "|" + std::to_string(t);
        if (!store.done(unit)) {
          const auto t0 = Clock::now();
          const uint64_t seed = trial_seed(o.seed, L, t);
          const formats::Tokenizer& tok = *m.tokenizer;
          const int64_t chars = train::fit_filler_chars(L, [&](int64_t c) {
            return static_cast<int64_t>(encode(tok, make(seed, c).prompt).size());
          });
          const train::TextTrial trial = make(seed, chars);
          const std::vector<int64_t> prompt = encode(tok, trial.prompt);
          const std::vector<int64_t> answer = answer_ids(tok, prompt, trial.prompt, trial.answer);
          bool ok = false;
          if (kind == Retrieval::kPasskey) {
            const auto out =
                greedy(m, prompt, static_cast<int64_t>(answer.size()), o.prefill_chunk);
            ok = train::passkey_correct(out, answer);
          } else {
            // The value and the words around it: RULER reads up to 128 tokens; the value follows
            // the prompt's last word at once, so twice its tokens and a few more are enough.
            const int64_t n = 2 * static_cast<int64_t>(answer.size()) + 8;
            const auto out = greedy(m, prompt, n, o.prefill_chunk);
            const std::vector<int32_t> out32(out.begin(), out.end());
            ok = train::niah_correct(tok.decode(out32, /*skip_special_tokens=*/true), trial.answer);
          }
          const std::string detail = "trial " + std::to_string(t);
          store.add(unit, {{m.name, task, L, trial.depth, "correct", ok ? 1.0 : 0.0, detail},
                           {m.name, task, L, trial.depth, "prompt_tokens",
                            static_cast<double>(prompt.size()), detail}});
          prog.finish(static_cast<double>(L),
                      m.name + " " + std::to_string(L) + " tokens, trial " + std::to_string(t + 1) +
                          "/" + std::to_string(o.trials) + ": " + (ok ? "correct" : "wrong"),
                      seconds_since(t0));
        } else {
          prog.skip(static_cast<double>(L));
        }
        for (const Row& r : store.rows(unit)) {
          rows.push_back(r);
          if (r.metric == "correct") correct += r.value;
        }
      }
      rows.push_back({m.name, task, L, -1, "accuracy", correct / static_cast<double>(o.trials),
                      std::to_string(o.trials) + " trials"});
    }
  }
  return rows;
}

// Resets this process's peak RSS (VmHWM) to its current RSS (Linux's clear_refs "5"), so that
// each length's peak is its own. Returns false where the kernel does not allow it.
bool reset_peak_rss() {
  // First hand the allocator's free memory back, so that the current RSS the peak restarts from
  // is what is live, not what earlier work (a perplexity window's logits) left in the heap.
  malloc_trim(0);
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  return static_cast<bool>(f.flush());
}

double mib(double bytes) {
  return bytes / (1024.0 * 1024.0);
}

}  // namespace

EvalModel load_eval_model(const fs::path& path, const std::string& weights, bool with_tokenizer) {
  SUBQ_CHECK(weights == "f32" || weights == "bf16", "--weights: expected f32 or bf16, got '",
             weights, "'");
  EvalModel m;
  m.path = path;
  fs::path p = path;
  if (!p.has_filename()) p = p.parent_path();  // "dir/"
  if (fs::is_directory(path) && p.filename() == "checkpoint" && p.has_parent_path())
    p = p.parent_path();  // a run of subq train: RUN/checkpoint is named RUN
  m.name = sanitize(fs::is_directory(path) ? p.filename().string() : p.stem().string());
  m.model = model::load_model(path);
  if (weights == "bf16") m.model->set_weights_dtype(torch::kBFloat16);
  m.model->eval();
  if (!with_tokenizer) return m;
  m.tokenizer = formats::load_tokenizer(path);
  SUBQ_CHECK(m.tokenizer->vocab_size() <= m.model->config().vocab_size, path.string(),
             ": the tokenizer has ", m.tokenizer->vocab_size(), " ids but the model only ",
             m.model->config().vocab_size);
  return m;
}

void make_names_distinct(std::vector<EvalModel>& models) {
  std::map<std::string, int> seen;
  for (EvalModel& m : models) {
    const int n = ++seen[m.name];
    if (n > 1) m.name = m.name + "#" + std::to_string(n);
  }
}

std::vector<Row> run_passkey(std::vector<EvalModel>& models, const RetrievalOptions& o,
                             ResultStore& store, const ProgressFn& progress) {
  return run_retrieval(Retrieval::kPasskey, models, o, store, progress);
}

std::vector<Row> run_niah(std::vector<EvalModel>& models, const RetrievalOptions& o,
                          ResultStore& store, const ProgressFn& progress) {
  return run_retrieval(Retrieval::kNiah, models, o, store, progress);
}

std::vector<Window> perplexity_windows(const std::vector<int64_t>& doc_lengths, int64_t length,
                                       int64_t stride, int64_t count) {
  SUBQ_CHECK(stride >= 1, "ppl: --stride: expected >= 1, got ", stride);
  // The grid, counted first so that picking from it allocates only `count` windows.
  std::vector<int64_t> per_doc(doc_lengths.size(), 0);
  int64_t grid = 0;
  for (size_t d = 0; d < doc_lengths.size(); ++d) {
    if (doc_lengths[d] >= length + 1) per_doc[d] = (doc_lengths[d] - length - 1) / stride + 1;
    grid += per_doc[d];
  }
  SUBQ_CHECK(grid > 0, "ppl: no held-out document has ", length + 1, " tokens, which a window of ",
             length, " needs");
  const int64_t n = std::min(count, grid);
  std::vector<Window> out;
  size_t d = 0;
  int64_t before = 0;  // grid points in documents before d
  for (int64_t i = 0; i < n; ++i) {
    // Rank i of n, centred in its share of the grid: (2i + 1) * grid / 2n.
    const int64_t rank = (2 * i + 1) * grid / (2 * n);
    while (rank >= before + per_doc[d]) before += per_doc[d++];
    out.push_back({static_cast<int64_t>(d), (rank - before) * stride});
  }
  return out;
}

std::vector<Row> run_perplexity(std::vector<EvalModel>& models, const PerplexityOptions& o,
                                ResultStore& store, const ProgressFn& progress) {
  check_lengths(o.lengths, "ppl");
  check_count(o.windows, "--windows");
  SUBQ_CHECK(o.stride >= 1 && o.stride <= kMaxLength, "ppl: --stride: expected 1 to ", kMaxLength,
             ", got ", o.stride);
  SUBQ_CHECK(o.prefill_chunk >= 1 && o.prefill_chunk <= 65536,
             "ppl: prefill chunk: expected 1 to 65536, got ", o.prefill_chunk);
  Progress prog("ppl", progress);
  std::vector<Row> rows;
  torch::NoGradGuard no_grad;
  for (EvalModel& m : models) {
    // The held-out documents of every split, through the token cache (built once per tokenizer).
    std::vector<std::unique_ptr<train::TokenCache>> caches;
    struct Doc {
      const train::TokenCache* cache;
      int64_t index;
    };
    std::vector<Doc> docs;
    std::vector<int64_t> lengths;
    for (const std::string& split : o.splits) {
      caches.push_back(std::make_unique<train::TokenCache>(train::open_or_build_token_cache(
          o.text_dir, o.cache_dir, split, *m.tokenizer, num_threads())));
      for (int64_t d = 0; d < caches.back()->num_documents(); ++d) {
        docs.push_back({caches.back().get(), d});
        lengths.push_back(caches.back()->document_end(d) - caches.back()->document_start(d));
      }
    }
    // The same starts at every length (the grid of the longest), so that the lengths differ in
    // context, not in text: window w of length L is the first L tokens of window w of the longest.
    const int64_t longest = *std::max_element(o.lengths.begin(), o.lengths.end());
    const std::vector<Window> ws = perplexity_windows(lengths, longest, o.stride, o.windows);
    for (int64_t L : o.lengths)
      for (size_t w = 0; w < ws.size(); ++w) prog.plan(static_cast<double>(L));
    for (int64_t L : o.lengths) {
      std::map<std::string, std::pair<double, int64_t>> by_doc;  // loss sum, windows
      double total = 0;
      for (size_t w = 0; w < ws.size(); ++w) {
        const Doc& doc = docs[static_cast<size_t>(ws[w].document)];
        const std::string& name = doc.cache->document_name(doc.index);
        const std::string unit = m.name + "|ppl|" + std::to_string(L) + "|" + std::to_string(w);
        if (!store.done(unit)) {
          const auto t0 = Clock::now();
          const int64_t begin = doc.cache->document_start(doc.index) + ws[w].start;
          std::vector<int64_t> ids(static_cast<size_t>(L + 1));
          doc.cache->copy(begin, begin + L + 1, ids.data());
          const int64_t chunk = std::min(o.prefill_chunk, L);
          model::ModelCache cache = m.model->new_cache(1, L, chunk);
          double loss_sum = 0;
          for (int64_t s = 0; s < L; s += chunk) {
            const int64_t n = std::min(chunk, L - s);
            const at::Tensor in = torch::from_blob(ids.data() + s, {1, n}, torch::kInt64);
            const at::Tensor labels = torch::from_blob(ids.data() + s + 1, {n}, torch::kInt64);
            const at::Tensor logits =
                m.model->forward(in, &cache).reshape({n, -1}).to(torch::kFloat);
            loss_sum += torch::nn::functional::cross_entropy(
                            logits, labels,
                            torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                            .item<double>();
          }
          const double loss = loss_sum / static_cast<double>(L);
          SUBQ_CHECK(std::isfinite(loss), m.name, ": ppl: the loss of window ", w, " (", name,
                     ", token ", ws[w].start, ") is not finite");
          const double depth = static_cast<double>(ws[w].start) /
                               static_cast<double>(lengths[static_cast<size_t>(ws[w].document)]);
          store.add(unit, {{m.name, "ppl", L, depth, "loss", loss, name}});
          char what[160];
          std::snprintf(what, sizeof what, "%s %lld tokens, window %zu/%zu (%s): loss %.4f",
                        m.name.c_str(), static_cast<long long>(L), w + 1, ws.size(), name.c_str(),
                        loss);
          prog.finish(static_cast<double>(L), what, seconds_since(t0));
        } else {
          prog.skip(static_cast<double>(L));
        }
        for (const Row& r : store.rows(unit)) {
          rows.push_back(r);
          total += r.value;
          auto& [sum, count] = by_doc[r.detail];
          sum += r.value;
          ++count;
        }
      }
      for (const auto& [name, sc] : by_doc)
        rows.push_back({m.name, "ppl", L, -1, "ppl",
                        std::exp(sc.first / static_cast<double>(sc.second)), name});
      const double mean = total / static_cast<double>(ws.size());
      rows.push_back({m.name, "ppl", L, -1, "loss_mean", mean, "all"});
      rows.push_back({m.name, "ppl", L, -1, "ppl", std::exp(mean), "all"});
    }
  }
  return rows;
}

std::vector<Row> run_speed(std::vector<EvalModel>& models, const SpeedOptions& o,
                           ResultStore& store, const ProgressFn& progress) {
  check_lengths(o.lengths, "speed");
  check_count(o.decode_tokens, "speed: decode tokens");
  SUBQ_CHECK(o.prefill_chunk >= 1 && o.prefill_chunk <= 65536,
             "speed: prefill chunk: expected 1 to 65536, got ", o.prefill_chunk);
  Progress prog("speed", progress);
  for (size_t mi = 0; mi < models.size(); ++mi)
    for (int64_t L : o.lengths) prog.plan(static_cast<double>(L));
  const bool peak_per_length = reset_peak_rss();
  std::vector<Row> rows;
  torch::NoGradGuard no_grad;
  for (EvalModel& m : models) {
    bool warm = false;
    for (int64_t L : o.lengths) {
      const std::string unit = m.name + "|speed|" + std::to_string(L);
      if (!store.done(unit)) {
        const int64_t vocab = m.tokenizer->vocab_size();
        Rng rng(o.seed ^ static_cast<uint64_t>(L));
        std::vector<int64_t> ids(static_cast<size_t>(L + o.decode_tokens));
        for (int64_t& id : ids)
          id = static_cast<int64_t>(rng.next_u64() % static_cast<uint64_t>(vocab));
        if (!warm) {
          // The first forward of a process pays for the GEMM choice's probe and page faults.
          model::ModelCache c = m.model->new_cache(1, 64, 64);
          m.model->forward(torch::from_blob(ids.data(), {1, 32}, torch::kInt64), &c, true);
          warm = true;
        }
        const auto t_unit = Clock::now();
        if (peak_per_length) reset_peak_rss();
        const int64_t chunk = std::min(o.prefill_chunk, L);
        model::ModelCache cache = m.model->new_cache(1, L + o.decode_tokens, chunk);
        const auto t0 = Clock::now();
        for (int64_t s = 0; s < L; s += chunk) {
          const int64_t n = std::min(chunk, L - s);
          m.model->forward(torch::from_blob(ids.data() + s, {1, n}, torch::kInt64), &cache, true);
        }
        const double prefill = seconds_since(t0);
        const double peak = mib(static_cast<double>(peak_rss_bytes()));
        const auto t1 = Clock::now();
        for (int64_t i = 0; i < o.decode_tokens; ++i)
          m.model->forward(torch::from_blob(ids.data() + L + i, {1, 1}, torch::kInt64), &cache);
        const double decode_ms = seconds_since(t1) * 1e3 / static_cast<double>(o.decode_tokens);
        const double cache_mib = mib(static_cast<double>(cache.nbytes()));
        store.add(
            unit,
            {{m.name, "speed", L, -1, "prefill_s", prefill, ""},
             {m.name, "speed", L, -1, "prefill_tok_s", static_cast<double>(L) / prefill, ""},
             {m.name, "speed", L, -1, "peak_rss_mib", peak, peak_per_length ? "" : "process peak"},
             {m.name, "speed", L, -1, "decode_ms_per_token", decode_ms, ""},
             {m.name, "speed", L, -1, "cache_mib", cache_mib, ""}});
        char what[160];
        std::snprintf(what, sizeof what,
                      "%s %lld tokens: prefill %.2f s (%.0f tok/s), peak %.0f MiB, decode %.2f ms, "
                      "cache %.2f MiB",
                      m.name.c_str(), static_cast<long long>(L), prefill,
                      static_cast<double>(L) / prefill, peak, decode_ms, cache_mib);
        prog.finish(static_cast<double>(L), what, seconds_since(t_unit));
      } else {
        prog.skip(static_cast<double>(L));
      }
      for (const Row& r : store.rows(unit)) rows.push_back(r);
    }
  }
  return rows;
}

std::vector<Row> run_mqar(std::vector<EvalModel>& models, const MqarEvalOptions& o,
                          ResultStore& store, const ProgressFn& progress) {
  check_count(o.examples, "mqar: --examples");
  SUBQ_CHECK(o.batch >= 1 && o.batch <= 4096, "mqar: batch: expected 1 to 4096, got ", o.batch);
  (void)train::mqar_example(o.mqar, 0);  // the options' own checks, before any work
  const int64_t T = o.mqar.seq_len;
  const int64_t batches = (o.examples + o.batch - 1) / o.batch;
  Progress prog("mqar", progress);
  for (size_t mi = 0; mi < models.size(); ++mi)
    for (int64_t b = 0; b < batches; ++b) prog.plan(1);
  std::vector<Row> rows;
  torch::NoGradGuard no_grad;
  const std::string cell = "T " + std::to_string(T) + ", K " + std::to_string(o.mqar.num_pairs) +
                           ", V " + std::to_string(o.mqar.vocab);
  for (EvalModel& m : models) {
    SUBQ_CHECK(m.model->config().vocab_size >= o.mqar.vocab, m.name, ": mqar: the model has ",
               m.model->config().vocab_size, " ids, fewer than the task's vocab ", o.mqar.vocab);
    double correct = 0, labelled = 0;
    for (int64_t b = 0; b < batches; ++b) {
      const std::string unit = m.name + "|mqar|" + std::to_string(T) + "|" + std::to_string(b);
      if (!store.done(unit)) {
        const auto t0 = Clock::now();
        const int64_t n = std::min(o.batch, o.examples - b * o.batch);
        std::vector<int64_t> inputs, labels;
        for (int64_t i = 0; i < n; ++i) {
          // Training draws its examples from mix(seed, index); these come from another stream.
          const auto ex = train::mqar_example(
              o.mqar, trial_seed(o.seed ^ 0x6d71617245564131ull, T, b * o.batch + i));
          inputs.insert(inputs.end(), ex.inputs.begin(), ex.inputs.end());
          labels.insert(labels.end(), ex.labels.begin(), ex.labels.end());
        }
        const at::Tensor in = torch::from_blob(inputs.data(), {n, T}, torch::kInt64);
        const at::Tensor pred = m.model->forward(in).argmax(-1).contiguous();
        const int64_t* p = pred.data_ptr<int64_t>();
        double c = 0, l = 0;
        for (size_t i = 0; i < labels.size(); ++i)
          if (labels[i] != train::kIgnore) {
            l += 1;
            c += p[i] == labels[i] ? 1 : 0;
          }
        store.add(unit, {{m.name, "mqar", T, -1, "correct", c, "batch " + std::to_string(b)},
                         {m.name, "mqar", T, -1, "queries", l, "batch " + std::to_string(b)}});
        char what[128];
        std::snprintf(what, sizeof what, "%s batch %lld/%lld: %.1f%% of %.0f queries",
                      m.name.c_str(), static_cast<long long>(b + 1),
                      static_cast<long long>(batches), 100 * c / std::max(l, 1.0), l);
        prog.finish(1, what, seconds_since(t0));
      } else {
        prog.skip(1);
      }
      for (const Row& r : store.rows(unit)) {
        (r.metric == "correct" ? correct : labelled) += r.value;
      }
    }
    const auto cost = m.model->cache_cost();
    const double state = static_cast<double>(cost.fixed_bytes) +
                         static_cast<double>(cost.bytes_per_token) * static_cast<double>(T);
    rows.push_back({m.name, "mqar", T, -1, "accuracy", correct / std::max(labelled, 1.0), cell});
    rows.push_back({m.name, "mqar", T, -1, "state_bytes", state, cell});
  }
  return rows;
}

}  // namespace subq::eval
