#include "model/tokenizer.h"

#include <system_error>

#include "model/tokenizer_bpe.h"
#include "model/tokenizer_bytes.h"
#include "model/tokenizer_sentencepiece.h"
#include "model/utf8.h"
#include "subq/error.h"

namespace subq::model {

namespace fs = std::filesystem;

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return utf8_lossy(decode_bytes(ids, skip_special_tokens));
}

void Tokenizer::check_ids(std::string_view where, std::span<const int32_t> ids) const {
  const int32_t n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    SUBQ_CHECK_ARG(ids[i] >= 0 && ids[i] < n, where, "ids",
                   detail::concat("ids in [0, ", n, ") (the ", kind(), " vocabulary)"), ids[i],
                   " at position ", i);
  }
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& model_dir_or_file) {
  std::error_code ec;
  const fs::file_status status = fs::status(model_dir_or_file, ec);
  SUBQ_CHECK(fs::exists(status), model_dir_or_file.string(),
             ": no such tokenizer file or model directory");
  if (fs::is_directory(status)) {
    const fs::path json = model_dir_or_file / "tokenizer.json";
    const fs::path sentencepiece = model_dir_or_file / "tokenizer.model";
    // tokenizer.json first: Hugging Face writes it next to tokenizer.model for converted
    // SentencePiece models too, and it is the one transformers itself uses.
    if (fs::exists(json, ec)) return load_bpe_tokenizer(json);
    if (fs::exists(sentencepiece, ec)) return load_sentencepiece_tokenizer(sentencepiece);
    return std::make_unique<BytesTokenizer>();
  }
  const fs::path ext = model_dir_or_file.extension();
  if (ext == ".json") return load_bpe_tokenizer(model_dir_or_file);
  if (ext == ".model") return load_sentencepiece_tokenizer(model_dir_or_file);
  throw Error(detail::concat(model_dir_or_file.string(),
                             ": unknown tokenizer file type (expected a model directory, a "
                             "tokenizer.json or a SentencePiece .model file)"));
}

std::string TokenStreamer::put(int32_t id) {
  window_.push_back(id);
  const std::string text = tokenizer_.decode_bytes(window_, skip_special_tokens_);
  // Nothing new (a special token being skipped, SentencePiece's dropped first space), or the
  // decode is not an extension of what we printed (no tokenizer here does that): wait.
  if (text.size() <= emitted_bytes_) return {};
  const size_t held = incomplete_utf8_suffix_length(text);
  const size_t ready_end = text.size() - held;
  if (ready_end <= emitted_bytes_) return {};
  std::string out =
      utf8_lossy(std::string_view(text).substr(emitted_bytes_, ready_end - emitted_bytes_));
  emitted_bytes_ = ready_end;
  if (held == 0) {
    // All of the window is out: its newest ids become the context of the next decode. They are
    // everything after the previous context, i.e. the chunk just finished.
    size_t context_end = 0;
    // Find the shortest tail of the window whose decode is non-empty, so that the next decode
    // sees the same neighbour as a full decode would (one id is enough for every kind here;
    // more ids only cost time).
    for (size_t n = 1; n <= window_.size(); ++n) {
      std::span<const int32_t> tail(window_.data() + window_.size() - n, n);
      if (!tokenizer_.decode_bytes(tail, skip_special_tokens_).empty() || n == window_.size()) {
        context_end = window_.size() - n;
        break;
      }
    }
    window_.erase(window_.begin(), window_.begin() + static_cast<ptrdiff_t>(context_end));
    emitted_bytes_ = tokenizer_.decode_bytes(window_, skip_special_tokens_).size();
  }
  return out;
}

std::string TokenStreamer::finish() {
  std::string out;
  if (!window_.empty()) {
    const std::string text = tokenizer_.decode_bytes(window_, skip_special_tokens_);
    if (text.size() > emitted_bytes_)
      out = utf8_lossy(std::string_view(text).substr(emitted_bytes_));
  }
  window_.clear();
  emitted_bytes_ = 0;
  return out;
}

}  // namespace subq::model
