#include "train/token_cache.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "formats/atomic_file.h"
#include "subq/error.h"
#include "subq/random.h"

namespace subq::train {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'S', 'U', 'B', 'Q', 'T', 'O', 'K', '1'};
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull, kFnvPrime = 0x100000001b3ull;
// Bounds on what a header may ask for before anything is allocated: far above any corpus
// here (41M tokens, a few thousand documents), far below what would exhaust memory.
constexpr uint64_t kMaxDocuments = uint64_t{1} << 26;
constexpr uint64_t kMaxNameBytes = uint64_t{1} << 30;

struct Header {
  char magic[8];
  uint32_t token_bytes;
  uint32_t vocab_size;
  uint64_t fingerprint;
  int64_t eos_id;
  uint64_t num_documents;
  uint64_t num_tokens;
  uint64_t tokens_fnv;
  uint64_t manifest_fnv;
  uint64_t name_bytes;
};
static_assert(sizeof(Header) == 72);

uint64_t fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

// FNV-1a over 8-byte words: the byte-wise form runs at about 1 GB/s, this one several times
// faster, and the token array is the largest thing a cache holds. The tail is hashed bytewise.
uint64_t fnv_words(const std::byte* data, size_t n) {
  uint64_t h = kFnvOffset;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * kFnvPrime;
  }
  return fnv(h, data + i, n - i);
}

size_t round_up8(size_t n) {
  return (n + 7) / 8 * 8;
}

// A probe text for the fingerprint: what tokenizers disagree on.
constexpr const char* kProbe =
    "The quick brown fox jumps over the lazy dog. 1234567 + 89 = 1234656!\n"
    "  Indented\tline, with \"quotes\" and 'apostrophes', e.g. don't & can't.\n"
    "Café naïve façade — résumé; Ünïcödé. 東京は日本の首都です。 🙂🚀 "
    "Здравствуй, "
    "мир.\n"
    "def f(x):\n    return x ** 2  # a comment\n\n\n<|endoftext|> </s> [INST]";

}  // namespace

std::vector<CorpusDocument> read_manifest(const fs::path& text_dir, const std::string& split) {
  const fs::path path = text_dir / "manifest.tsv";
  SUBQ_CHECK(fs::exists(path), path.string(),
             ": no corpus manifest (run scripts/fetch_corpora.sh, docs/data.md)");
  std::istringstream in(formats::read_file(path));
  std::string line;
  SUBQ_CHECK(std::getline(in, line) && line == "split\tsource\tdoc\tpath\tbytes", path.string(),
             ": expected the header split, source, doc, path, bytes (tab-separated)");
  std::vector<CorpusDocument> docs;
  int64_t row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::string::size_type a = 0;
    for (;;) {
      const auto b = line.find('\t', a);
      f.push_back(line.substr(a, b == std::string::npos ? std::string::npos : b - a));
      if (b == std::string::npos) break;
      a = b + 1;
    }
    SUBQ_CHECK(f.size() == 5, path.string(), ": line ", row,
               ": expected 5 tab-separated fields, got ", f.size());
    SUBQ_CHECK(!f[0].empty() && !f[1].empty() && !f[2].empty() && !f[3].empty(), path.string(),
               ": line ", row, ": empty field");
    const fs::path rel(f[3]);
    bool escapes = rel.is_absolute();
    for (const auto& part : rel) escapes = escapes || part == "..";
    SUBQ_CHECK(!escapes, path.string(), ": line ", row, ": path ", f[3],
               " leaves the text directory");
    if (f[0] == split) docs.push_back({f[0], f[1] + "/" + f[2], text_dir / rel});
  }
  SUBQ_CHECK(!docs.empty(), path.string(), ": no document in split \"", split, "\"");
  return docs;
}

uint64_t tokenizer_fingerprint(const formats::Tokenizer& t) {
  uint64_t h = fnv(kFnvOffset, t.kind().data(), t.kind().size());
  const int64_t header[2] = {t.vocab_size(), t.eos_id().value_or(-1)};
  h = fnv(h, header, sizeof header);
  const std::vector<int32_t> ids = t.encode(kProbe, false);
  return fnv(h, ids.data(), ids.size() * sizeof(int32_t));
}

uint64_t manifest_hash(const std::vector<CorpusDocument>& docs) {
  uint64_t h = kFnvOffset;
  for (const auto& d : docs) {
    std::error_code ec;
    const uint64_t size = fs::file_size(d.path, ec);
    const std::string row = d.name + '\t' + d.path.filename().string() + '\t' +
                            std::to_string(ec ? uint64_t{0} : size) + '\n';
    h = fnv(h, row.data(), row.size());
  }
  return h;
}

TokenCache::TokenCache(const fs::path& path, uint64_t expected_fingerprint) : path_(path) {
  const std::string where = path.string();
  file_ = std::make_unique<formats::MappedFile>(path);
  const size_t size = file_->size();
  const std::byte* base = file_->data();
  SUBQ_CHECK(size >= sizeof(Header), where, ": truncated token cache (", size,
             " bytes; delete it to rebuild)");
  Header h;
  std::memcpy(&h, base, sizeof h);
  SUBQ_CHECK(std::memcmp(h.magic, kMagic, 8) == 0, where, ": not a subq token cache");
  SUBQ_CHECK(h.token_bytes == 2 || h.token_bytes == 4, where, ": token width ", h.token_bytes,
             " (expected 2 or 4)");
  SUBQ_CHECK(h.vocab_size >= 1 && h.vocab_size <= (h.token_bytes == 2 ? 65536u : 1u << 30), where,
             ": vocabulary size ", h.vocab_size, " out of range");
  SUBQ_CHECK(h.num_documents >= 1 && h.num_documents <= kMaxDocuments, where, ": ", h.num_documents,
             " documents (expected 1 to ", kMaxDocuments, ")");
  SUBQ_CHECK(h.name_bytes <= kMaxNameBytes, where, ": name table of ", h.name_bytes, " bytes");
  SUBQ_CHECK(h.num_tokens <= (size - sizeof(Header)) / h.token_bytes, where,
             ": truncated token cache (", h.num_tokens, " tokens cannot fit in ", size,
             " bytes; delete it to rebuild)");
  const size_t offsets_at = sizeof(Header);
  const size_t names_at = offsets_at + (h.num_documents + 1) * 8;
  const size_t tokens_at = round_up8(names_at + h.name_bytes);
  const size_t expected = tokens_at + h.num_tokens * h.token_bytes;
  SUBQ_CHECK(size == expected, where, ": ", size < expected ? "truncated" : "oversized",
             " token cache (", size, " bytes, the header says ", expected,
             "; delete it to rebuild)");
  if (expected_fingerprint != 0)
    SUBQ_CHECK(h.fingerprint == expected_fingerprint, where,
               ": built with another tokenizer (another model's); delete it or use the model it "
               "was built for");
  SUBQ_CHECK(h.eos_id >= 0 && h.eos_id < h.vocab_size, where, ": EOS id ", h.eos_id,
             " outside the vocabulary of ", h.vocab_size);
  fingerprint_ = h.fingerprint;
  manifest_hash_ = h.manifest_fnv;
  vocab_ = static_cast<int32_t>(h.vocab_size);
  eos_ = static_cast<int64_t>(h.eos_id);
  width_ = static_cast<int>(h.token_bytes);
  num_tokens_ = static_cast<int64_t>(h.num_tokens);
  // The tables are 8-byte aligned in the file, and mmap is page-aligned.
  doc_start_ = reinterpret_cast<const uint64_t*>(base + offsets_at);
  SUBQ_CHECK(doc_start_[0] == 0 && doc_start_[h.num_documents] == h.num_tokens, where,
             ": document offsets do not cover the tokens");
  for (uint64_t d = 0; d < h.num_documents; ++d)
    SUBQ_CHECK(doc_start_[d] < doc_start_[d + 1], where, ": document ", d,
               " has a bad offset (empty or out of order)");
  const char* names = reinterpret_cast<const char*>(base + names_at);
  size_t a = 0;
  for (size_t i = 0; i < h.name_bytes; ++i)
    if (names[i] == '\n') {
      names_.emplace_back(names + a, i - a);
      a = i + 1;
    }
  SUBQ_CHECK(a == h.name_bytes && names_.size() == h.num_documents, where,
             ": the name table does not hold one name per document");
  const std::byte* tokens = base + tokens_at;
  SUBQ_CHECK(fnv_words(tokens, h.num_tokens * h.token_bytes) == h.tokens_fnv, where,
             ": corrupt token cache (checksum mismatch; delete it to rebuild)");
  if (width_ == 2)
    u16_ = reinterpret_cast<const uint16_t*>(tokens);
  else
    u32_ = reinterpret_cast<const uint32_t*>(tokens);
  for (int64_t i = 0; i < num_tokens_; ++i)
    SUBQ_CHECK(token(i) < vocab_, where, ": token ", i, " is id ", token(i),
               ", outside the vocabulary of ", vocab_);
}

void TokenCache::copy(int64_t begin, int64_t end, int64_t* out) const {
  SUBQ_CHECK(begin >= 0 && begin <= end && end <= num_tokens_, path_.string(), ": tokens [", begin,
             ", ", end, ") out of range");
  for (int64_t i = begin; i < end; ++i) out[i - begin] = token(i);
}

void build_token_cache(const std::vector<CorpusDocument>& docs, const formats::Tokenizer& tokenizer,
                       const fs::path& out, int threads,
                       const std::function<void(int64_t, int64_t)>& progress) {
  SUBQ_CHECK(!docs.empty(), out.string(), ": no document to tokenize");
  const std::optional<int32_t> eos = tokenizer.eos_id();
  SUBQ_CHECK(eos.has_value(), out.string(),
             ": the tokenizer has no EOS token to separate documents");
  SUBQ_CHECK(docs.size() <= kMaxDocuments, out.string(), ": too many documents (", docs.size(),
             ")");
  // Documents are tokenized in parallel, each into its own vector; the first error wins.
  std::vector<std::vector<int32_t>> ids(docs.size());
  std::atomic<size_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::string error;
  auto work = [&] {
    for (size_t d; (d = next.fetch_add(1)) < docs.size();) {
      try {
        ids[d] = tokenizer.encode(formats::read_file(docs[d].path), false);
        ids[d].push_back(*eos);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        if (error.empty()) error = e.what();
        next.store(docs.size());
      }
      const int64_t n = done.fetch_add(1) + 1;
      if (progress) {
        std::lock_guard<std::mutex> lock(mu);
        progress(n, static_cast<int64_t>(docs.size()));
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::max(threads, 1); ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (!error.empty()) throw Error(error);

  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.vocab_size = static_cast<uint32_t>(tokenizer.vocab_size());
  h.token_bytes = h.vocab_size <= 65536 ? 2 : 4;
  h.fingerprint = tokenizer_fingerprint(tokenizer);
  h.eos_id = *eos;
  h.num_documents = docs.size();
  h.manifest_fnv = manifest_hash(docs);
  std::vector<uint64_t> starts{0};
  std::string names;
  for (size_t d = 0; d < docs.size(); ++d) {
    starts.push_back(starts.back() + ids[d].size());
    SUBQ_CHECK(docs[d].name.find('\n') == std::string::npos, out.string(), ": document name ",
               docs[d].name, " holds a newline");
    names += docs[d].name + '\n';
  }
  h.num_tokens = starts.back();
  h.name_bytes = names.size();
  std::vector<std::byte> tokens(h.num_tokens * h.token_bytes);
  size_t at = 0;
  for (const auto& doc : ids)
    for (const int32_t id : doc) {
      if (h.token_bytes == 2) {
        const uint16_t v = static_cast<uint16_t>(id);
        std::memcpy(tokens.data() + at, &v, 2);
      } else {
        const uint32_t v = static_cast<uint32_t>(id);
        std::memcpy(tokens.data() + at, &v, 4);
      }
      at += h.token_bytes;
    }
  h.tokens_fnv = fnv_words(tokens.data(), tokens.size());

  fs::create_directories(out.parent_path().empty() ? fs::path(".") : out.parent_path());
  formats::AtomicFile f(out);
  f.write(&h, sizeof h);
  f.write(starts.data(), starts.size() * 8);
  f.write(names);
  const char zeros[8] = {};
  f.write(zeros, round_up8(names.size() + sizeof h) - (names.size() + sizeof h));
  f.write(tokens.data(), tokens.size());
  f.commit();
}

fs::path token_cache_path(const fs::path& cache_dir, uint64_t fingerprint,
                          const std::string& split) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fingerprint));
  return cache_dir / hex / (split + ".tok");
}

TokenCache open_or_build_token_cache(const fs::path& text_dir, const fs::path& cache_dir,
                                     const std::string& split, const formats::Tokenizer& tokenizer,
                                     int threads) {
  const std::vector<CorpusDocument> docs = read_manifest(text_dir, split);
  const uint64_t fingerprint = tokenizer_fingerprint(tokenizer);
  const fs::path path = token_cache_path(cache_dir, fingerprint, split);
  if (fs::exists(path)) {
    TokenCache cache(path, fingerprint);
    if (cache.manifest_hash() == manifest_hash(docs)) return cache;
    std::fprintf(stderr, "token cache %s: the text changed since it was built; rebuilding\n",
                 path.string().c_str());
  }
  std::fprintf(stderr, "tokenizing the %s split (%zu documents) into %s\n", split.c_str(),
               docs.size(), path.string().c_str());
  build_token_cache(docs, tokenizer, path, threads, [](int64_t done, int64_t total) {
    if (done == total || done % 50 == 0)
      std::fprintf(stderr, "  %lld/%lld documents\n", static_cast<long long>(done),
                   static_cast<long long>(total));
  });
  return TokenCache(path, fingerprint);
}

PackedSequences::PackedSequences(const TokenCache& cache, int64_t seq_len, uint64_t seed)
    : cache_(cache), seq_len_(seq_len), count_(0), seed_(seed) {
  SUBQ_CHECK(seq_len >= 1, "seq_len must be at least 1");
  count_ = (cache.num_tokens() - 1) / seq_len;
  SUBQ_CHECK(count_ >= 1, cache.path().string(), ": ", cache.num_tokens(),
             " tokens are fewer than one sequence of ", seq_len + 1);
}

void PackedSequences::get(int64_t index, int64_t* inputs, int64_t* labels) const {
  SUBQ_CHECK(index >= 0, "sequence index must be non-negative");
  const int64_t epoch = index / count_;
  if (epoch != epoch_) {
    // Fisher-Yates with the project's SplitMix64 (subq/random.h), seeded by (seed, epoch): the
    // same order on every platform (the standard distributions are implementation-defined).
    order_.resize(static_cast<size_t>(count_));
    for (int64_t i = 0; i < count_; ++i) order_[i] = i;
    Rng rng(Rng(seed_).next_u64() + static_cast<uint64_t>(epoch));
    for (int64_t i = count_ - 1; i > 0; --i) {
      // Modulo bias is below 2^-40 for any count here (< 2^24 sequences).
      const int64_t j = static_cast<int64_t>(rng.next_u64() % static_cast<uint64_t>(i + 1));
      std::swap(order_[i], order_[j]);
    }
    epoch_ = epoch;
  }
  const int64_t start = order_[static_cast<size_t>(index % count_)] * seq_len_;
  cache_.copy(start, start + seq_len_, inputs);
  cache_.copy(start + 1, start + seq_len_ + 1, labels);
}

}  // namespace subq::train
