// The tasks of `subq eval` on decoder models (docs/eval.md, ../shared/specs/linearize.md):
//
//   passkey  the passkey template at each length; greedy decoding; a trial is correct iff the
//            generated ids begin with the key's
//   niah     RULER's single needle (a 7-digit value) at each length; correct iff the value
//            appears in the generated text
//   ppl      perplexity against context length: windows of L tokens, on a stride-256 grid over
//            the held-out long documents (the same starts at every L); mean token
//            cross-entropy over every position
//   speed    prefill time and peak memory at each length, then decode ms per token and the
//            cache or state bytes
//   mqar     Zoology's multi-query associative recall on models trained for it: accuracy and
//            the state's bytes
//
// Each task runs its units of work (a trial, a window, a length) through a ResultStore, so an
// evaluation that stops resumes with the units that are left, and returns every row: one per
// unit and the aggregates (accuracy, perplexity) per model and length.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "eval/results.h"
#include "formats/tokenizer.h"
#include "model/decoder.h"
#include "train/synthetic.h"

namespace subq::eval {

// A model under evaluation, with its tokenizer and the name its rows carry.
struct EvalModel {
  std::string name;
  std::filesystem::path path;
  model::DecoderModel model{nullptr};
  std::unique_ptr<formats::Tokenizer> tokenizer;
};

// Loads a checkpoint directory or .gguf file (weights "f32" or "bf16"). The name is the file's
// or directory's stem (a `checkpoint` directory takes its run's name), with characters that CSV
// or unit names cannot hold replaced. Without `with_tokenizer` (MQAR reads token ids) no
// tokenizer is loaded.
EvalModel load_eval_model(const std::filesystem::path& path, const std::string& weights,
                          bool with_tokenizer = true);
// Makes the names of `models` distinct ("a", "a#2", ...).
void make_names_distinct(std::vector<EvalModel>& models);

// Progress of a long evaluation: one line per finished unit (stderr by default).
using ProgressFn = std::function<void(const std::string& line)>;

struct RetrievalOptions {
  std::vector<int64_t> lengths{1024, 2048, 4096};  // prompt tokens
  int64_t trials = 10;
  std::string filler;  // empty: the template's
  int digits = 0;      // passkey: 0 = uniform in [1, 50000); niah: 0 = 7 digits
  uint64_t seed = 0;
  int64_t prefill_chunk = 1024;
};

struct PerplexityOptions {
  std::vector<int64_t> lengths{1024, 2048, 4096};
  int64_t stride = 256;  // the grid windows start on, within each document
  int64_t windows = 8;   // windows per length, spread evenly over the grid of the longest length
  std::filesystem::path text_dir = "data/text";
  std::filesystem::path cache_dir = "data/cache";
  std::vector<std::string> splits{"heldout-A", "heldout-B"};
  int64_t prefill_chunk = 1024;
};

struct SpeedOptions {
  std::vector<int64_t> lengths{1024, 2048, 4096, 8192, 16384};
  int64_t decode_tokens = 16;  // timed decode steps after the prefill
  int64_t prefill_chunk = 1024;
  uint64_t seed = 0;
};

struct MqarEvalOptions {
  train::MqarOptions mqar{8192, 256, 16};  // Zoology's hardest standard cell: T 256, K 16
  int64_t examples = 1000;                 // held-out sequences, drawn from their own seeds
  int64_t batch = 50;
  uint64_t seed = 0;
};

std::vector<Row> run_passkey(std::vector<EvalModel>& models, const RetrievalOptions& opt,
                             ResultStore& store, const ProgressFn& progress);
std::vector<Row> run_niah(std::vector<EvalModel>& models, const RetrievalOptions& opt,
                          ResultStore& store, const ProgressFn& progress);
std::vector<Row> run_perplexity(std::vector<EvalModel>& models, const PerplexityOptions& opt,
                                ResultStore& store, const ProgressFn& progress);
std::vector<Row> run_speed(std::vector<EvalModel>& models, const SpeedOptions& opt,
                           ResultStore& store, const ProgressFn& progress);
// MQAR on models trained for it (their vocabulary holds the task's ids): the accuracy of the
// argmax at every query position of `examples` sequences that training never drew (seeds of
// their own stream), and each model's state: its cache at T tokens (KV bytes for softmax
// layers, the fixed state of linear ones), Zoology's x axis.
std::vector<Row> run_mqar(std::vector<EvalModel>& models, const MqarEvalOptions& opt,
                          ResultStore& store, const ProgressFn& progress);

// The windows of the perplexity task: document d of the token cache, tokens [start, start + L]
// (L inputs, each predicting the next). The grid is every `stride`-th start of every document
// long enough for a window; `count` windows are taken from it at evenly spaced ranks.
struct Window {
  int64_t document = 0, start = 0;
};
std::vector<Window> perplexity_windows(const std::vector<int64_t>& document_lengths, int64_t length,
                                       int64_t stride, int64_t count);

}  // namespace subq::eval
