// The synthetic tasks mixed into corpus batches at a set ratio (docs/train.md): a row of a
// training batch is, with the probabilities given, a passkey trial, a NIAH trial or an MQAR
// sequence instead of a packed corpus window. Which task a row gets, and the row itself, are
// pure functions of (run seed, row index), so a resumed run sees exactly the same batches.
//
// A passkey or NIAH row is the trial's prompt followed by a space, its answer and EOS, tokenized
// as the corpus is (no BOS), with the filler fitted so that it fills the row; the few positions
// past its end are EOS with no label. The loss is next-token prediction on every real position,
// as on the corpus. An MQAR row uses token ids [1, vocab) directly, labelled at its queries only.
#pragma once

#include <cstdint>

#include "formats/tokenizer.h"

namespace subq::train {

struct MixOptions {
  double passkey = 0, niah = 0, mqar = 0;  // fractions of the rows; their sum is at most 1
  int64_t mqar_vocab = 8192;               // MQAR's ids (at most the model's vocabulary)
  bool any() const { return passkey > 0 || niah > 0 || mqar > 0; }
};

enum class RowTask { kCorpus, kPasskey, kNiah, kMqar };

// The task of row `index` of a run.
RowTask mix_row_task(const MixOptions& mix, uint64_t seed, int64_t index);

// Fills inputs [seq_len] and labels [seq_len] (kIgnore where there is none) of a synthetic row.
// `eos` pads a text row past its end.
void synthetic_row(RowTask task, const MixOptions& mix, const formats::Tokenizer& tokenizer,
                   int32_t eos, int64_t seq_len, uint64_t seed, int64_t index, int64_t* inputs,
                   int64_t* labels);

}  // namespace subq::train
