#include "formats/tokenizer_sentencepiece.h"

#include <sentencepiece_processor.h>

#include "formats/utf8.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

namespace fs = std::filesystem;

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const fs::path& file) : file_(file.string()) {
    std::error_code ec;
    SUBQ_CHECK(fs::is_regular_file(file, ec), file_, ": no such SentencePiece model file");
    const sentencepiece::util::Status status = processor_.Load(file_);
    SUBQ_CHECK(status.ok(), file_, ": not a valid SentencePiece model: ", status.ToString());
    init();
  }
  // From a serialized ModelProto; `source` names it in errors.
  SentencePieceTokenizer(std::string_view serialized, std::string source)
      : file_(std::move(source)) {
    const sentencepiece::util::Status status =
        processor_.LoadFromSerializedProto(std::string(serialized));
    SUBQ_CHECK(status.ok(), file_, ": not a valid SentencePiece model: ", status.ToString());
    init();
  }

 private:
  void init() {
    vocab_size_ = processor_.GetPieceSize();
    SUBQ_CHECK(vocab_size_ > 0, file_, ": the SentencePiece model has no pieces");
    const auto id_or_none = [&](int id) -> std::optional<int32_t> {
      return id >= 0 && id < vocab_size_ ? std::optional<int32_t>(id) : std::nullopt;
    };
    bos_ = id_or_none(processor_.bos_id());
    eos_ = id_or_none(processor_.eos_id());
    byte_value_.assign(static_cast<size_t>(vocab_size_), -1);
    for (int id = 0; id < vocab_size_; ++id) {
      // Byte pieces are spelled "<0xAB>".
      if (!processor_.IsByte(id)) continue;
      const std::string& piece = processor_.IdToPiece(id);
      SUBQ_CHECK(piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>', file_,
                 ": byte piece ", id, " is spelled \"", piece, "\", expected <0xHH>");
      byte_value_[static_cast<size_t>(id)] = std::stoi(piece.substr(3, 2), nullptr, 16);
    }
  }

 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    const size_t valid = valid_utf8_prefix_length(text);
    SUBQ_CHECK_ARG(valid == text.size(), "SentencePieceTokenizer::encode", "text", "valid UTF-8",
                   "an invalid byte sequence at byte ", valid);
    std::vector<int> pieces;
    const sentencepiece::util::Status status = processor_.Encode(text, &pieces);
    SUBQ_CHECK(status.ok(), file_, ": encode failed: ", status.ToString());
    std::vector<int32_t> ids;
    ids.reserve(pieces.size() + 1);
    if (add_special_tokens && bos_) ids.push_back(*bos_);
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    check_ids("SentencePieceTokenizer::decode", ids);
    return decode_unchecked(ids, skip_special_tokens);
  }

  // The library's decode repairs a byte run that is not UTF-8 to U+FFFD, including one that
  // the next tokens would complete; for streaming, such a trailing run is kept as raw bytes.
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    check_ids("SentencePieceTokenizer::decode", ids);
    size_t run = ids.size();  // start of the trailing run of byte pieces
    while (run > 0 && byte_value_[static_cast<size_t>(ids[run - 1])] >= 0) --run;
    std::string tail;
    for (size_t i = run; i < ids.size(); ++i) {
      tail += static_cast<char>(byte_value_[static_cast<size_t>(ids[i])]);
    }
    const size_t incomplete = incomplete_utf8_suffix_length(tail);
    if (incomplete == 0) return decode_unchecked(ids, skip_special_tokens);
    std::string text = decode_unchecked(ids.first(ids.size() - incomplete), skip_special_tokens);
    text.append(tail, tail.size() - incomplete, incomplete);
    return text;
  }

  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < vocab_size_ && processor_.IsControl(id);
  }
  std::string_view kind() const override { return "sentencepiece"; }

 private:
  std::string decode_unchecked(std::span<const int32_t> ids, bool skip_special_tokens) const {
    if (skip_special_tokens) return run_decode(ids);
    // Control pieces decode to nothing in the library: decode between them, and write the
    // control pieces themselves in between. The library applies its leading-space rule to the
    // first piece only, so later runs are decoded behind a neighbour and that part removed.
    std::string out;
    size_t begin = 0;
    for (size_t i = 0; i <= ids.size(); ++i) {
      if (i < ids.size() && !processor_.IsControl(ids[i])) continue;
      if (i > begin) out += decode_after(ids, begin, i);
      if (i < ids.size()) out += processor_.IdToPiece(ids[i]);
      begin = i + 1;
    }
    return out;
  }

  // The text of ids[begin, end) as it reads inside the whole sequence: decode it together
  // with everything before it and keep the part after the text of what precedes.
  std::string decode_after(std::span<const int32_t> ids, size_t begin, size_t end) const {
    if (begin == 0) return run_decode(ids.first(end));
    const std::string before = run_decode(ids.first(begin));
    std::string both = run_decode(ids.first(end));
    return both.substr(std::min(before.size(), both.size()));
  }

  std::string run_decode(std::span<const int32_t> ids) const {
    std::string text;
    const sentencepiece::util::Status status =
        processor_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    SUBQ_CHECK(status.ok(), file_, ": decode failed: ", status.ToString());
    return text;
  }

  std::string file_;
  sentencepiece::SentencePieceProcessor processor_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_, eos_;
  std::vector<int> byte_value_;  // the byte of each byte piece, -1 for other pieces
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& model_file) {
  return std::make_unique<SentencePieceTokenizer>(model_file);
}

std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_proto(std::string_view serialized,
                                                              const std::string& source) {
  return std::make_unique<SentencePieceTokenizer>(serialized, source);
}

}  // namespace subq::formats
