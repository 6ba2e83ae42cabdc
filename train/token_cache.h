// The token cache: a corpus split tokenized once with a model's tokenizer, kept on disk and
// memory-mapped, then cut into fixed-length training sequences (docs/data.md).
//
// The text comes from the corpus extractors (corpus/, scripts/fetch_corpora.sh) as one file per
// document, listed in data/text/manifest.tsv (split, source, doc, path, bytes). A cache holds the
// documents of one split, each followed by EOS, as one stream of token ids:
//
//   header (72 bytes): magic "SUBQTOK1", token width (2 or 4 bytes), the tokenizer's
//     fingerprint, vocabulary size, EOS id, document count, token count, FNV-1a of the tokens,
//     FNV-1a of the manifest rows it was built from, bytes of the name table
//   doc_start: u64 [docs + 1]   token index where each document starts; the last is the count
//   names:     the documents' "source/doc" names, each ending in '\n'
//   padding to 8 bytes, then tokens: u16 or u32 [count]
//
// Everything is validated when opened (sizes against the file, offsets, every id against the
// vocabulary, the checksum), so a truncated or corrupt cache is a one-line error naming it, and a
// cache built with another tokenizer is refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/mapped_file.h"
#include "formats/tokenizer.h"

namespace subq::train {

// One document of the manifest: its "source/doc" name and its text file.
struct CorpusDocument {
  std::string split, name;
  std::filesystem::path path;
};

// The rows of `<text_dir>/manifest.tsv` whose split is `split`, in file order. Throws
// subq::Error naming the manifest for a missing file, a bad header or row, a path that leaves
// text_dir, or a split with no document.
std::vector<CorpusDocument> read_manifest(const std::filesystem::path& text_dir,
                                          const std::string& split);

// A fingerprint of a tokenizer: FNV-1a of its kind, vocabulary size, EOS id and the ids it gives
// a fixed probe text (words, numbers, punctuation, whitespace runs, accents, CJK, emoji). Two
// tokenizers that tokenize differently have different fingerprints in practice.
uint64_t tokenizer_fingerprint(const formats::Tokenizer& tokenizer);

class TokenCache {
 public:
  // Opens and validates a cache; `expected_fingerprint` (if not 0) must match the one it was
  // built with.
  explicit TokenCache(const std::filesystem::path& path, uint64_t expected_fingerprint = 0);

  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return static_cast<int64_t>(names_.size()); }
  int64_t token(int64_t i) const { return width_ == 2 ? int64_t{u16_[i]} : int64_t{u32_[i]}; }
  // Tokens [begin, end) of the stream, widened.
  void copy(int64_t begin, int64_t end, int64_t* out) const;
  // Document d: its name and the token range [start, end) (the end includes its EOS).
  const std::string& document_name(int64_t d) const { return names_[d]; }
  int64_t document_start(int64_t d) const { return static_cast<int64_t>(doc_start_[d]); }
  int64_t document_end(int64_t d) const { return static_cast<int64_t>(doc_start_[d + 1]); }
  uint64_t fingerprint() const { return fingerprint_; }
  uint64_t manifest_hash() const { return manifest_hash_; }
  int32_t vocab_size() const { return vocab_; }
  int64_t eos_id() const { return eos_; }  // what ends each document
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::unique_ptr<formats::MappedFile> file_;
  int width_ = 2;
  int32_t vocab_ = 0;
  int64_t eos_ = 0;
  uint64_t fingerprint_ = 0, manifest_hash_ = 0;
  int64_t num_tokens_ = 0;
  const uint64_t* doc_start_ = nullptr;
  const uint16_t* u16_ = nullptr;
  const uint32_t* u32_ = nullptr;
  std::vector<std::string> names_;
};

// FNV-1a of the manifest rows a cache is built from (their names, paths and file sizes): a
// cache whose hash differs was built from other text.
uint64_t manifest_hash(const std::vector<CorpusDocument>& docs);

// Tokenizes `docs` (without BOS, each followed by the tokenizer's EOS) with `threads` workers and
// writes the cache atomically. `progress(done, total)` is called after each document.
void build_token_cache(const std::vector<CorpusDocument>& docs, const formats::Tokenizer& tokenizer,
                       const std::filesystem::path& out, int threads = 1,
                       const std::function<void(int64_t, int64_t)>& progress = nullptr);

// The cache of one split for a tokenizer: `<cache_dir>/<fingerprint>/<split>.tok`, built (with
// a progress line on stderr) when it is missing or was built from other text, opened otherwise.
std::filesystem::path token_cache_path(const std::filesystem::path& cache_dir,
                                       uint64_t tokenizer_fingerprint, const std::string& split);
TokenCache open_or_build_token_cache(const std::filesystem::path& text_dir,
                                     const std::filesystem::path& cache_dir,
                                     const std::string& split, const formats::Tokenizer& tokenizer,
                                     int threads);

// Fixed-length training sequences packed from the stream: sequence i is tokens
// [i*seq_len, i*seq_len + seq_len] (inputs, then the same shifted by one as labels), so that
// documents run on across EOS. Each epoch visits every sequence once, in an order that is a
// pure function of (seed, epoch): batch b of a run is the same after a resume.
class PackedSequences {
 public:
  PackedSequences(const TokenCache& cache, int64_t seq_len, uint64_t seed);
  int64_t size() const { return count_; }
  // The index-th sequence of the run (epochs follow each other): inputs and labels [seq_len].
  void get(int64_t index, int64_t* inputs, int64_t* labels) const;

 private:
  const TokenCache& cache_;
  int64_t seq_len_, count_;
  uint64_t seed_;
  mutable int64_t epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

}  // namespace subq::train
