// The C++ side of gguf_vs_pypi.py: reads GGUF files with subq's reader and writes what it found
// for Python to compare with PyPI's gguf and transformers.
//
//   subq_gguf_tool dequant FILE OUT.safetensors   every tensor dequantized to f32 (torch order)
//   subq_gguf_tool llama FILE OUT_DIR             the llama checkpoint view: config.json and
//                                                 model.safetensors under transformers' names
//   subq_gguf_tool check FILE                     exit 0 if the file parses, else 2 and one line
#include <cstdio>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "formats/safetensors.h"
#include "subq/error.h"

using namespace subq;
using namespace subq::formats;

namespace {

int dequant(const std::string& path, const std::string& out) {
  const auto file = GgufFile::open(path);
  std::vector<Tensor> keep;
  std::vector<TensorToSave> tensors;
  for (const GgufTensorInfo& t : file->header().tensors) {
    keep.push_back(file->to_f32(t));
    tensors.push_back({t.name, DType::kF32, t.shape(), keep.back().data()});
  }
  save_safetensors(out, tensors);
  return 0;
}

int llama(const std::string& path, const std::string& out) {
  const Checkpoint c = load_gguf_checkpoint(path);
  validate_checkpoint_tensors(c, llama_expected_tensors(c.config));
  std::vector<Tensor> keep;
  std::vector<TensorToSave> tensors;
  for (const auto& [name, t] : c.tensors) {
    keep.push_back(t.to_f32());
    tensors.push_back({name, DType::kF32, t.shape(), keep.back().data()});
  }
  save_checkpoint(out, c.config, tensors);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  try {
    if (a.size() == 3 && a[0] == "dequant") return dequant(a[1], a[2]);
    if (a.size() == 3 && a[0] == "llama") return llama(a[1], a[2]);
    if (a.size() == 2 && a[0] == "check") {
      GgufFile::open(a[1]);
      return 0;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  std::fprintf(stderr,
               "usage: subq_gguf_tool dequant FILE OUT | llama FILE OUT_DIR | check FILE\n");
  return 2;
}
