// Text generation: chunked prefill of the prompt through the model's caches, then one token at
// a time, sampled greedily or with temperature, top-k and top-p from a seeded generator.
//
// Sampling is deterministic for a given seed on every machine: probabilities are computed in
// float64 from the logits, candidates are ordered by probability with ties broken by the lower
// id, and the uniform draw comes from std::mt19937_64 (whose sequence the C++ standard fixes)
// rather than from torch's or the standard library's distributions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "model/decoder.h"

namespace subq::model {

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy (argmax; the lowest id wins a tie)
  int64_t top_k = 40;        // keep the k most likely; 0: all
  double top_p = 0.95;       // keep the smallest set whose probability reaches p; 1: all
  uint64_t seed = 0;
};
void validate_sampling(const SamplingOptions& opt);

// The next token from logits [vocab] (any float dtype).
int64_t sample_next(const at::Tensor& logits, const SamplingOptions& opt, std::mt19937_64& rng);

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  int64_t prefill_chunk = 256;  // prompt tokens per forward
  SamplingOptions sampling;
  std::vector<int64_t> stop_ids;  // generation ends after emitting one of these
  // Sample only among ids [0, sample_vocab) (0: all): a model's vocabulary is often padded past
  // the tokenizer's, and those ids have no text.
  int64_t sample_vocab = 0;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  size_t cache_bytes = 0;  // every layer's cache, after the last token
};

// The ids a generation stops at: the model config's EOS ids, or else the tokenizer's EOS.
std::vector<int64_t> default_stop_ids(const DecoderModelImpl& model,
                                      std::optional<int32_t> tokenizer_eos);

// Generates for one sequence; on_token(id) is called for each new token as soon as it exists.
GenerateStats generate(DecoderModelImpl& model, const std::vector<int64_t>& prompt,
                       const GenerateOptions& opt, const std::function<void(int64_t)>& on_token);

}  // namespace subq::model
