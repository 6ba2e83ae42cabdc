#include "model/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "subq/error.h"

namespace subq::model {

void validate_sampling(const SamplingOptions& o) {
  SUBQ_CHECK(std::isfinite(o.temperature) && o.temperature >= 0,
             "sampling: temperature: expected a number >= 0, got ", o.temperature);
  SUBQ_CHECK(o.top_k >= 0, "sampling: top_k: expected >= 0 (0 keeps all), got ", o.top_k);
  SUBQ_CHECK(o.top_p > 0 && o.top_p <= 1, "sampling: top_p: expected a number in (0, 1], got ",
             o.top_p);
}

int64_t sample_next(const at::Tensor& logits, const SamplingOptions& opt, std::mt19937_64& rng) {
  const at::Tensor l = logits.to(torch::kFloat64).contiguous();
  const double* x = l.data_ptr<double>();
  const int64_t V = l.numel();
  SUBQ_CHECK(V > 0, "sample_next: empty logits");
  for (int64_t i = 0; i < V; ++i)
    SUBQ_CHECK(!std::isnan(x[i]), "sample_next: logit ", i, " is NaN");
  if (opt.temperature == 0) return std::max_element(x, x + V) - x;  // first of the maxima

  // Candidates by descending logit, ties by ascending id.
  std::vector<int64_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  int64_t keep = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
  // Softmax of logit / temperature over the kept ones, shifted by the max for range.
  std::vector<double> p(keep);
  const double top = x[order[0]];
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += p[i] = std::exp((x[order[i]] - top) / opt.temperature);
  // top-p: the smallest prefix whose probability reaches top_p.
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[i] / sum;
    if (cum >= opt.top_p) {
      keep = i + 1;
      break;
    }
  }
  double kept = 0;
  for (int64_t i = 0; i < keep; ++i) kept += p[i];
  // A uniform double in [0, 1) from the top 53 bits: the same on every platform.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * kept;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

std::vector<int64_t> default_stop_ids(const DecoderModelImpl& model,
                                      std::optional<int32_t> tokenizer_eos) {
  std::vector<int64_t> ids = model.config().eos_token_ids;
  if (ids.empty() && tokenizer_eos) ids.push_back(*tokenizer_eos);
  return ids;
}

GenerateStats generate(DecoderModelImpl& model, const std::vector<int64_t>& prompt,
                       const GenerateOptions& opt, const std::function<void(int64_t)>& on_token) {
  validate_sampling(opt.sampling);
  SUBQ_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  SUBQ_CHECK(opt.max_new_tokens >= 0, "generate: max_new_tokens: expected >= 0, got ",
             opt.max_new_tokens);
  // Bounds that keep the sums below from overflowing; memory is checked against the machine.
  constexpr int64_t kMaxTokens = int64_t{1} << 40;
  SUBQ_CHECK(opt.max_new_tokens <= kMaxTokens,
             "generate: max_new_tokens: expected at most 2^40, got ", opt.max_new_tokens);
  SUBQ_CHECK(opt.prefill_chunk > 0 && opt.prefill_chunk <= (int64_t{1} << 20),
             "generate: prefill_chunk: expected 1 to 2^20, got ", opt.prefill_chunk);
  torch::NoGradGuard no_grad;
  using Clock = std::chrono::steady_clock;
  GenerateStats st;
  st.prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t capacity = st.prompt_tokens + std::max<int64_t>(opt.max_new_tokens, 1);
  ModelCache cache = model.new_cache(1, capacity, opt.prefill_chunk);
  std::mt19937_64 rng(opt.sampling.seed);

  auto t0 = Clock::now();
  at::Tensor last;
  for (int64_t s = 0; s < st.prompt_tokens; s += opt.prefill_chunk) {
    const int64_t n = std::min(opt.prefill_chunk, st.prompt_tokens - s);
    at::Tensor ids =
        torch::from_blob(const_cast<int64_t*>(prompt.data() + s), {1, n}, torch::kInt64);
    last = model.forward(ids, &cache, /*last_logits_only=*/true).select(1, 0).squeeze(0);
  }
  auto t1 = Clock::now();
  st.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  const int64_t vocab = model.config().vocab_size;
  SUBQ_CHECK(opt.sample_vocab >= 0 && opt.sample_vocab <= vocab,
             "generate: sample_vocab: expected 0 to ", vocab, ", got ", opt.sample_vocab);
  const int64_t sampled = opt.sample_vocab > 0 ? opt.sample_vocab : vocab;
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int64_t next = sample_next(last.narrow(0, 0, sampled), opt.sampling, rng);
    ++st.new_tokens;
    on_token(next);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) break;
    if (i + 1 == opt.max_new_tokens) break;
    at::Tensor ids = torch::full({1, 1}, next, torch::kInt64);
    last = model.forward(ids, &cache).select(1, 0).squeeze(0);
  }
  st.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  st.cache_bytes = cache.nbytes();
  return st;
}

}  // namespace subq::model
