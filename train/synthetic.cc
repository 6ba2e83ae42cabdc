#include "train/synthetic.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "subq/error.h"
#include "subq/random.h"

namespace subq::train {
namespace {

// Uniform in [lo, hi). The modulo's bias is (hi - lo) / 2^64: below 1e-9 for every range here.
int64_t uniform_int(Rng& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(rng.next_u64() % static_cast<uint64_t>(hi - lo));
}

// The largest filler any task is asked for: 64K tokens are about 300K characters; 2^26 leaves
// room for long contexts and still bounds the allocation.
constexpr int64_t kMaxFillerChars = int64_t{1} << 26;

void check_filler(const std::string& filler, int64_t chars, const char* task) {
  SUBQ_CHECK(!filler.empty(), task, ": the filler is empty");
  SUBQ_CHECK(chars >= 0 && chars <= kMaxFillerChars, task, ": filler_chars: expected 0 to ",
             kMaxFillerChars, ", got ", chars);
}

// A number of `digits` digits (0: uniform in [1, 50000), the passkey template's range).
int64_t draw_number(Rng& rng, int digits, const char* task) {
  SUBQ_CHECK(digits >= 0 && digits <= 18, task, ": digits: expected 0 to 18, got ", digits);
  if (digits == 0) return uniform_int(rng, 1, 50000);
  int64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  return uniform_int(rng, digits == 1 ? 0 : lo, lo * 10);
}

// Words for NIAH's keys, drawn as "adjective-noun" (RULER draws random English words).
constexpr const char* kAdjectives[] = {
    "amber", "bright", "calm",   "dusty",  "eager",  "faint", "gentle", "hollow",
    "icy",   "jolly",  "keen",   "lively", "mellow", "noble", "olive",  "proud",
    "quiet", "rapid",  "silent", "tidy",   "upper",  "vivid", "wary",   "young",
    "zesty", "brave",  "crisp",  "deep",   "early",  "fancy", "grand",  "humble"};
constexpr const char* kNouns[] = {
    "anchor", "basket", "candle", "desert",  "engine",   "falcon",  "garden",  "harbor",
    "island", "jacket", "kettle", "lantern", "meadow",   "needle",  "orchard", "pencil",
    "quarry", "river",  "saddle", "tunnel",  "umbrella", "valley",  "window",  "yacht",
    "zebra",  "bridge", "castle", "dragon",  "feather",  "glacier", "hammer",  "ladder"};

}  // namespace

std::string repeat_filler(const std::string& filler, int64_t chars) {
  check_filler(filler, chars, "repeat_filler");
  std::string out;
  out.reserve(static_cast<size_t>(chars));
  while (static_cast<int64_t>(out.size()) < chars) {
    if (!out.empty()) out += ' ';
    out += filler;
  }
  out.resize(static_cast<size_t>(chars));
  return out;
}

TextTrial passkey_trial(const PasskeyOptions& o, uint64_t seed) {
  check_filler(o.filler, o.filler_chars, "passkey");
  Rng rng(seed);
  const std::string key = std::to_string(draw_number(rng, o.digits, "passkey"));
  // The split of the filler, uniform; each side is the repeated filler cut from its start
  // (as landmark attention's and LongLoRA's passkey scripts build it).
  const int64_t prefix = uniform_int(rng, 0, o.filler_chars + 1);
  TextTrial t;
  t.answer = key;
  t.depth = o.filler_chars > 0 ? static_cast<double>(prefix) / o.filler_chars : 0.0;
  t.prompt =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
      "them. I will quiz you about the important information there.\n" +
      repeat_filler(o.filler, prefix) + "\nThe pass key is " + key + ". Remember it. " + key +
      " is the pass key.\n" + repeat_filler(o.filler, o.filler_chars - prefix) +
      "\nWhat is the pass key? The pass key is";
  return t;
}

bool passkey_correct(const std::vector<int64_t>& generated, const std::vector<int64_t>& answer) {
  SUBQ_CHECK(!answer.empty(), "passkey_correct: the answer has no tokens");
  return generated.size() >= answer.size() &&
         std::equal(answer.begin(), answer.end(), generated.begin());
}

TextTrial niah_trial(const NiahOptions& o, uint64_t seed) {
  check_filler(o.filler, o.filler_chars, "niah");
  SUBQ_CHECK(o.digits >= 1, "niah: digits: expected 1 to 18, got ", o.digits);
  Rng rng(seed);
  const std::string value = std::to_string(draw_number(rng, o.digits, "niah"));
  const std::string key =
      std::string(kAdjectives[uniform_int(rng, 0, 32)]) + "-" + kNouns[uniform_int(rng, 0, 32)];
  // The needle goes between two repetitions of the filler (RULER inserts it between
  // sentences), at a depth uniform over the repetitions' boundaries.
  const std::string haystack = repeat_filler(o.filler, o.filler_chars);
  const int64_t period = static_cast<int64_t>(o.filler.size()) + 1;
  const int64_t boundaries = o.filler_chars / period + 1;  // 0, period, 2 period, ...
  const int64_t at = std::min<int64_t>(uniform_int(rng, 0, boundaries) * period, o.filler_chars);
  const std::string needle = "One of the special magic numbers for " + key + " is: " + value + ".";
  std::string before = haystack.substr(0, static_cast<size_t>(at));
  std::string after = haystack.substr(static_cast<size_t>(at));
  if (!before.empty() && before.back() == ' ') before.pop_back();
  TextTrial t;
  t.answer = value;
  t.depth = o.filler_chars > 0 ? static_cast<double>(at) / o.filler_chars : 0.0;
  t.prompt =
      "Some special magic numbers are hidden within the following text. Make sure to memorize "
      "it. I will quiz you about the numbers afterwards.\n" +
      before + (before.empty() ? "" : " ") + needle + (after.empty() ? "" : " ") + after +
      "\nWhat is the special magic number for " + key +
      " mentioned in the provided text? The special magic number for " + key +
      " mentioned in the provided text is";
  return t;
}

bool niah_correct(const std::string& generated, const std::string& answer) {
  SUBQ_CHECK(!answer.empty(), "niah_correct: the answer is empty");
  return generated.find(answer) != std::string::npos;
}

int64_t fit_filler_chars(int64_t target_tokens,
                         const std::function<int64_t(int64_t chars)>& tokens_for_chars) {
  SUBQ_CHECK(target_tokens >= 1, "fit_filler_chars: target_tokens: expected >= 1, got ",
             target_tokens);
  SUBQ_CHECK(tokens_for_chars(0) <= target_tokens, "fit_filler_chars: the template alone is ",
             tokens_for_chars(0), " tokens, more than the ", target_tokens, " asked for");
  // hi: a count that is too long (every token covers at least one character, so target + 1
  // characters of filler alone exceed the target); lo: one that fits.
  int64_t lo = 0, hi = std::min(kMaxFillerChars, 8 * target_tokens + 64);
  while (tokens_for_chars(hi) <= target_tokens) {
    SUBQ_CHECK(hi < kMaxFillerChars, "fit_filler_chars: ", target_tokens, " tokens need more than ",
               kMaxFillerChars, " characters of filler");
    lo = hi;
    hi = std::min(kMaxFillerChars, 2 * hi);
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (tokens_for_chars(mid) <= target_tokens ? lo : hi) = mid;
  }
  return lo;
}

MqarExample mqar_example(const MqarOptions& o, uint64_t seed) {
  SUBQ_CHECK(o.vocab >= 4 && o.vocab <= (int64_t{1} << 31), "mqar: vocab: expected 4 to 2^31, got ",
             o.vocab);
  SUBQ_CHECK(o.seq_len >= 4 && o.seq_len <= (int64_t{1} << 24) && o.seq_len % 2 == 0,
             "mqar: seq_len: expected an even number from 4 to 2^24, got ", o.seq_len);
  SUBQ_CHECK(o.num_pairs >= 1 && 4 * o.num_pairs <= o.seq_len,
             "mqar: num_pairs: expected 1 to seq_len / 4 = ", o.seq_len / 4, ", got ", o.num_pairs);
  const int64_t half = o.vocab / 2;
  SUBQ_CHECK(o.num_pairs <= half - 1, "mqar: num_pairs: ", o.num_pairs,
             " distinct keys do not fit in [1, ", half, ")");
  SUBQ_CHECK(o.power_a > 0 && o.power_a <= 1, "mqar: power_a: expected (0, 1], got ", o.power_a);
  Rng rng(seed);
  const int64_t K = o.num_pairs, T = o.seq_len;
  // K distinct draws from [lo, hi): a partial Fisher-Yates shuffle of the range.
  auto distinct = [&](int64_t lo, int64_t hi) {
    std::vector<int64_t> pool(static_cast<size_t>(hi - lo));
    std::iota(pool.begin(), pool.end(), lo);
    for (int64_t i = 0; i < K; ++i)
      std::swap(pool[static_cast<size_t>(i)],
                pool[static_cast<size_t>(uniform_int(rng, i, hi - lo))]);
    pool.resize(static_cast<size_t>(K));
    return pool;
  };
  const std::vector<int64_t> keys = distinct(1, half), values = distinct(half, o.vocab);
  MqarExample ex;
  ex.inputs.assign(static_cast<size_t>(T), 0);
  ex.labels.assign(static_cast<size_t>(T), kIgnore);
  for (int64_t i = 0; i < K; ++i) {
    ex.inputs[static_cast<size_t>(2 * i)] = keys[static_cast<size_t>(i)];
    ex.inputs[static_cast<size_t>(2 * i + 1)] = values[static_cast<size_t>(i)];
  }
  // Query i at offset 2 g_i after the context, g drawn without replacement from [0, space)
  // with weight a (g + 1)^(a - 1): most queries come soon after the context, a few far.
  const int64_t space = (T - 2 * K) / 2;
  std::vector<double> w(static_cast<size_t>(space));
  for (int64_t g = 0; g < space; ++g)
    w[static_cast<size_t>(g)] = o.power_a * std::pow(static_cast<double>(g + 1), o.power_a - 1);
  std::vector<char> query(static_cast<size_t>(T), 0);
  for (int64_t i = 0; i < K; ++i) {
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    double u = rng.uniform() * total;
    int64_t g = 0;
    while (g < space - 1 && (u -= w[static_cast<size_t>(g)]) >= 0) ++g;
    while (w[static_cast<size_t>(g)] == 0) --g;  // rounding landed past the last live weight
    w[static_cast<size_t>(g)] = 0;
    const size_t pos = static_cast<size_t>(2 * K + 2 * g);
    ex.inputs[pos] = keys[static_cast<size_t>(i)];
    ex.labels[pos] = values[static_cast<size_t>(i)];
    query[pos] = 1;
  }
  if (o.random_non_queries)
    for (int64_t p = 2 * K; p < T; ++p)
      if (!query[static_cast<size_t>(p)])
        ex.inputs[static_cast<size_t>(p)] = uniform_int(rng, 0, o.vocab);
  return ex;
}

double mqar_accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  SUBQ_CHECK(predictions.size() == labels.size(), "mqar_accuracy: ", predictions.size(),
             " predictions for ", labels.size(), " labels");
  int64_t n = 0, correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == kIgnore) continue;
    ++n;
    correct += predictions[i] == labels[i];
  }
  SUBQ_CHECK(n > 0, "mqar_accuracy: no labelled position");
  return static_cast<double>(correct) / static_cast<double>(n);
}

}  // namespace subq::train
