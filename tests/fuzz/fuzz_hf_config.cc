// libFuzzer target: arbitrary bytes as config.json (scripts/fuzz.sh).
//
// Any input must either parse or throw subq::Error. A config that parses must save to text that
// parses to a config that saves to the same text (saving is deterministic and loses nothing),
// and its expected tensor shapes must be computable without overflow.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "formats/checkpoint.h"
#include "formats/hf_config.h"
#include "subq/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace subq::formats;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  LlamaConfig config;
  try {
    config = parse_llama_config(text, "config.json");
  } catch (const subq::Error&) {
    return 0;  // a bad config: the expected outcome for most inputs
  }
  const std::string saved = llama_config_to_json(config);
  const LlamaConfig again = parse_llama_config(saved, "saved config.json");
  if (llama_config_to_json(again) != saved || again.layers != config.layers) __builtin_trap();
  for (const auto& [name, expected] : llama_expected_tensors(config))
    for (int64_t d : expected.shape)
      if (d <= 0) __builtin_trap();
  return 0;
}
