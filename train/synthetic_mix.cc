#include "train/synthetic_mix.h"

#include <algorithm>
#include <string>
#include <vector>

#include "subq/error.h"
#include "subq/random.h"
#include "train/synthetic.h"

namespace subq::train {
namespace {

// Separate streams for the choice of task and for the row's content.
constexpr uint64_t kChoiceStream = 0x6d69782d7461736bull;   // "mix-task"
constexpr uint64_t kContentStream = 0x6d69782d726f7721ull;  // "mix-row!"

uint64_t row_seed(uint64_t seed, int64_t index, uint64_t stream) {
  return seed_for(seed ^ stream, static_cast<uint64_t>(index));
}

std::vector<int32_t> text_row_ids(RowTask task, const formats::Tokenizer& tok, int32_t eos,
                                  uint64_t seed, int64_t chars) {
  TextTrial t;
  if (task == RowTask::kPasskey) {
    PasskeyOptions o;
    o.filler_chars = chars;
    t = passkey_trial(o, seed);
  } else {
    NiahOptions o;
    o.filler_chars = chars;
    t = niah_trial(o, seed);
  }
  std::vector<int32_t> ids = tok.encode(t.prompt + " " + t.answer, /*add_special_tokens=*/false);
  ids.push_back(eos);
  return ids;
}

}  // namespace

RowTask mix_row_task(const MixOptions& m, uint64_t seed, int64_t index) {
  if (!m.any()) return RowTask::kCorpus;
  Rng r(row_seed(seed, index, kChoiceStream));
  const double u = r.uniform();
  if (u < m.passkey) return RowTask::kPasskey;
  if (u < m.passkey + m.niah) return RowTask::kNiah;
  if (u < m.passkey + m.niah + m.mqar) return RowTask::kMqar;
  return RowTask::kCorpus;
}

void synthetic_row(RowTask task, const MixOptions& m, const formats::Tokenizer& tok, int32_t eos,
                   int64_t T, uint64_t seed, int64_t index, int64_t* inputs, int64_t* labels) {
  SUBQ_CHECK(task != RowTask::kCorpus, "internal: synthetic_row of a corpus row");
  const uint64_t s = row_seed(seed, index, kContentStream);
  std::fill(inputs, inputs + T, int64_t{eos});
  std::fill(labels, labels + T, kIgnore);
  if (task == RowTask::kMqar) {
    MqarOptions o;
    o.vocab = std::min<int64_t>(m.mqar_vocab, tok.vocab_size());
    o.seq_len = T - T % 2;  // MQAR's sequences are even; an odd row ends with one EOS
    o.num_pairs = std::max<int64_t>(1, std::min(o.seq_len / 16, o.vocab / 2 - 1));
    const MqarExample ex = mqar_example(o, s);
    std::copy(ex.inputs.begin(), ex.inputs.end(), inputs);
    std::copy(ex.labels.begin(), ex.labels.end(), labels);
    return;
  }
  // The largest filler whose row (prompt, answer, EOS) fits T + 1 tokens: T inputs, each with
  // the next token as its label.
  const int64_t chars = fit_filler_chars(T + 1, [&](int64_t c) {
    return static_cast<int64_t>(text_row_ids(task, tok, eos, s, c).size());
  });
  const std::vector<int32_t> ids = text_row_ids(task, tok, eos, s, chars);
  const int64_t n = static_cast<int64_t>(ids.size());  // <= T + 1
  for (int64_t i = 0; i + 1 < n; ++i) {
    inputs[i] = ids[static_cast<size_t>(i)];
    labels[i] = ids[static_cast<size_t>(i + 1)];
  }
}

}  // namespace subq::train
