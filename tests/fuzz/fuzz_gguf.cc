// libFuzzer target: arbitrary bytes as a GGUF file (scripts/fuzz.sh).
//
// Any input must either parse or throw subq::Error; ASan and UBSan watch the parser. A file that
// parses is then used as a model file would be: every tensor of a supported type is dequantized
// (small ones, to keep each run fast), and the llama config and the tokenizer are built from its
// metadata, each of which may only throw subq::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "subq/error.h"

namespace {

using namespace subq::formats;

void dequantize_all(const uint8_t* data, const GgufHeader& h) {
  for (const GgufTensorInfo& t : h.tensors) {
    const auto traits = ggml_type_traits(static_cast<uint32_t>(t.type));
    if (!traits || !traits->supported || t.numel() > (int64_t{1} << 16)) continue;
    std::vector<float> out(static_cast<size_t>(t.numel()));
    dequantize_row(t.type, data + h.data_start + t.offset, out.data(), t.numel());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GgufHeader h;
  try {
    h = parse_gguf(data, size, "fuzz.gguf");
  } catch (const subq::Error&) {
    return 0;  // a corrupt file: the expected outcome for most inputs
  }
  dequantize_all(data, h);
  try {
    gguf_llama_config(h, "fuzz.gguf");
  } catch (const subq::Error&) {
  }
  try {
    gguf_tokenizer(h, "fuzz.gguf");
  } catch (const subq::Error&) {
  }
  return 0;
}
