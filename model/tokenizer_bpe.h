// Hugging Face tokenizer.json with a byte-level BPE model: GPT-2, Llama-3, and what
// `tokenizers` trains with a ByteLevel pre-tokenizer. docs/tokenizers.md lists what of the file
// format is supported; anything else is rejected with a subq::Error that names it, never
// silently encoded differently.
#pragma once

#include <filesystem>
#include <memory>

#include "model/tokenizer.h"

namespace subq::model {

// Loads `tokenizer_json`; bos/eos come from a tokenizer_config.json next to it when there is
// one (its bos_token and eos_token), else from the post-processor's template (BOS) and a
// well-known end-of-text special token (EOS).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::filesystem::path& tokenizer_json);

}  // namespace subq::model
