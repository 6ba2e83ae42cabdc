// subq_tokenize_tool TOKENIZER INPUT.json
//
// The subq side of the Python comparisons. TOKENIZER is a model directory or a tokenizer file
// (load_tokenizer); INPUT.json is {"texts": [...], "id_lists": [[...], ...]}. Prints one JSON
// object: the tokenizer's kind, vocab_size, bos and eos, then for each text its ids without
// and with special tokens and their decodes, and for each id list its decodes, both the whole
// decode and the concatenation of a TokenStreamer's output.
// A subq::Error prints "error: <message>" and exits with status 1.
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "formats/tokenizer.h"
#include "subq/error.h"

namespace {

using json = nlohmann::json;
using subq::formats::Tokenizer;

std::string streamed(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip) {
  subq::formats::TokenStreamer streamer(tokenizer, skip);
  std::string out;
  for (const int32_t id : ids) out += streamer.put(id);
  return out + streamer.finish();
}

json decodes(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  return {{"decoded", tokenizer.decode(ids, /*skip_special_tokens=*/true)},
          {"decoded_keep_special", tokenizer.decode(ids, false)},
          {"streamed", streamed(tokenizer, ids, true)},
          {"streamed_keep_special", streamed(tokenizer, ids, false)}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: subq_tokenize_tool TOKENIZER INPUT.json\n";
    return 2;
  }
  try {
    const auto tokenizer = subq::formats::load_tokenizer(argv[1]);
    std::ifstream in(argv[2]);
    const json input = json::parse(in);
    json out = {{"kind", tokenizer->kind()},
                {"vocab_size", tokenizer->vocab_size()},
                {"bos", tokenizer->bos_id() ? json(*tokenizer->bos_id()) : json()},
                {"eos", tokenizer->eos_id() ? json(*tokenizer->eos_id()) : json()},
                {"texts", json::array()},
                {"id_lists", json::array()}};
    for (const json& text : input.value("texts", json::array())) {
      const std::vector<int32_t> ids = tokenizer->encode(text.get<std::string>(), false);
      json result = decodes(*tokenizer, ids);
      result["ids"] = ids;
      result["ids_special"] = tokenizer->encode(text.get<std::string>(), true);
      out["texts"].push_back(std::move(result));
    }
    for (const json& ids : input.value("id_lists", json::array())) {
      out["id_lists"].push_back(decodes(*tokenizer, ids.get<std::vector<int32_t>>()));
    }
    std::cout << out.dump() << "\n";
  } catch (const subq::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const json::exception& e) {
    std::cerr << "error: " << argv[2] << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
