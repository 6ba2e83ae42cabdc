// Unit tests of model/tokenizer*: the byte-level kind, hand-written tokenizer.json files whose
// encodings can be worked out by hand, a SentencePiece model trained here, streaming decode,
// and every kind of bad file. The comparisons with the PyPI packages on trained tokenizers are
// tokenizer_vs_hf.py and tokenizer_vs_sentencepiece.py.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "formats/tokenizer.h"
#include "formats/tokenizer_bytes.h"
#include "formats/utf8.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / ("subq_tok_" + std::string(info->test_suite_name()) + "_" +
                                         info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  fs::path write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
    return path_ / name;
  }

 private:
  fs::path path_;
};

// Expects `f` to throw subq::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no subq::Error thrown";
  } catch (const Error& e) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << part << "\"";
    }
  }
}

std::string stream_all(const Tokenizer& tok, const Ids& ids, bool skip_special,
                       std::vector<std::string>* chunks = nullptr) {
  TokenStreamer streamer(tok, skip_special);
  std::string out;
  for (const int32_t id : ids) {
    const std::string chunk = streamer.put(id);
    EXPECT_TRUE(is_valid_utf8(chunk)) << "chunk is not UTF-8";
    if (chunks) chunks->push_back(chunk);
    out += chunk;
  }
  return out + streamer.finish();
}

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers

TEST(Utf8, IncompleteSuffix) {
  EXPECT_EQ(incomplete_utf8_suffix_length(""), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xE4\xB8"), 2u);      // 世 cut after 2 of 3
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xF0\x9F\x98"), 3u);  // 😀 cut after 3 of 4
  EXPECT_EQ(incomplete_utf8_suffix_length("\xE4\xB8\x96"), 0u);   // complete
  EXPECT_EQ(incomplete_utf8_suffix_length("a\x80"), 0u);          // stray continuation: invalid
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xE0\x80"), 0u);      // overlong: never completes
  EXPECT_EQ(incomplete_utf8_suffix_length("a\xED\xA0"), 0u);      // surrogate: never completes
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("a\xF0\x9F\x98"), "a\xEF\xBF\xBD");        // one U+FFFD for the cut sequence
  EXPECT_EQ(utf8_lossy("\xE0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // two: E0 80 is no prefix
  EXPECT_EQ(utf8_lossy("h\xC3\xA9"), "h\xC3\xA9");
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));
  EXPECT_TRUE(is_valid_utf8("\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));
}

// ---------------------------------------------------------------------------------------------
// Byte-level

TEST(BytesTokenizer, RoundTripAndLayout) {
  BytesTokenizer tok;
  const std::string text = "h\xC3\xA9llo \xF0\x9F\x98\x80 \xE4\xB8\x96\xE7\x95\x8C\n\t\x01";
  const Ids ids = tok.encode(text, false);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], static_cast<uint8_t>(text[i]));
  EXPECT_EQ(tok.decode(ids, true), text);
  const Ids with_bos = tok.encode(text, true);
  EXPECT_EQ(with_bos.front(), 256);
  EXPECT_EQ(with_bos.size(), text.size() + 1);
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.bos_id(), 256);
  EXPECT_EQ(tok.eos_id(), 257);
  EXPECT_EQ(tok.kind(), "bytes");
  EXPECT_TRUE(tok.encode("", false).empty());
  const Ids special = {256, 'h', 'i', 257};
  EXPECT_EQ(tok.decode(special, true), "hi");
  EXPECT_EQ(tok.decode(special, false), "<|bos|>hi<|eos|>");
}

TEST(BytesTokenizer, BadIdsAndBytes) {
  BytesTokenizer tok;
  const Ids bad = {'a', 258};
  expect_error([&] { tok.decode(bad, true); }, {"258", "position 1"});
  const Ids negative = {-1};
  expect_error([&] { tok.decode(negative, true); }, {"-1"});
  // Bytes that are not UTF-8 encode losslessly and decode to U+FFFD.
  EXPECT_EQ(tok.encode("\xFF", false), Ids{255});
  EXPECT_EQ(tok.decode(Ids{255}, true), "\xEF\xBF\xBD");
}

TEST(TokenStreamer, HoldsBackSplitCharacters) {
  BytesTokenizer tok;
  const std::string text = "a\xF0\x9F\x98\x80 \xE4\xB8\x96!";  // a😀 世!
  std::vector<std::string> chunks;
  EXPECT_EQ(stream_all(tok, tok.encode(text, true), true, &chunks), text);
  // BOS prints nothing; the emoji comes out whole with its last byte, the CJK char likewise.
  const std::vector<std::string> expected = {
      "", "a", "", "", "", "\xF0\x9F\x98\x80", " ", "", "", "\xE4\xB8\x96", "!"};
  EXPECT_EQ(chunks, expected);
}

TEST(TokenStreamer, FinishRepairsAnUnfinishedCharacter) {
  BytesTokenizer tok;
  TokenStreamer streamer(tok);
  EXPECT_EQ(streamer.put('x'), "x");
  EXPECT_EQ(streamer.put(0xF0), "");
  EXPECT_EQ(streamer.put(0x9F), "");
  EXPECT_EQ(streamer.finish(), "\xEF\xBF\xBD");
  // And a stray continuation byte comes out at once, repaired, instead of waiting forever.
  EXPECT_EQ(streamer.put(0x80), "\xEF\xBF\xBD");
  EXPECT_EQ(streamer.put('y'), "y");
}

TEST(TokenStreamer, LongRunsOfSkippedTokensStayCheap) {
  BytesTokenizer tok;
  Ids ids(100000, BytesTokenizer::kEos);  // quadratic work would take minutes here
  ids.push_back('a');
  ids.insert(ids.end(), 100000, BytesTokenizer::kEos);
  ids.push_back('b');
  EXPECT_EQ(stream_all(tok, ids, true), "ab");
}

TEST(TokenStreamer, SpecialTokensKeptOrSkipped) {
  BytesTokenizer tok;
  const Ids ids = {256, 'o', 'k', 257};
  EXPECT_EQ(stream_all(tok, ids, true), "ok");
  EXPECT_EQ(stream_all(tok, ids, false), "<|bos|>ok<|eos|>");
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json byte-level BPE, hand-written

// GPT-2's byte-level spelling of one byte.
std::string byte_char(uint8_t b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  char32_t c = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
    }
    c = 256 + n;
  }
  std::string s;
  append_utf8(s, c);
  return s;
}

// A byte-level BPE tokenizer.json: the 256 byte tokens (ids 0..255 in byte order), then the
// merges given (each merged token gets the next id), then added tokens.
json bpe_json(const std::vector<std::pair<std::string, std::string>>& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(static_cast<uint8_t>(b))] = b;
  json merge_list = json::array();
  int next = 256;
  for (const auto& [l, r] : merges) {
    if (!vocab.contains(l + r)) vocab[l + r] = next++;
    merge_list.push_back(json::array({l, r}));
  }
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
}

json added_token(int id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

const std::string kG = "\xC4\xA0";  // "Ġ", the byte-level spelling of a space

TEST(BpeTokenizer, MergesByRank) {
  TempDir dir;
  // "Ġt"+"he" would need "he" first; ranks decide: h e (256), Ġ t (257), Ġt he (258).
  json j = bpe_json({{"h", "e"}, {kG, "t"}, {kG + "t", "he"}, {"l", "l"}});
  const auto tok = load_tokenizer(dir.write("tokenizer.json", j.dump()));
  EXPECT_EQ(tok->kind(), "bpe");
  // " the" -> one token 258; "hello" -> h e l l o with he (256) and ll (259) merged.
  EXPECT_EQ(tok->encode(" the", false), (Ids{258}));
  EXPECT_EQ(tok->encode("hello", false), (Ids{256, 259, 'o'}));
  // GPT-2 regex: "hello the" -> "hello", " the".
  EXPECT_EQ(tok->encode("hello the", false), (Ids{256, 259, 'o', 258}));
  EXPECT_EQ(tok->decode(tok->encode("hello the", false), true), "hello the");
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_TRUE(tok->encode("", true).empty());
}

TEST(BpeTokenizer, LowestRankFirstLeftmostOnTies) {
  TempDir dir;
  // "aaa": pair a a at 0 and at 1 have the same rank: the left one merges -> [aa, a].
  json j = bpe_json({{"a", "a"}, {"b", "a"}, {"ba", "a"}});
  const auto tok = load_tokenizer(dir.write("tokenizer.json", j.dump()));
  EXPECT_EQ(tok->encode("aaa", false), (Ids{256, 'a'}));
  // "baa": a a (rank 0) beats b a (rank 1): [b, aa], and "ba a" never gets its chance.
  EXPECT_EQ(tok->encode("baa", false), (Ids{'b', 256}));
}

TEST(BpeTokenizer, IgnoreMergesTakesWholePieces) {
  TempDir dir;
  // The vocab has "abc" but merges only build "ab"; with ignore_merges the piece is one token.
  json j = bpe_json({{"a", "b"}});
  j["model"]["vocab"]["abc"] = 300;
  auto without = load_tokenizer(dir.write("tokenizer.json", j.dump()));
  EXPECT_EQ(without->encode("abc", false), (Ids{256, 'c'}));
  j["model"]["ignore_merges"] = true;
  auto with = load_tokenizer(dir.write("tokenizer.json", j.dump()));
  EXPECT_EQ(with->encode("abc", false), (Ids{300}));
  EXPECT_EQ(with->encode("abcd", false), (Ids{256, 'c', 'd'}));
}

TEST(BpeTokenizer, SpecialTokensInTextAndTemplate) {
  TempDir dir;
  json j = bpe_json({});
  j["added_tokens"].push_back(added_token(256, "<|begin_of_text|>", true));
  j["added_tokens"].push_back(added_token(257, "<|eot_id|>", true));
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array()},
      {"special_tokens",
       {{"<|begin_of_text|>",
         {{"id", "<|begin_of_text|>"}, {"ids", {256}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
  const auto tok = load_tokenizer(dir.write("tokenizer.json", j.dump()));
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->encode("hi", true), (Ids{256, 'h', 'i'}));
  EXPECT_EQ(tok->encode("a<|eot_id|>b", false), (Ids{'a', 257, 'b'}));
  // Not a special token: "<|eot_id" without the closing "|>".
  EXPECT_EQ(tok->encode("<|eot_id", false).size(), 8u);
  const Ids ids = tok->encode("x<|eot_id|>", true);
  EXPECT_EQ(tok->decode(ids, false), "<|begin_of_text|>x<|eot_id|>");
  EXPECT_EQ(tok->decode(ids, true), "x");
  EXPECT_TRUE(tok->is_special(257));
  EXPECT_FALSE(tok->is_special('x'));
  EXPECT_EQ(stream_all(*tok, ids, true), "x");
  EXPECT_EQ(stream_all(*tok, ids, false), "<|begin_of_text|>x<|eot_id|>");
}

TEST(BpeTokenizer, AddedTokenFlags) {
  TempDir dir;
  json j = bpe_json({});
  json mask = added_token(256, "<mask>", true);
  mask["lstrip"] = true;
  mask["rstrip"] = true;
  json word = added_token(257, "cat", false);
  word["single_word"] = true;
  j["added_tokens"] = json::array({mask, word});
  const auto tok = load_tokenizer(dir.write("tokenizer.json", j.dump()));
  // lstrip/rstrip take the spaces around <mask> into the token.
  EXPECT_EQ(tok->encode("a  <mask> b", false), (Ids{'a', 256, 'b'}));
  // single_word: "cat" alone is the token, inside "cats" or "bobcat" it is not.
  EXPECT_EQ(tok->encode("cat", false), (Ids{257}));
  EXPECT_EQ(tok->encode("a cat.", false), (Ids{'a', ' ', 257, '.'}));  // no lstrip: space kept
  EXPECT_EQ(tok->encode("cats", false), (Ids{'c', 'a', 't', 's'}));
}

TEST(BpeTokenizer, StreamingAcrossBytesOfOneCharacter) {
  TempDir dir;
  // No merges: "é" and "😀" are split into their bytes, one token each.
  const auto tok = load_tokenizer(dir.write("tokenizer.json", bpe_json({}).dump()));
  const std::string text = "caf\xC3\xA9 \xF0\x9F\x98\x80!";
  const Ids ids = tok->encode(text, false);
  ASSERT_EQ(ids.size(), text.size());
  std::vector<std::string> chunks;
  EXPECT_EQ(stream_all(*tok, ids, true, &chunks), text);
  EXPECT_EQ(chunks[3], "");          // first byte of é
  EXPECT_EQ(chunks[4], "\xC3\xA9");  // é whole
  // A decode of only part of a character is repaired, not returned broken.
  EXPECT_EQ(tok->decode(std::span<const int32_t>(ids).first(4), true), "caf\xEF\xBF\xBD");
}

TEST(BpeTokenizer, RejectsInvalidUtf8Text) {
  TempDir dir;
  const auto tok = load_tokenizer(dir.write("tokenizer.json", bpe_json({}).dump()));
  expect_error([&] { tok->encode("ab\xFF", false); }, {"UTF-8", "byte 2"});
}

// Each broken file must give a subq::Error naming the file and the problem.
TEST(BpeTokenizer, BadFiles) {
  TempDir dir;
  const auto expect_bad = [&](const json& j, std::initializer_list<std::string> parts) {
    const fs::path file = dir.write("tokenizer.json", j.dump());
    std::vector<std::string> all(parts);
    all.push_back(file.string());
    try {
      load_tokenizer(file);
      ADD_FAILURE() << "no error for " << *parts.begin();
    } catch (const Error& e) {
      for (const auto& part : all) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
            << "message \"" << e.what() << "\" lacks \"" << part << "\"";
      }
    }
  };
  json j = bpe_json({{"a", "b"}});
  {
    json k = j;
    k["model"]["type"] = "WordPiece";
    expect_bad(k, {"unsupported model type", "WordPiece"});
  }
  {
    json k = j;
    k["pre_tokenizer"] = {{"type", "Whitespace"}};
    expect_bad(k, {"unsupported pre-tokenizer", "Whitespace"});
  }
  {
    json k = j;
    k["normalizer"] = {{"type", "NFC"}};
    expect_bad(k, {"unsupported normalizer", "NFC"});
  }
  {
    json k = j;
    k["decoder"] = {{"type", "WordPiece"}};
    expect_bad(k, {"unsupported decoder", "WordPiece"});
  }
  {
    json k = j;
    k["post_processor"] = {{"type", "RobertaProcessing"}};
    expect_bad(k, {"unsupported post-processor", "RobertaProcessing"});
  }
  {
    json k = j;
    k["model"]["merges"].push_back(json::array({"zz", "q"}));
    expect_bad(k, {"model.merges[1]", "\"zz\" is not in model.vocab"});
  }
  {
    json k = j;
    k["model"]["merges"].push_back("a b c");
    expect_bad(k, {"model.merges[1]", "a b c"});
  }
  {
    json k = j;
    k["model"]["vocab"]["xyz"] = -5;
    expect_bad(k, {"xyz", "-5", "out of range"});
  }
  {
    json k = j;
    k["model"]["vocab"]["xyz"] = 3;
    expect_bad(k, {"id 3 is given to both"});
  }
  {
    json k = j;
    k["model"]["vocab"]["xyz"] = "seven";
    expect_bad(k, {"xyz", "expected an integer id"});
  }
  {
    json k = j;
    k["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"Regex", "\\s+"}}},
                          {"behavior", "Removed"},
                          {"invert", false}};
    expect_bad(k, {"unsupported Split behavior", "Removed"});
  }
  {
    json k = j;
    k["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", "(unclosed"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    expect_bad(k, {"does not compile", "(unclosed"});
  }
  {
    json k = j;
    k["truncation"] = {{"max_length", 512}};
    expect_bad(k, {"truncation", "not supported"});
  }
  {
    json k = j;
    k["model"]["byte_fallback"] = true;
    expect_bad(k, {"byte_fallback"});
  }
  {
    json k = j;
    k["model"]["dropout"] = 0.1;
    expect_bad(k, {"dropout"});
  }
  {
    json k = j;
    k["added_tokens"].push_back(added_token(-3, "<x>", true));
    expect_bad(k, {"added_tokens[0].id", "-3"});
  }
  {
    json k = j;
    k.erase("model");
    expect_bad(k, {"missing member \"model\""});
  }
  {
    json k = j;
    k["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {99999}}, {"tokens", {"<s>"}}}}}}};
    expect_bad(k, {"template id 99999"});
  }
  // Not JSON at all, and JSON of the wrong shape.
  const fs::path broken = dir.write("broken.json", "{\"model\": {\"type\": \"BPE\", ");
  expect_error([&] { load_tokenizer(broken); }, {broken.string(), "invalid JSON"});
  const fs::path array = dir.write("array.json", "[1, 2]");
  expect_error([&] { load_tokenizer(array); }, {array.string(), "expected an object"});
}

TEST(BpeTokenizer, DecodeRejectsIdsOutOfRange) {
  TempDir dir;
  const auto tok = load_tokenizer(dir.write("tokenizer.json", bpe_json({{"a", "b"}}).dump()));
  const Ids bad = {1, 257};
  expect_error([&] { tok->decode(bad, true); }, {"257", "[0, 257)"});
}

TEST(BpeTokenizer, BosEosFromTokenizerConfig) {
  TempDir dir;
  json j = bpe_json({});
  j["added_tokens"].push_back(added_token(256, "<s>", true));
  j["added_tokens"].push_back(added_token(257, "<|endoftext|>", true));
  dir.write("tokenizer.json", j.dump());
  // Without tokenizer_config.json: EOS is the well-known end-of-text token, no BOS.
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), std::nullopt);
  EXPECT_EQ(tok->eos_id(), 257);
  dir.write("tokenizer_config.json",
            R"({"bos_token": "<s>", "eos_token": {"content": "<|endoftext|>"}})");
  tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->eos_id(), 257);
  const fs::path config = dir.write("tokenizer_config.json", R"({"eos_token": "<nope>"})");
  expect_error([&] { load_tokenizer(dir.path()); }, {config.string(), "<nope>"});
}

// ---------------------------------------------------------------------------------------------
// SentencePiece: a small model trained here with libsentencepiece's trainer

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("subq_tok_sp_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    std::ofstream corpus(*dir_ / "corpus.txt");
    const char* lines[] = {"the quick brown fox jumps over the lazy dog",
                           "a tokenizer turns text into ids and back",
                           "streaming decode prints text while the model generates it",
                           "numbers like 12345 and 2024 appear in text too",
                           "caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9"};
    for (int rep = 0; rep < 20; ++rep) {
      for (const char* line : lines) corpus << line << "\n";
    }
    corpus.close();
    const std::string args = "--input=" + (*dir_ / "corpus.txt").string() +
                             " --model_prefix=" + (*dir_ / "sp").string() +
                             " --vocab_size=400 --model_type=bpe --byte_fallback=true"
                             " --character_coverage=1.0 --minloglevel=2";
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    ASSERT_TRUE(status.ok()) << status.ToString();
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static fs::path model() { return *dir_ / "sp.model"; }
  static fs::path* dir_;
};
fs::path* SentencePieceTest::dir_ = nullptr;

TEST_F(SentencePieceTest, EncodeDecodeAndBos) {
  const auto tok = load_tokenizer(model());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 400);
  ASSERT_TRUE(tok->bos_id().has_value());
  ASSERT_TRUE(tok->eos_id().has_value());
  const std::string text = "the lazy fox decodes text";
  const Ids ids = tok->encode(text, false);
  EXPECT_EQ(tok->decode(ids, true), text);
  const Ids with_bos = tok->encode(text, true);
  EXPECT_EQ(with_bos.front(), *tok->bos_id());
  EXPECT_EQ(tok->decode(with_bos, true), text);
  EXPECT_EQ(tok->decode(with_bos, false), "<s>" + text);
  EXPECT_TRUE(tok->is_special(*tok->eos_id()));
  const Ids bad = {400};
  expect_error([&] { tok->decode(bad, true); }, {"400"});
  expect_error([&] { tok->encode("\xC3", false); }, {"UTF-8"});
}

TEST_F(SentencePieceTest, StreamingMatchesDecode) {
  const auto tok = load_tokenizer(model());
  // CJK and emoji are not in the vocabulary: byte fallback splits them over byte pieces.
  const std::string texts[] = {"the quick fox", "  two  spaces  ", "\xE4\xB8\x96\xE7\x95\x8C ok",
                               "emoji \xF0\x9F\x98\x80 here", "caf\xC3\xA9 12345"};
  for (const std::string& text : texts) {
    const Ids ids = tok->encode(text, true);
    EXPECT_EQ(stream_all(*tok, ids, true), tok->decode(ids, true)) << text;
    EXPECT_EQ(stream_all(*tok, ids, false), tok->decode(ids, false)) << text;
  }
  // Random id sequences: whatever the ids, streaming equals decoding (valid UTF-8 only, since
  // the library repairs broken bytes per byte and finish() per sequence).
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    Ids ids(rng() % 12);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % 400);
    const std::string full = tok->decode(ids, true);
    if (full.find("\xEF\xBF\xBD") != std::string::npos) continue;
    EXPECT_EQ(stream_all(*tok, ids, true), full) << "trial " << trial;
  }
}

TEST_F(SentencePieceTest, BadFiles) {
  TempDir dir;
  const fs::path corrupt = dir.write("tokenizer.model", "this is not a protobuf at all");
  expect_error([&] { load_tokenizer(corrupt); }, {corrupt.string()});
  expect_error([&] { load_tokenizer(dir.path()); }, {corrupt.string()});
  std::string bytes;
  {
    std::ifstream in(model(), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const fs::path truncated = dir.write("truncated.model", bytes.substr(0, bytes.size() / 2));
  expect_error([&] { load_tokenizer(truncated); }, {truncated.string()});
  expect_error([&] { load_tokenizer(dir.path() / "missing.model"); }, {"missing.model"});
}

// ---------------------------------------------------------------------------------------------
// Choosing the tokenizer of a model directory

TEST(LoadTokenizer, ChoosesByFilesPresent) {
  TempDir dir;
  EXPECT_EQ(load_tokenizer(dir.path())->kind(), "bytes");
  dir.write("tokenizer.json", bpe_json({}).dump());
  EXPECT_EQ(load_tokenizer(dir.path())->kind(), "bpe");
  expect_error([&] { load_tokenizer(dir.path() / "nope"); }, {"nope", "no such"});
  const fs::path other = dir.write("vocab.txt", "a\nb\n");
  expect_error([&] { load_tokenizer(other); }, {"vocab.txt", "unknown tokenizer file type"});
}

}  // namespace
}  // namespace subq::formats
