// Tokenizers for the decoder model and `subq generate`, torch-free.
//
// Three kinds, one interface:
//   "bytes"          built in: ids 0..255 are the bytes of the UTF-8 text, 256 = BOS, 257 = EOS
//   "bpe"            a Hugging Face tokenizer.json with a byte-level BPE model (GPT-2, Llama-3)
//   "sentencepiece"  a SentencePiece tokenizer.model, through libsentencepiece
// load_tokenizer() picks one for a model directory; docs/tokenizers.md says what is supported.
// Every problem with a file is a subq::Error whose message starts with the file's path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace subq::formats {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. add_special_tokens adds what the tokenizer's post-processor adds (BOS
  // for Llama-3 style files, the byte-level kind and SentencePiece models that have one);
  // special tokens written in the text itself are always recognised, as in Hugging Face.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;

  // The text of `ids`, always valid UTF-8 (bytes that do not form UTF-8 become U+FFFD).
  // Throws subq::Error for an id outside [0, vocab_size()). By default utf8_lossy of
  // decode_bytes; SentencePiece uses the library's own decode.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // The bytes of `ids` before any UTF-8 repair: a character whose bytes are split over tokens
  // is left cut in half at the end. TokenStreamer builds on this.
  virtual std::string decode_bytes(std::span<const int32_t> ids,
                                   bool skip_special_tokens) const = 0;

  // One more than the largest id.
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const { return std::nullopt; }
  virtual std::optional<int32_t> eos_id() const { return std::nullopt; }
  virtual bool is_special(int32_t id) const = 0;
  // "bytes", "bpe" or "sentencepiece".
  virtual std::string_view kind() const = 0;

 protected:
  // Throws subq::Error naming `where` unless every id is in [0, vocab_size()).
  void check_ids(std::string_view where, std::span<const int32_t> ids) const;
};

// The tokenizer of a model directory: tokenizer.json if present, else tokenizer.model, else the
// built-in byte-level one. A path to a file loads that file (by its extension: .json, .model, or
// .gguf for the tokenizer in a GGUF file's metadata).
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir_or_file);

// Text from ids one at a time, for printing while generating. put(id) returns the text that
// `id` completes, so that the concatenation of every put() and finish() equals
// decode(all ids). It holds back the bytes of a UTF-8 character that later tokens finish, and
// decodes each new id behind the last id that had text, so that text that depends on its
// neighbour (SentencePiece drops the space of the first piece only) comes out as in a full
// decode. Constant memory and time per id over a long generation.
class TokenStreamer {
 public:
  explicit TokenStreamer(const Tokenizer& tokenizer, bool skip_special_tokens = true)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  std::string put(int32_t id);
  // The held-back bytes, repaired to U+FFFD if no token completed them; resets the stream.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  // The context id (the last one with text), then the ids whose text is not complete yet.
  std::vector<int32_t> window_;
  // How many bytes of decode_bytes(window_) have been returned already.
  size_t emitted_bytes_ = 0;
};

}  // namespace subq::formats
