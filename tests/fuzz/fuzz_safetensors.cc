// libFuzzer target: arbitrary bytes as a safetensors file (scripts/fuzz.sh).
//
// Any input must either parse or throw subq::Error; ASan and UBSan watch the parser. A file that
// parses must also survive a round trip: written again and parsed again, it describes the same
// tensors with the same bytes (the writer and the reader agree on every valid file).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "formats/safetensors.h"
#include "subq/error.h"

namespace {

using namespace subq::formats;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void round_trip(const uint8_t* data, const SafetensorsHeader& h) {
  std::vector<TensorToSave> tensors;
  for (const SafetensorsEntry& e : h.tensors)
    tensors.push_back({e.name, e.dtype, e.shape, data + h.data_start + e.begin});
  SafetensorsWriteOptions options;
  options.metadata = h.metadata;
  const std::string again = serialize_safetensors(tensors, options);
  const SafetensorsHeader h2 = parse_safetensors(again.data(), again.size(), "round trip");
  check(h2.metadata == h.metadata && h2.tensors.size() == h.tensors.size());
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const SafetensorsEntry &a = h.tensors[i], &b = h2.tensors[i];
    check(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.nbytes() == b.nbytes());
    check(a.nbytes() == 0 || std::memcmp(data + h.data_start + a.begin,
                                         again.data() + h2.data_start + b.begin, a.nbytes()) == 0);
  }
}

// Converts every float tensor to f32 as SafetensorsFile::to_f32 does (copy, then convert).
void convert_all(const uint8_t* data, const SafetensorsHeader& h) {
  for (const SafetensorsEntry& e : h.tensors) {
    if (!subq::is_float(e.dtype) || e.nbytes() == 0) continue;
    std::vector<uint64_t> aligned((e.nbytes() + 7) / 8);
    std::memcpy(aligned.data(), data + h.data_start + e.begin, e.nbytes());
    std::vector<float> out(static_cast<size_t>(e.numel()));
    subq::convert(aligned.data(), e.dtype, out.data(), subq::DType::kF32, out.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const SafetensorsHeader h = parse_safetensors(data, size, "fuzz.safetensors");
    round_trip(data, h);
    convert_all(data, h);
  } catch (const subq::Error&) {
    // A corrupt file: the expected outcome for most inputs.
  }
  return 0;
}
