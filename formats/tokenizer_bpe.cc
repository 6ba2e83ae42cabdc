// Byte-level BPE from a Hugging Face tokenizer.json. The encode pipeline follows the
// `tokenizers` crate step by step, because ids must match it exactly:
//   1. added tokens are cut out of the raw text (non-normalized ones first, then normalized
//      ones in what is left; leftmost-longest, with their lstrip/rstrip/single_word flags);
//   2. each remaining segment is pre-tokenized (Split regexes, ByteLevel prefix space and
//      GPT-2 regex) into pieces, whose bytes are then spelled in the byte-level alphabet;
//   3. each piece is BPE-merged by merge rank (lowest first, leftmost on ties);
//   4. the post-processor's template adds special tokens (BOS) when asked.
#include "formats/tokenizer_bpe.h"

#include <array>
#include <fstream>
#include <queue>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "formats/atomic_file.h"
#include "formats/strict_json.h"
#include "formats/tokenizer_regex.h"
#include "formats/utf8.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The pattern of ByteLevel's use_regex (GPT-2's pre-tokenizer).
constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's byte-level alphabet: every byte is spelled as one printable character, so that
// vocabulary entries are printable strings. Printable Latin-1 bytes stand for themselves; the
// other 68 bytes map to U+0100 onwards in byte order.
struct ByteLevelAlphabet {
  std::array<std::string, 256> char_of_byte;           // UTF-8 of the character for a byte
  std::unordered_map<char32_t, uint8_t> byte_of_char;  // and back
};

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet = [] {
    ByteLevelAlphabet a;
    char32_t next_unprintable = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t c = printable ? static_cast<char32_t>(b) : next_unprintable++;
      append_utf8(a.char_of_byte[b], c);
      a.byte_of_char[c] = static_cast<uint8_t>(b);
    }
    return a;
  }();
  return alphabet;
}

// The code point at text[i] (valid UTF-8), advancing i past it.
char32_t next_code_point(std::string_view text, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  char32_t c = length == 1 ? lead : lead & (0x3F >> (length - 1));
  for (size_t k = 1; k < length && i + k < text.size(); ++k) c = (c << 6) | (byte(i + k) & 0x3F);
  i += length;
  return c;
}

// What the ByteLevel decoder makes of one token: its bytes if every character is in the
// byte-level alphabet, else the token's own UTF-8 (added tokens like "<|eot_id|> x").
std::string byte_level_decode(std::string_view token) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const auto it = alphabet.byte_of_char.find(next_code_point(token, i));
    if (it == alphabet.byte_of_char.end()) return std::string(token);
    bytes += static_cast<char>(it->second);
  }
  return bytes;
}

// Unicode White_Space, which Rust's char::is_whitespace (lstrip/rstrip) tests.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A piece of the input: either text still to be pre-tokenized, or an added token's id.
struct Segment {
  size_t begin, end;
  int32_t added_id;  // -1 for text
};

// Added tokens of one kind (normalized or not), matched leftmost-longest as the aho-corasick
// automaton in `tokenizers` does. Tokenizers have at most a few hundred added tokens, so
// candidates are bucketed by first byte and tried longest first.
class AddedTokenMatcher {
 public:
  void add(const AddedToken* token) {
    auto& bucket = by_first_byte_[static_cast<uint8_t>(token->content[0])];
    bucket.push_back(token);
    std::stable_sort(bucket.begin(), bucket.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->content.size() > b->content.size();
    });
    empty_ = false;
  }
  bool empty() const { return empty_; }

  // The leftmost, then longest, match at or after `from`.
  std::pair<size_t, const AddedToken*> find(std::string_view text, size_t from) const {
    for (size_t i = from; i < text.size(); ++i) {
      for (const AddedToken* token : by_first_byte_[static_cast<uint8_t>(text[i])]) {
        if (text.substr(i).starts_with(token->content)) return {i, token};
      }
    }
    return {text.size(), nullptr};
  }

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;
  bool empty_ = true;
};

struct PreTokenizerStep {
  std::shared_ptr<const SplitRegex> split;  // Split's pattern, or ByteLevel's when use_regex
  bool byte_level = false;
  bool add_prefix_space = false;
};

class BpeTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_bytes_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < vocab_size() && is_special_[static_cast<size_t>(id)];
  }
  std::string_view kind() const override { return "bpe"; }

 private:
  friend class BpeLoader;

  void split_on_added_tokens(std::string_view text, const AddedTokenMatcher& matcher, size_t offset,
                             std::vector<Segment>& out) const;
  std::vector<std::string> pre_tokenize(std::string_view segment) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  struct Merge {
    uint32_t rank;
    int32_t merged_id;
  };

  std::unordered_map<std::string, int32_t> vocab_;  // the model's, in byte-level spelling
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};  // the id of each single byte, -1 if the vocab lacks it
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  std::vector<std::unique_ptr<AddedToken>> added_tokens_;
  AddedTokenMatcher raw_added_;            // normalized = false: matched in the raw text
  AddedTokenMatcher normalized_added_;     // normalized = true: matched after normalization
  std::unique_ptr<SplitRegex> word_char_;  // the Rust regex crate's Unicode \w, for single_word

  std::vector<PreTokenizerStep> pre_tokenizer_;
  std::vector<int32_t> template_prefix_, template_suffix_;  // around $A when add_special_tokens

  std::vector<std::optional<std::string>> id_bytes_;  // decoded bytes of each id; none = no token
  std::vector<bool> is_special_;
  std::optional<int32_t> bos_, eos_;
};

void BpeTokenizer::split_on_added_tokens(std::string_view text, const AddedTokenMatcher& matcher,
                                         size_t offset, std::vector<Segment>& out) const {
  // AddedVocabulary::find_matches in `tokenizers`, including how the flags move the cut.
  const auto char_before = [&](size_t pos) {
    size_t start = pos - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    return text.substr(start, pos - start);
  };
  const auto char_after = [&](size_t pos) {
    size_t i = pos;
    next_code_point(text, i);
    return text.substr(pos, i - pos);
  };
  size_t done = 0;  // text[0, done) is already in `out`
  size_t search = 0;
  while (true) {
    const auto [start_found, token] = matcher.find(text, search);
    if (token == nullptr) break;
    size_t start = start_found, stop = start_found + token->content.size();
    search = stop;
    if (token->single_word) {
      // Only a match with no word character on either side counts.
      const bool word_before = start > 0 && word_char_->matches_whole(char_before(start));
      const bool word_after = stop < text.size() && word_char_->matches_whole(char_after(stop));
      if (word_before || word_after) continue;
    }
    if (token->lstrip) {
      size_t new_start = start;
      while (new_start > done) {
        const std::string_view c = char_before(new_start);
        size_t i = 0;
        if (!is_white_space(next_code_point(c, i))) break;
        new_start -= c.size();
      }
      start = new_start;
    }
    if (token->rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_white_space(next_code_point(text, i))) break;
        stop = i;
      }
      search = stop;
    }
    if (done < start) out.push_back({offset + done, offset + start, -1});
    out.push_back({offset + start, offset + stop, token->id});
    done = stop;
  }
  if (done < text.size() || (text.empty() && out.empty())) {
    out.push_back({offset + done, offset + text.size(), -1});
  }
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view segment) const {
  std::vector<std::string> pieces{std::string(segment)};
  std::vector<std::string> next;
  for (const PreTokenizerStep& step : pre_tokenizer_) {
    next.clear();
    for (std::string& piece : pieces) {
      if (step.add_prefix_space && !piece.empty() && piece[0] != ' ') piece.insert(0, 1, ' ');
      if (!step.split) {
        if (!piece.empty()) next.push_back(std::move(piece));
        continue;
      }
      // Split with behavior Isolated: the matches and the text between them are all pieces.
      size_t done = 0;
      for (const auto& [begin, end] : step.split->find_all(piece)) {
        if (done < begin) next.push_back(piece.substr(done, begin - done));
        next.push_back(piece.substr(begin, end - begin));
        done = end;
      }
      if (done < piece.size()) next.push_back(piece.substr(done));
    }
    std::swap(pieces, next);
  }
  return pieces;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  if (ignore_merges_) {
    // Llama-3: a piece that is itself a token is that token, whatever the merges would build.
    std::string spelled;
    for (const char b : piece) spelled += alphabet.char_of_byte[static_cast<uint8_t>(b)];
    if (const auto it = vocab_.find(spelled); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // One symbol per byte; bytes missing from the vocabulary become unk (fused if fuse_unk) or,
  // with no unk token, disappear, as in `tokenizers`.
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the merged sequence, -1 at the ends
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  bool last_was_unk = false;
  for (const char b : piece) {
    int32_t id = byte_ids_[static_cast<uint8_t>(b)];
    const bool unk = id < 0;
    if (unk) {
      if (!unk_id_) continue;
      id = *unk_id_;
      if (fuse_unk_ && last_was_unk) continue;
    }
    last_was_unk = unk;
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, false});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // Word::merge_all of `tokenizers`: a min-heap of (rank, position); an entry is stale when
  // the pair at its position no longer merges into the same token.
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[static_cast<size_t>(left)].next;
    if (right < 0) return;
    const auto it = merges_.find(
        pair_key(symbols[static_cast<size_t>(left)].id, symbols[static_cast<size_t>(right)].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.merged_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (left.removed || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (!s.removed) out.push_back(s.id);
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const size_t valid = valid_utf8_prefix_length(text);
  SUBQ_CHECK_ARG(valid == text.size(), "BpeTokenizer::encode", "text", "valid UTF-8",
                 "an invalid byte sequence at byte ", valid);
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = template_prefix_;

  // Raw-text added tokens first, then (the normalizer being the identity) the normalized ones
  // inside what is left, as AddedVocabulary::extract_and_normalize does.
  std::vector<Segment> raw_segments, segments;
  split_on_added_tokens(text, raw_added_, 0, raw_segments);
  for (const Segment& s : raw_segments) {
    if (s.added_id >= 0 || normalized_added_.empty()) {
      segments.push_back(s);
    } else {
      split_on_added_tokens(text.substr(s.begin, s.end - s.begin), normalized_added_, s.begin,
                            segments);
    }
  }
  for (const Segment& s : segments) {
    if (s.added_id >= 0) {
      ids.push_back(s.added_id);
      continue;
    }
    for (const std::string& piece : pre_tokenize(text.substr(s.begin, s.end - s.begin))) {
      encode_piece(piece, ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

std::string BpeTokenizer::decode_bytes(std::span<const int32_t> ids,
                                       bool skip_special_tokens) const {
  check_ids("BpeTokenizer::decode", ids);
  std::string out;
  for (const int32_t id : ids) {
    const auto& bytes = id_bytes_[static_cast<size_t>(id)];
    SUBQ_CHECK(bytes.has_value(), "BpeTokenizer::decode: ids: id ", id,
               " is not in the vocabulary (a gap between its ids)");
    if (skip_special_tokens && is_special_[static_cast<size_t>(id)]) continue;
    out += *bytes;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading: every member is checked; errors read "<file>: <json path>: <problem>".

class BpeLoader {
 public:
  explicit BpeLoader(fs::path file) : file_(std::move(file)) {}

  std::unique_ptr<Tokenizer> load();
  // A parsed document. Without tokenizer_config.json (from_file false), bos and eos are the
  // given ids, checked against the vocabulary.
  std::unique_ptr<Tokenizer> load(const json& root, bool from_file, std::optional<int32_t> bos,
                                  std::optional<int32_t> eos);

 private:
  [[noreturn]] void fail(std::string_view path, std::string_view problem) const {
    throw Error(detail::concat(file_.string(), ": ", path, ": ", problem));
  }
  const json& member(const json& object, const std::string& key, const std::string& path) const;
  bool flag(const json& object, const std::string& key, const std::string& path,
            bool default_value) const;
  std::string string_member(const json& object, const std::string& key,
                            const std::string& path) const;
  int32_t id_value(const json& value, const std::string& path) const;
  std::string type_of(const json& object, const std::string& path) const;

  void load_model(const json& model);
  void load_added_tokens(const json& added);
  void load_pre_tokenizer(const json& pre, const std::string& path);
  void load_post_processor(const json& post, const std::string& path);
  void check_decoder(const json& decoder, const std::string& path) const;
  void load_bos_eos();

  fs::path file_;
  std::unique_ptr<BpeTokenizer> tok_ = std::make_unique<BpeTokenizer>();
  std::vector<std::string> id_tokens_;  // the token string of each model id ("" = none yet)
};

std::string json_kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_float:
      return "a float";
    default:
      return "a number";
  }
}

const json& BpeLoader::member(const json& object, const std::string& key,
                              const std::string& path) const {
  if (!object.is_object()) fail(path, "expected an object, got " + json_kind(object));
  const auto it = object.find(key);
  if (it == object.end()) fail(path, "missing member \"" + key + "\"");
  return *it;
}

bool BpeLoader::flag(const json& object, const std::string& key, const std::string& path,
                     bool default_value) const {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return default_value;
  if (!it->is_boolean()) fail(path + "." + key, "expected a boolean, got " + json_kind(*it));
  return it->get<bool>();
}

std::string BpeLoader::string_member(const json& object, const std::string& key,
                                     const std::string& path) const {
  const json& v = member(object, key, path);
  if (!v.is_string()) fail(path + "." + key, "expected a string, got " + json_kind(v));
  return v.get<std::string>();
}

int32_t BpeLoader::id_value(const json& v, const std::string& path) const {
  if (!v.is_number_integer()) fail(path, "expected an integer id, got " + json_kind(v));
  const int64_t id = v.get<int64_t>();
  if (id < 0 || id >= (int64_t{1} << 30)) {
    fail(path, "id " + std::to_string(id) + " out of range [0, 2^30)");
  }
  return static_cast<int32_t>(id);
}

std::string BpeLoader::type_of(const json& object, const std::string& path) const {
  return string_member(object, "type", path);
}

void BpeLoader::load_model(const json& model) {
  const std::string type = type_of(model, "model");
  if (type != "BPE") fail("model.type", "unsupported model type \"" + type + "\" (supported: BPE)");
  if (!member(model, "dropout", "model").is_null()) {
    fail("model.dropout", "BPE dropout (random merges) is not supported; expected null");
  }
  if (flag(model, "byte_fallback", "model", false)) {
    fail("model.byte_fallback",
         "byte_fallback is not supported (only byte-level BPE, which "
         "needs no fallback)");
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto it = model.find(affix);
    if (it != model.end() && !it->is_null() && *it != "") {
      fail(std::string("model.") + affix, "not supported (byte-level BPE has none); expected null");
    }
  }
  tok_->ignore_merges_ = flag(model, "ignore_merges", "model", false);
  tok_->fuse_unk_ = flag(model, "fuse_unk", "model", false);

  const json& vocab = member(model, "vocab", "model");
  if (!vocab.is_object()) fail("model.vocab", "expected an object, got " + json_kind(vocab));
  for (const auto& [token, id_json] : vocab.items()) {
    const int32_t id = id_value(id_json, "model.vocab[\"" + token + "\"]");
    if (static_cast<size_t>(id) >= id_tokens_.size()) id_tokens_.resize(id + 1);
    if (!id_tokens_[id].empty()) {
      fail("model.vocab", "id " + std::to_string(id) + " is given to both \"" + id_tokens_[id] +
                              "\" and \"" + token + "\"");
    }
    if (token.empty()) fail("model.vocab", "empty token (id " + std::to_string(id) + ")");
    id_tokens_[id] = token;
    tok_->vocab_.emplace(token, id);
  }
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    const auto it = tok_->vocab_.find(alphabet.char_of_byte[b]);
    tok_->byte_ids_[b] = it == tok_->vocab_.end() ? -1 : it->second;
  }

  const json& unk = model.contains("unk_token") ? model["unk_token"] : json();
  if (unk.is_string()) {
    const auto it = tok_->vocab_.find(unk.get<std::string>());
    if (it == tok_->vocab_.end()) {
      fail("model.unk_token", "\"" + unk.get<std::string>() + "\" is not in model.vocab");
    }
    tok_->unk_id_ = it->second;
  } else if (!unk.is_null()) {
    fail("model.unk_token", "expected a string or null, got " + json_kind(unk));
  }

  const json& merges = member(model, "merges", "model");
  if (!merges.is_array()) fail("model.merges", "expected an array, got " + json_kind(merges));
  uint32_t rank = 0;
  for (const json& merge : merges) {
    const std::string path = "model.merges[" + std::to_string(rank) + "]";
    std::string left, right;
    // Older files write "left right", newer ones ["left", "right"] (which allows spaces).
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        fail(path, "expected \"left right\" (two tokens and one space), got \"" + line + "\"");
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail(path, "expected \"left right\" or [\"left\", \"right\"], got " + merge.dump());
    }
    const auto find = [&](const std::string& token) {
      const auto it = tok_->vocab_.find(token);
      if (it == tok_->vocab_.end()) fail(path, "token \"" + token + "\" is not in model.vocab");
      return it->second;
    };
    const int32_t left_id = find(left), right_id = find(right), merged_id = find(left + right);
    // A repeated pair keeps its last rank, as the HashMap in `tokenizers` does.
    tok_->merges_[BpeTokenizer::pair_key(left_id, right_id)] = {rank, merged_id};
    ++rank;
  }
}

void BpeLoader::load_added_tokens(const json& added) {
  if (added.is_null()) return;
  if (!added.is_array()) fail("added_tokens", "expected an array, got " + json_kind(added));
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    auto token = std::make_unique<AddedToken>();
    token->id = id_value(member(added[i], "id", path), path + ".id");
    token->content = string_member(added[i], "content", path);
    if (token->content.empty()) fail(path + ".content", "empty added token");
    token->special = flag(added[i], "special", path, false);
    token->lstrip = flag(added[i], "lstrip", path, false);
    token->rstrip = flag(added[i], "rstrip", path, false);
    token->single_word = flag(added[i], "single_word", path, false);
    token->normalized = flag(added[i], "normalized", path, !token->special);
    if (token->single_word && !tok_->word_char_) {
      // `tokenizers` tests the neighbours of a single_word token with the regex crate's \w.
      tok_->word_char_ = std::make_unique<SplitRegex>(
          R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", "single_word");
    }
    (token->normalized ? tok_->normalized_added_ : tok_->raw_added_).add(token.get());
    tok_->added_tokens_.push_back(std::move(token));
  }
}

void BpeLoader::load_pre_tokenizer(const json& pre, const std::string& path) {
  if (pre.is_null())
    fail(path,
         "no pre-tokenizer: only byte-level BPE (a ByteLevel pre-tokenizer) "
         "is supported");
  const std::string type = type_of(pre, path);
  if (type == "Sequence") {
    const json& steps = member(pre, "pretokenizers", path);
    if (!steps.is_array()) fail(path + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < steps.size(); ++i) {
      load_pre_tokenizer(steps[i], path + ".pretokenizers[" + std::to_string(i) + "]");
    }
    return;
  }
  for (const PreTokenizerStep& step : tok_->pre_tokenizer_) {
    if (step.byte_level) fail(path, "a pre-tokenizer after ByteLevel is not supported");
  }
  PreTokenizerStep step;
  if (type == "ByteLevel") {
    step.byte_level = true;
    step.add_prefix_space = flag(pre, "add_prefix_space", path, true);
    if (flag(pre, "use_regex", path, true)) {
      static const auto gpt2 = std::make_shared<const SplitRegex>(kGpt2SplitPattern, "ByteLevel");
      step.split = gpt2;
    }
  } else if (type == "Split") {
    const json& pattern = member(pre, "pattern", path);
    std::string regex;
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = pattern["Regex"].get<std::string>();
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      regex = SplitRegex::escape(pattern["String"].get<std::string>());
    } else {
      fail(path + ".pattern",
           "expected {\"Regex\": ...} or {\"String\": ...}, got " + pattern.dump());
    }
    const std::string behavior = string_member(pre, "behavior", path);
    if (behavior != "Isolated") {
      fail(path + ".behavior",
           "unsupported Split behavior \"" + behavior + "\" (supported: Isolated)");
    }
    if (flag(pre, "invert", path, false)) fail(path + ".invert", "invert true is not supported");
    step.split =
        std::make_shared<const SplitRegex>(regex, file_.string() + ": " + path + ".pattern");
  } else {
    fail(path + ".type",
         "unsupported pre-tokenizer \"" + type + "\" (supported: ByteLevel, Split, Sequence)");
  }
  tok_->pre_tokenizer_.push_back(std::move(step));
}

void BpeLoader::load_post_processor(const json& post, const std::string& path) {
  if (post.is_null()) return;
  const std::string type = type_of(post, path);
  if (type == "Sequence") {
    const json& steps = member(post, "processors", path);
    if (!steps.is_array()) fail(path + ".processors", "expected an array");
    for (size_t i = 0; i < steps.size(); ++i) {
      load_post_processor(steps[i], path + ".processors[" + std::to_string(i) + "]");
    }
    return;
  }
  if (type == "ByteLevel") return;  // only moves offsets, which we do not report
  if (type != "TemplateProcessing") {
    fail(path + ".type", "unsupported post-processor \"" + type +
                             "\" (supported: ByteLevel, TemplateProcessing, Sequence)");
  }
  if (!tok_->template_prefix_.empty() || !tok_->template_suffix_.empty()) {
    fail(path, "more than one TemplateProcessing");
  }
  const json& special = member(post, "special_tokens", path);
  const json& single = member(post, "single", path);
  if (!single.is_array()) fail(path + ".single", "expected an array, got " + json_kind(single));
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_path = path + ".single[" + std::to_string(i) + "]";
    const json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      const std::string id = string_member(item["Sequence"], "id", item_path + ".Sequence");
      if (id != "A" || seen_sequence) fail(item_path, "a single template has exactly one $A");
      seen_sequence = true;
    } else if (item.is_object() && item.contains("SpecialToken")) {
      const std::string name =
          string_member(item["SpecialToken"], "id", item_path + ".SpecialToken");
      const std::string special_path = path + ".special_tokens[\"" + name + "\"]";
      if (!special.is_object() || !special.contains(name)) fail(special_path, "not defined");
      const json& ids = member(special[name], "ids", special_path);
      if (!ids.is_array()) fail(special_path + ".ids", "expected an array");
      for (const json& id : ids) {
        (seen_sequence ? tok_->template_suffix_ : tok_->template_prefix_)
            .push_back(id_value(id, special_path + ".ids"));
      }
    } else {
      fail(item_path, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  if (!seen_sequence) fail(path + ".single", "no $A in the template");
}

void BpeLoader::check_decoder(const json& decoder, const std::string& path) const {
  if (decoder.is_null()) {
    fail(path, "no decoder: only the ByteLevel decoder (of byte-level BPE) is supported");
  }
  const std::string type = type_of(decoder, path);
  if (type != "ByteLevel") {
    fail(path + ".type", "unsupported decoder \"" + type + "\" (supported: ByteLevel)");
  }
}

void BpeLoader::load_bos_eos() {
  BpeTokenizer& tok = *tok_;
  const auto id_of = [&](const std::string& content) -> std::optional<int32_t> {
    for (const auto& added : tok.added_tokens_) {
      if (added->content == content) return added->id;
    }
    if (const auto it = tok.vocab_.find(content); it != tok.vocab_.end()) return it->second;
    return std::nullopt;
  };
  // Hugging Face keeps bos/eos in tokenizer_config.json (a string, or an AddedToken object).
  const fs::path config_file = file_.parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (fs::exists(config_file, ec)) {
    const json config = parse_json_strict(read_file(config_file), config_file.string());
    if (!config.is_object())
      throw Error(config_file.string() + ": invalid JSON (expected an object)");
    for (const auto& [key, target] :
         {std::pair{"bos_token", &tok.bos_}, {"eos_token", &tok.eos_}}) {
      if (!config.contains(key)) continue;
      const json& v = config[key];
      std::string content;
      if (v.is_string()) {
        content = v.get<std::string>();
      } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        content = v["content"].get<std::string>();
      } else if (v.is_null()) {
        continue;
      } else {
        throw Error(config_file.string() + ": " + key + ": expected a string or an object " +
                    "with \"content\", got " + v.dump());
      }
      *target = id_of(content);
      if (!*target) {
        throw Error(config_file.string() + ": " + key + ": \"" + content + "\" is not a token of " +
                    file_.string());
      }
    }
    return;
  }
  // Without it: BOS is what the template puts first; EOS the first well-known end token.
  if (tok.template_prefix_.size() == 1) tok.bos_ = tok.template_prefix_[0];
  for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "</s>"}) {
    if (const auto id = id_of(name); id && tok.is_special_[static_cast<size_t>(*id)]) {
      tok.eos_ = id;
      break;
    }
  }
}

std::unique_ptr<Tokenizer> BpeLoader::load() {
  std::ifstream in(file_, std::ios::binary);
  if (!in) throw Error(file_.string() + ": cannot open the tokenizer file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  // Strict: nesting is bounded (a deeply nested file would overflow the stack when the document
  // is copied or destroyed), NUL bytes and duplicate keys are refused.
  const json root = parse_json_strict(buffer.str(), file_.string());
  return load(root, /*from_file=*/true, std::nullopt, std::nullopt);
}

std::unique_ptr<Tokenizer> BpeLoader::load(const json& root, bool from_file,
                                           std::optional<int32_t> bos, std::optional<int32_t> eos) {
  if (!root.is_object()) fail("(top level)", "expected an object, got " + json_kind(root));
  // Both change what encode returns; we encode one sequence at a time without either.
  for (const char* unsupported : {"truncation", "padding"}) {
    if (root.contains(unsupported) && !root[unsupported].is_null()) {
      fail(unsupported, "not supported; expected null");
    }
  }
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    fail("normalizer.type", "unsupported normalizer \"" +
                                type_of(root["normalizer"], "normalizer") +
                                "\" (only null is supported)");
  }
  load_model(member(root, "model", "(top level)"));
  load_added_tokens(root.value("added_tokens", json()));
  load_pre_tokenizer(member(root, "pre_tokenizer", "(top level)"), "pre_tokenizer");
  if (tok_->pre_tokenizer_.empty() || !tok_->pre_tokenizer_.back().byte_level) {
    fail("pre_tokenizer", "must end with ByteLevel: only byte-level BPE is supported");
  }
  load_post_processor(root.value("post_processor", json()), "post_processor");
  check_decoder(member(root, "decoder", "(top level)"), "decoder");

  // The id table: model tokens, then added tokens (which win, as in AddedVocabulary).
  size_t size = id_tokens_.size();
  for (const auto& added : tok_->added_tokens_) size = std::max(size, size_t(added->id) + 1);
  tok_->id_bytes_.assign(size, std::nullopt);
  tok_->is_special_.assign(size, false);
  for (size_t id = 0; id < id_tokens_.size(); ++id) {
    if (!id_tokens_[id].empty()) tok_->id_bytes_[id] = byte_level_decode(id_tokens_[id]);
  }
  for (const auto& added : tok_->added_tokens_) {
    tok_->id_bytes_[added->id] = byte_level_decode(added->content);
    tok_->is_special_[added->id] = added->special;
  }
  for (const int32_t id : tok_->template_prefix_) {
    if (static_cast<size_t>(id) >= size || !tok_->id_bytes_[id]) {
      fail("post_processor", "template id " + std::to_string(id) + " is not a token");
    }
  }
  for (const int32_t id : tok_->template_suffix_) {
    if (static_cast<size_t>(id) >= size || !tok_->id_bytes_[id]) {
      fail("post_processor", "template id " + std::to_string(id) + " is not a token");
    }
  }
  if (from_file) {
    load_bos_eos();
  } else {
    for (const auto& [name, id, target] :
         {std::tuple{"bos", bos, &tok_->bos_}, std::tuple{"eos", eos, &tok_->eos_}}) {
      if (id && (*id < 0 || static_cast<size_t>(*id) >= size || !tok_->id_bytes_[*id]))
        fail(name, "id " + std::to_string(*id) + " is not a token");
      *target = id;
    }
  }
  return std::move(tok_);
}

}  // namespace

bool is_byte_level_spelled(std::string_view token) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (size_t i = 0; i < token.size();)
    if (!alphabet.byte_of_char.count(next_code_point(token, i))) return false;
  return true;
}

std::string byte_level_spell(std::string_view bytes) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string out;
  for (const char c : bytes) out += alphabet.char_of_byte[static_cast<uint8_t>(c)];
  return out;
}

std::unique_ptr<Tokenizer> bpe_tokenizer_from_json(const nlohmann::json& root,
                                                   const std::string& source,
                                                   std::optional<int32_t> bos,
                                                   std::optional<int32_t> eos) {
  return BpeLoader(source).load(root, /*from_file=*/false, bos, eos);
}

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::filesystem::path& tokenizer_json) {
  std::error_code ec;
  if (!fs::is_regular_file(tokenizer_json, ec)) {
    throw Error(tokenizer_json.string() + ": no such tokenizer file");
  }
  return BpeLoader(tokenizer_json).load();
}

}  // namespace subq::formats
