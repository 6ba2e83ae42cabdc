// Hugging Face tokenizer.json with a byte-level BPE model: GPT-2, Llama-3, and what
// `tokenizers` trains with a ByteLevel pre-tokenizer. docs/tokenizers.md lists what of the file
// format is supported; anything else is rejected with a subq::Error that names it, never
// silently encoded differently.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "formats/tokenizer.h"

namespace subq::formats {

// Loads `tokenizer_json`; bos/eos come from a tokenizer_config.json next to it when there is
// one (its bos_token and eos_token), else from the post-processor's template (BOS) and a
// well-known end-of-text special token (EOS).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::filesystem::path& tokenizer_json);

// The same from a tokenizer.json document held in memory (a GGUF file builds one from its
// metadata). Errors start with `source`; bos and eos are given, not read from a
// tokenizer_config.json.
std::unique_ptr<Tokenizer> bpe_tokenizer_from_json(const nlohmann::json& root,
                                                   const std::string& source,
                                                   std::optional<int32_t> bos,
                                                   std::optional<int32_t> eos);

// GPT-2's byte-level alphabet (every byte spelled as one printable character): whether a token
// is written in it, and the spelling of raw bytes.
bool is_byte_level_spelled(std::string_view token);
std::string byte_level_spell(std::string_view bytes);

}  // namespace subq::formats
