// The training engine behind `subq train` (and, later, `subq linearize`): one loop, configured
// by data (docs/train.md).
//
//   AdamW (libtorch's) on the model's parameter groups, each with its own learning-rate scale,
//   weight decay and freezing; linear warm-up then cosine (train/schedule.h); gradient clipping
//   and accumulation. A checkpoint (weights, optimizer state, step, the config's hash) is
//   written atomically every checkpoint_every steps, at the end, and on SIGINT or SIGTERM;
//   `resume` continues from it with the losses an uninterrupted run would have had: the data
//   of step s is a pure function of (seed, s), and nothing else is random.
//
// Data so far: MQAR (train/synthetic.h), the task that checks that training really learns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "subq/error.h"
#include "train/schedule.h"
#include "train/synthetic.h"
#include "train/synthetic_mix.h"

namespace subq::train {

struct GroupOptions {
  double lr_scale = 1;
  bool trainable = true;
  double weight_decay = -1;  // < 0: the config's weight_decay
};

struct CorpusOptions {
  std::string text_dir = "data/text";    // the extractors' output (manifest.tsv)
  std::string cache_dir = "data/cache";  // token caches, by tokenizer fingerprint
  std::string split = "train";
  int64_t seq_len = 1024;
  MixOptions mix;  // synthetic rows among the corpus's (train/synthetic_mix.h)
};

struct TrainConfig {
  // The model: a checkpoint directory or .gguf (model), or a fresh one from a config.json
  // object (model_config), e.g. a 2-layer model for MQAR.
  std::string model;
  nlohmann::json model_config;
  // The data: {"task": "mqar", "vocab", "seq_len", "num_pairs", "power_a"}, or
  // {"task": "corpus", "text", "cache", "split", "seq_len", "mix"}: packed sequences of a corpus
  // split through the token cache (train/token_cache.h), tokenized with the model's tokenizer,
  // with synthetic rows mixed in ({"passkey": p, "niah": p, "mqar": p, "mqar_vocab": V}).
  std::string data_task = "mqar";
  MqarOptions mqar;
  CorpusOptions corpus;
  int64_t batch_size = 8;
  int64_t grad_accum = 1;
  int64_t steps = 100;
  Schedule schedule;  // lr, warmup_steps, min_lr_ratio (steps is the config's)
  double weight_decay = 0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double clip = 1.0;                           // max global gradient norm; 0: no clipping
  std::map<std::string, GroupOptions> groups;  // by DecoderModelImpl::parameter_group name
  int64_t checkpoint_every = 100;
  uint64_t seed = 0;
  std::string source;  // where it came from, for messages
};

// Parses and validates a config (JSON text): every field typed and bounded, unknown fields and
// groups refused, each error one line naming the field.
TrainConfig parse_train_config(const std::string& text, const std::string& source);
TrainConfig load_train_config(const std::filesystem::path& path);

struct StepRecord {
  int64_t step = 0;  // 1-based: the number of optimizer steps done
  double loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // tokens seen so far
  double seconds = 0;  // wall time of this step
};

struct RunOptions {
  std::filesystem::path out;  // checkpoint/, log.csv
  bool resume = false;
  int64_t stop_after = 0;     // > 0: stop (with a checkpoint) after this many steps of this run
  bool progress_bar = false;  // a live bar on stderr; else a plain line per step
  std::function<void(const StepRecord&)> on_step;  // called after every step
};

// SIGINT or SIGTERM stopped the run, after its checkpoint was written.
struct Interrupted : Error {
  using Error::Error;
};

// Runs (or resumes) the training; returns the records of the steps this run did. Throws
// subq::Error on bad input or a missing or foreign checkpoint, Interrupted on a signal.
std::vector<StepRecord> run_training(const TrainConfig& config, const RunOptions& run);

// The MQAR batch of one micro-step: inputs and labels [batch_size, seq_len] int64, from
// (seed, index) alone.
struct Batch {
  std::vector<int64_t> inputs, labels;
  int64_t rows = 0, cols = 0;
};
Batch mqar_batch(const TrainConfig& config, int64_t index);

}  // namespace subq::train
