// The token cache (train/token_cache.h): what is written is what is read, a damaged or foreign
// cache is refused with a message naming it, and packing is deterministic under a seed.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>

#include "formats/atomic_file.h"
#include "subq/error.h"
#include "train/token_cache.h"

namespace subq::train {
namespace {

namespace fs = std::filesystem;

// A text directory with a manifest of three training documents and one validation one, and
// the built-in byte-level tokenizer (ids = bytes, EOS = 257).
struct Corpus {
  fs::path dir;
  std::unique_ptr<formats::Tokenizer> tok;
  Corpus() {
    dir = fs::temp_directory_path() / ("subq_token_cache_" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "train" / "s");
    fs::create_directories(dir / "valid" / "s");
    formats::write_file_atomically(dir / "train/s/a.txt", "abc");
    formats::write_file_atomically(dir / "train/s/b.txt", "hello world");
    formats::write_file_atomically(dir / "train/s/c.txt", "xyz!");
    formats::write_file_atomically(dir / "valid/s/d.txt", "valid text");
    formats::write_file_atomically(dir / "manifest.tsv",
                                   "split\tsource\tdoc\tpath\tbytes\n"
                                   "train\ts\ta\ttrain/s/a.txt\t3\n"
                                   "train\ts\tb\ttrain/s/b.txt\t11\n"
                                   "train\ts\tc\ttrain/s/c.txt\t4\n"
                                   "valid\ts\td\tvalid/s/d.txt\t10\n");
    fs::create_directories(dir / "empty_model");
    tok = formats::load_tokenizer(dir / "empty_model");
  }
  ~Corpus() { fs::remove_all(dir); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenCache, RoundTripsTheDocumentsWithEosBetween) {
  Corpus c;
  ASSERT_EQ(c.tok->kind(), "bytes");
  const auto docs = read_manifest(c.dir, "train");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[1].name, "s/b");
  const fs::path out = c.dir / "cache" / "train.tok";
  build_token_cache(docs, *c.tok, out, 2);
  TokenCache cache(out, tokenizer_fingerprint(*c.tok));
  ASSERT_EQ(cache.num_documents(), 3);
  EXPECT_EQ(cache.num_tokens(), 3 + 1 + 11 + 1 + 4 + 1);
  EXPECT_EQ(cache.document_name(2), "s/c");
  EXPECT_EQ(cache.document_start(1), 4);
  EXPECT_EQ(cache.document_end(1), 16);
  std::vector<int64_t> all(static_cast<size_t>(cache.num_tokens()));
  cache.copy(0, cache.num_tokens(), all.data());
  EXPECT_EQ(all[0], 'a');
  EXPECT_EQ(all[3], 257);  // EOS after "abc"
  EXPECT_EQ(all[4], 'h');
  EXPECT_EQ(all.back(), 257);
  EXPECT_EQ(cache.manifest_hash(), manifest_hash(docs));
}

TEST(TokenCache, RefusesTruncatedCorruptAndForeignCaches) {
  Corpus c;
  const fs::path out = c.dir / "train.tok";
  build_token_cache(read_manifest(c.dir, "train"), *c.tok, out);
  const std::string good = formats::read_file(out);
  const fs::path bad = c.dir / "bad.tok";

  formats::write_file_atomically(bad, good.substr(0, good.size() - 3));
  EXPECT_NE(error_of([&] { TokenCache t(bad); }).find("truncated token cache"), std::string::npos);
  formats::write_file_atomically(bad, good.substr(0, 20));
  EXPECT_NE(error_of([&] { TokenCache t(bad); }).find("truncated"), std::string::npos);

  std::string flipped = good;
  flipped[flipped.size() - 4] ^= 0x01;  // a token byte: the checksum catches it
  formats::write_file_atomically(bad, flipped);
  EXPECT_NE(error_of([&] { TokenCache t(bad); }).find("checksum"), std::string::npos);

  std::string magic = good;
  magic[0] = 'X';
  formats::write_file_atomically(bad, magic);
  EXPECT_NE(error_of([&] { TokenCache t(bad); }).find("not a subq token cache"), std::string::npos);

  const uint64_t other = tokenizer_fingerprint(*c.tok) + 1;
  EXPECT_NE(error_of([&] { TokenCache t(out, other); }).find("another tokenizer"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { TokenCache t(out, tokenizer_fingerprint(*c.tok)); }), "");
}

TEST(TokenCache, ManifestErrorsNameTheFile) {
  Corpus c;
  EXPECT_NE(error_of([&] { read_manifest(c.dir, "heldout"); }).find("no document in split"),
            std::string::npos);
  formats::write_file_atomically(c.dir / "manifest.tsv",
                                 "split\tsource\tdoc\tpath\tbytes\ntrain\ts\ta\t../x.txt\t3\n");
  EXPECT_NE(error_of([&] { read_manifest(c.dir, "train"); }).find("leaves the text directory"),
            std::string::npos);
  formats::write_file_atomically(c.dir / "manifest.tsv", "split,source\n");
  EXPECT_NE(error_of([&] { read_manifest(c.dir, "train"); }).find("manifest.tsv"),
            std::string::npos);
}

TEST(TokenCache, OpenOrBuildRebuildsWhenTheTextChanges) {
  Corpus c;
  const fs::path cache_dir = c.dir / "cache";
  const int64_t n1 = open_or_build_token_cache(c.dir, cache_dir, "valid", *c.tok, 1).num_tokens();
  EXPECT_EQ(n1, 11);
  formats::write_file_atomically(c.dir / "valid/s/d.txt", "longer valid text");
  const int64_t n2 = open_or_build_token_cache(c.dir, cache_dir, "valid", *c.tok, 1).num_tokens();
  EXPECT_EQ(n2, 18);
}

TEST(PackedSequences, EachEpochVisitsEverySequenceOnceInASeededOrder) {
  Corpus c;
  const fs::path out = c.dir / "train.tok";
  build_token_cache(read_manifest(c.dir, "train"), *c.tok, out);
  TokenCache cache(out);
  PackedSequences a(cache, 4, 7), b(cache, 4, 7), other(cache, 4, 8);
  ASSERT_EQ(cache.num_tokens(), 21);
  ASSERT_EQ(a.size(), (21 - 1) / 4);
  std::vector<int64_t> all(21);
  cache.copy(0, 21, all.data());
  std::vector<int> seen(static_cast<size_t>(a.size()), 0);
  bool differs = false;
  for (int64_t i = 0; i < 2 * a.size(); ++i) {
    int64_t in[4], lab[4], in_b[4], lab_b[4], in_o[4], lab_o[4];
    a.get(i, in, lab);
    b.get(i, in_b, lab_b);
    other.get(i, in_o, lab_o);
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(in[k], in_b[k]);
      EXPECT_EQ(lab[k], lab_b[k]);
      if (in[k] != in_o[k]) differs = true;
    }
    // The labels are the inputs shifted by one, at a multiple of seq_len in the stream.
    int64_t start = -1;
    for (int64_t s = 0; s < a.size(); ++s)
      if (std::equal(in, in + 4, all.begin() + s * 4) &&
          std::equal(lab, lab + 4, all.begin() + s * 4 + 1))
        start = s;
    ASSERT_GE(start, 0) << "sequence " << i << " is not a packed window";
    if (i < a.size()) ++seen[static_cast<size_t>(start)];
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  EXPECT_TRUE(differs) << "another seed gave the same order";
}

}  // namespace
}  // namespace subq::train
