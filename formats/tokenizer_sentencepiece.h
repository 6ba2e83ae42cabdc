// SentencePiece tokenizer.model files (BPE and unigram), through libsentencepiece: the model
// format is a protobuf with its own normalizer rules, and the library is the reference
// implementation of both, so nothing is re-implemented here.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "formats/tokenizer.h"

namespace subq::formats {

// encode(text, true) puts the model's BOS first (as Llama's tokenizers do) when it has one;
// decode(ids, false) writes control tokens (BOS, EOS, ...) as their piece text, which the
// library's decode drops.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& model_file);

// The same from a serialized ModelProto held in memory (a GGUF file's `llama` tokenizer is
// rebuilt as one); errors start with `source`.
std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_proto(std::string_view serialized,
                                                              const std::string& source);

}  // namespace subq::formats
