// The synthetic tasks of the evaluations and of the training mix (../shared/specs/linearize.md,
// "Evaluations"): passkey retrieval, RULER's single-needle NIAH, and Zoology's MQAR, each
// deterministic under a seed, with its scoring. Torch-free and tokenizer-free: passkey and NIAH
// make text (the caller tokenizes it and fits it to a token length, see fit_filler_chars),
// MQAR makes token ids.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace subq::train {

// The filler both text tasks repeat, cut to a character count.
inline constexpr const char* kDefaultFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// `filler` repeated (with a space between repetitions) and cut to exactly `chars` characters.
std::string repeat_filler(const std::string& filler, int64_t chars);

// ---- passkey ----

struct PasskeyOptions {
  int64_t filler_chars = 4000;  // prefix + suffix filler, in characters
  std::string filler = kDefaultFiller;
  // 0: the key is uniform in [1, 50000), as the template says; n > 0: n digits, uniform in
  // [10^(n-1), 10^n).
  int digits = 0;
};

struct TextTrial {
  std::string prompt;  // what the model reads
  std::string answer;  // what it must produce (the key, or the needle's value)
  double depth = 0;    // where the needle sits: prefix filler / all filler, in [0, 1]
};

// One trial: the five lines of the template joined by newlines, the split of the filler
// (depth) uniform at random. The same seed gives the same trial.
//   1. There is an important info hidden inside a lot of irrelevant text. Find it and memorize
//      them. I will quiz you about the important information there.
//   2. the prefix filler      3. The pass key is {K}. Remember it. {K} is the pass key.
//   4. the suffix filler      5. What is the pass key? The pass key is
TextTrial passkey_trial(const PasskeyOptions& options, uint64_t seed);

// Correct iff the generated ids begin with the answer's ids exactly.
bool passkey_correct(const std::vector<int64_t>& generated, const std::vector<int64_t>& answer);

// ---- NIAH (RULER niah_single_1: a number needle with a word key in the repeated filler) ----

struct NiahOptions {
  int64_t filler_chars = 4000;
  std::string filler = kDefaultFiller;
  int digits = 7;  // the value: uniform among the numbers of this many digits
};

// RULER's template: "Some special magic numbers are hidden within the following text. Make
// sure to memorize it. I will quiz you about the numbers afterwards.\n{haystack with the
// needle}\nWhat is the special magic number for {key} mentioned in the provided text? The
// special magic number for {key} mentioned in the provided text is", with the needle
// "One of the special magic numbers for {key} is: {value}." placed at a random depth.
TextTrial niah_trial(const NiahOptions& options, uint64_t seed);

// Correct iff the answer appears in the generated text.
bool niah_correct(const std::string& generated, const std::string& answer);

// ---- fitting a prompt to a token length ----

// The filler character count whose prompt tokenizes to at most `target_tokens` tokens (the
// largest such count, by bisection over make(chars) -> token count; token counts grow with
// chars). Errors when even no filler is too long.
int64_t fit_filler_chars(int64_t target_tokens,
                         const std::function<int64_t(int64_t chars)>& tokens_for_chars);

// ---- MQAR (Zoology's multi-query associative recall) ----

struct MqarOptions {
  int64_t vocab = 8192;            // V: keys from [1, V/2), values from [V/2, V)
  int64_t seq_len = 64;            // T (even)
  int64_t num_pairs = 4;           // K key-value pairs; 4K <= T
  double power_a = 0.01;           // query gaps are drawn with weight a * g^(a - 1), g = 1, 2, ...
  bool random_non_queries = true;  // fill the positions that are neither context nor query
};

// One sequence: inputs [T] = k1 v1 ... kK vK, then the query region, where each key appears
// once more at an even offset 2g (g drawn without replacement with the power-law weights);
// labels [T]: at each query key's position, its value (the next token to predict), and
// kIgnore everywhere else.
struct MqarExample {
  std::vector<int64_t> inputs, labels;
};
inline constexpr int64_t kIgnore = -100;
MqarExample mqar_example(const MqarOptions& options, uint64_t seed);

// The fraction of positions with a label whose prediction equals it (predictions [T], the
// argmax at each position). Errors on mismatched sizes or no labelled position.
double mqar_accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);

}  // namespace subq::train
