#include "formats/tokenizer.h"

#include <system_error>

#include "formats/gguf_llama.h"
#include "formats/tokenizer_bpe.h"
#include "formats/tokenizer_bytes.h"
#include "formats/tokenizer_sentencepiece.h"
#include "formats/utf8.h"
#include "subq/error.h"

namespace subq::formats {

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
  if (is_gguf_path(model_dir_or_file)) return load_gguf_tokenizer(model_dir_or_file);
  const fs::path ext = model_dir_or_file.extension();
  if (ext == ".json") return load_bpe_tokenizer(model_dir_or_file);
  if (ext == ".model") return load_sentencepiece_tokenizer(model_dir_or_file);
  throw Error(detail::concat(model_dir_or_file.string(),
                             ": unknown tokenizer file type (expected a model directory, a "
                             "tokenizer.json, a SentencePiece .model or a .gguf file)"));
}

std::string TokenStreamer::put(int32_t id) {
  window_.push_back(id);
  const std::string text = tokenizer_.decode_bytes(window_, skip_special_tokens_);
  const size_t held = incomplete_utf8_suffix_length(text);
  const size_t ready_end = text.size() - held;
  // Nothing new comes out for a skipped special token or SentencePiece's dropped first space.
  std::string out;
  if (ready_end > emitted_bytes_) {
    out = utf8_lossy(std::string_view(text).substr(emitted_bytes_, ready_end - emitted_bytes_));
    emitted_bytes_ = ready_end;
  }
  if (held == 0) {
    // All of the window's text is out. The next decode needs only a neighbour with text before
    // the new ids, so that it reads them as a full decode would (SentencePiece drops the space
    // of the first piece with text, and only of that one): keep the last id whose own text is
    // not empty, or the last id if none has text (only skipped special tokens so far). This
    // keeps put() constant-time however long the generation and however many ids are skipped.
    size_t context = window_.size() - 1;
    for (size_t i = window_.size(); i-- > 0;) {
      if (!tokenizer_.decode_bytes(std::span<const int32_t>(&window_[i], 1), skip_special_tokens_)
               .empty()) {
        context = i;
        break;
      }
    }
    const int32_t context_id = window_[context];
    window_.assign(1, context_id);
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

}  // namespace subq::formats
