// safetensors: round trips of every dtype, deterministic and atomic writes, and one corrupt file
// per validation rule (each error must name the file and the problem).
#include "formats/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "tests/formats/checkpoint_test_util.h"

namespace subq::formats {
namespace {

using testing::expect_error;
using testing::ScratchDir;

// An 8-byte length, the header text as given (no padding) and `data_bytes` zero bytes.
std::string raw_file(const std::string& header, size_t data_bytes = 0) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  return s + header + std::string(data_bytes, '\0');
}

// Writes `bytes` to a file and expects opening it to fail with a message naming the file and
// containing `problem`; the in-memory parser must say the same.
void expect_corrupt(const std::string& bytes, const std::string& problem) {
  ScratchDir dir;
  const auto path = dir / "model.safetensors";
  testing::write_bytes(path, bytes);
  expect_error([&] { SafetensorsFile::open(path); }, {path.string(), problem});
  expect_error([&] { parse_safetensors(bytes.data(), bytes.size(), "mem.safetensors"); },
               {"mem.safetensors", problem});
}

// "{" + inner + "}", without the operator+ chain that trips GCC 12's -Wrestrict false positive.
std::string obj(const std::string& inner) {
  std::string s = "{";
  s += inner;
  s += '}';
  return s;
}

std::string tensor_json(const std::string& name, const std::string& dtype, const std::string& shape,
                        uint64_t begin, uint64_t end) {
  // detail::concat rather than operator+ chains, which trip GCC 12's -Wrestrict false positive.
  return detail::concat('"', name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape,
                        ",\"data_offsets\":[", begin, ",", end, "]}");
}

TEST(Safetensors, RoundTripsEveryDtypeBitExactly) {
  std::vector<float> f32 = {1.5f,  -2.25f, 0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            1e-40f};
  std::vector<double> f64 = {3.141592653589793, -1e300};
  std::vector<uint16_t> bf16 = {0x3f80, 0xc000, 0x7f80, 0x0001};
  std::vector<uint16_t> f16 = {0x3c00, 0xfbff, 0x0001, 0x7c00, 0x8000, 0x3555};
  std::vector<int32_t> i32 = {-7, 2147483647};
  std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), 42, 0};
  float scalar = 7.0f;
  const std::vector<TensorToSave> tensors = {
      {"a.f32", DType::kF32, {2, 3}, f32.data()}, {"b.f64", DType::kF64, {2}, f64.data()},
      {"c.bf16", DType::kBF16, {4}, bf16.data()}, {"d.f16", DType::kF16, {3, 1, 2}, f16.data()},
      {"e.i32", DType::kI32, {2}, i32.data()},    {"f.i64", DType::kI64, {3}, i64.data()},
      {"scalar", DType::kF32, {}, &scalar},       {"empty", DType::kF32, {0, 5}, nullptr},
  };
  ScratchDir dir;
  const auto path = dir / "all.safetensors";
  save_safetensors(path, tensors, {std::nullopt, {{"format", "pt"}, {"note", "\"quoted\" é"}}});
  auto file = SafetensorsFile::open(path);
  ASSERT_EQ(file->tensors().size(), tensors.size());
  for (const TensorToSave& t : tensors) {
    const SafetensorsEntry& e = file->entry(t.name);
    EXPECT_EQ(e.dtype, t.dtype) << t.name;
    EXPECT_EQ(e.shape, t.shape) << t.name;
    if (e.nbytes() > 0) {
      EXPECT_EQ(std::memcmp(file->data(e), t.data, e.nbytes()), 0) << t.name;
    }
    const TensorView v = file->view(t.name);
    EXPECT_EQ(v.sizes(), t.shape);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % dtype_size(t.dtype), 0u) << t.name;
  }
  EXPECT_EQ(file->metadata().at("note"), "\"quoted\" é");
  EXPECT_EQ(file->entry("scalar").numel(), 1);
  EXPECT_EQ(file->entry("empty").nbytes(), 0u);
  EXPECT_FLOAT_EQ(file->to_f32("c.bf16").data_as<float>()[1], -2.0f);
  EXPECT_FLOAT_EQ(file->to_f32("d.f16").data_as<float>()[0], 1.0f);
  EXPECT_EQ(file->to_f32("a.f32").data_as<float>()[1], -2.25f);
  expect_error([&] { file->to_f32("e.i32"); }, {path.string(), "e.i32", "not a float dtype"});
  expect_error([&] { file->entry("nope"); }, {path.string(), "no tensor 'nope'"});
}

TEST(Safetensors, ConvertsFloatTensorsToTheStorageDtype) {
  std::vector<float> values = {1.0f, 1.00390625f, -3.3f, 65504.0f, 1e-8f, 70000.0f};
  std::vector<int32_t> ids = {1, 2};
  for (DType to : {DType::kF32, DType::kBF16, DType::kF16}) {
    SafetensorsWriteOptions options;
    options.float_dtype = to;
    const std::string bytes = serialize_safetensors(
        {{"w", DType::kF32, {6}, values.data()}, {"ids", DType::kI32, {2}, ids.data()}}, options);
    const SafetensorsHeader h = parse_safetensors(bytes.data(), bytes.size(), "mem");
    const SafetensorsEntry& w = *h.find("w");
    EXPECT_EQ(w.dtype, to);
    EXPECT_EQ(h.find("ids")->dtype, DType::kI32);  // integers are never converted
    const char* data = bytes.data() + h.data_start + w.begin;
    for (size_t i = 0; i < values.size(); ++i) {
      float got;
      if (to == DType::kF32) {
        std::memcpy(&got, data + 4 * i, 4);
      } else {
        uint16_t bits;
        std::memcpy(&bits, data + 2 * i, 2);
        got = to == DType::kBF16 ? bf16_to_f32(bits) : f16_to_f32(bits);
      }
      EXPECT_EQ(got, round_to(to, values[i])) << dtype_name(to) << " " << i;
    }
  }
}

TEST(Safetensors, WritesDeterministicallyWithAPaddedHeader) {
  std::vector<float> a = {1, 2, 3};
  std::vector<uint16_t> b = {1, 2, 3};
  std::vector<double> c = {4};
  const std::vector<TensorToSave> t1 = {{"z", DType::kF32, {3}, a.data()},
                                        {"y", DType::kBF16, {3}, b.data()},
                                        {"x", DType::kF64, {1}, c.data()}};
  const std::vector<TensorToSave> t2 = {t1[2], t1[0], t1[1]};  // another order, same file
  const std::string s1 = serialize_safetensors(t1, {std::nullopt, {{"k", "v"}}});
  const std::string s2 = serialize_safetensors(t2, {std::nullopt, {{"k", "v"}}});
  EXPECT_EQ(s1, s2);
  uint64_t n;
  std::memcpy(&n, s1.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  // Reference layout: metadata first, then larger elements first (f64, f32, bf16).
  const std::string header = s1.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"k\":\"v\"},\"x\":", 0), 0u) << header;
  EXPECT_LT(header.find("\"z\""), header.find("\"y\""));
  // A file read back and written again is the same file.
  ScratchDir dir;
  save_safetensors(dir / "a.safetensors", t1, {std::nullopt, {{"k", "v"}}});
  EXPECT_EQ(testing::read_bytes(dir / "a.safetensors"), s1);
  auto f = SafetensorsFile::open(dir / "a.safetensors");
  std::vector<TensorToSave> again;
  for (const auto& e : f->tensors()) again.push_back({e.name, e.dtype, e.shape, f->data(e)});
  EXPECT_EQ(serialize_safetensors(again, {std::nullopt, f->metadata()}), s1);
}

TEST(Safetensors, AtomicWriteLeavesNoTemporaryAndKeepsTheOldFileOnFailure) {
  ScratchDir dir;
  const auto path = dir / "model.safetensors";
  std::vector<float> a = {1};
  save_safetensors(path, {{"a", DType::kF32, {1}, a.data()}});
  const std::string before = testing::read_bytes(path);
  EXPECT_EQ(testing::count_temp_files(dir.path()), 0);
  expect_error(
      [&] {
        save_safetensors(path,
                         {{"a", DType::kF32, {1}, a.data()}, {"a", DType::kF32, {1}, a.data()}});
      },
      {path.string(), "tensor 'a' given twice"});
  EXPECT_EQ(testing::read_bytes(path), before);
  EXPECT_EQ(testing::count_temp_files(dir.path()), 0);
  expect_error([&] { save_safetensors(dir / "no_such_dir" / "x.safetensors", {}); },
               {"no_such_dir", "cannot create temporary file"});
  expect_error(
      [&] {
        save_safetensors(path, {{"__metadata__", DType::kF32, {1}, a.data()}});
      },
      {path.string(), "cannot be named __metadata__"});
  expect_error(
      [&] {
        save_safetensors(path, {{"n", DType::kF32, {-1}, a.data()}});
      },
      {path.string(), "negative or overflows"});
  expect_error(
      [&] {
        save_safetensors(path, {{"n", DType::kF32, {2}, nullptr}});
      },
      {path.string(), "no data"});
  expect_error(
      [&] {
        save_safetensors(path, {}, {DType::kI32, {}});
      },
      {path.string(), "storage dtype must be a float dtype"});
  EXPECT_EQ(testing::read_bytes(path), before);
  EXPECT_EQ(testing::count_temp_files(dir.path()), 0);
}

TEST(Safetensors, AnEmptyFileWithNoTensorsIsValid) {
  const std::string bytes = serialize_safetensors({});
  const SafetensorsHeader h = parse_safetensors(bytes.data(), bytes.size(), "mem");
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_EQ(bytes.size(), 16u);  // "{}" padded to 8
}

TEST(Safetensors, ViewsNeedAlignmentAndRankButCopiesDoNot) {
  // A header of odd length (no padding, as some writers do): the F32 data starts at offset 51.
  const std::string header = obj(tensor_json("w", "F32", "[2]", 0, 8));
  std::string bytes = raw_file(header, 8);
  const float values[2] = {1.5f, -4.0f};
  std::memcpy(&bytes[8 + header.size()], values, 8);
  ScratchDir dir;
  const auto path = dir / "odd.safetensors";
  testing::write_bytes(path, bytes);
  auto f = SafetensorsFile::open(path);
  if ((8 + header.size()) % 4 != 0) {
    expect_error([&] { f->view("w"); }, {path.string(), "'w'", "not aligned"});
  }
  Tensor t = f->to_f32("w");
  EXPECT_EQ(t.data_as<float>()[0], 1.5f);
  EXPECT_EQ(t.data_as<float>()[1], -4.0f);

  const std::string deep =
      raw_file(obj(tensor_json("d", "F32", "[1,1,1,1,1,1,1]", 0, 4)) + "  ", 4);
  const auto deep_path = dir / "deep.safetensors";
  testing::write_bytes(deep_path, deep);
  auto g = SafetensorsFile::open(deep_path);
  expect_error([&] { g->view("d"); }, {deep_path.string(), "rank 7"});
}

// --- one test per validation rule -------------------------------------------------------------

TEST(SafetensorsCorrupt, FileShorterThanTheLength) {
  expect_corrupt("", "shorter than the 8-byte header length");
  expect_corrupt("\x02\0\0", "shorter than the 8-byte header length");
}

TEST(SafetensorsCorrupt, HeaderLengthPastTheEndOfTheFile) {
  std::string bytes = raw_file("{}");
  bytes[0] = 3;
  expect_corrupt(bytes, "header length 3 runs past the end of the file (10 bytes)");
}

TEST(SafetensorsCorrupt, HeaderLengthAboveTheCap) {
  std::string bytes = raw_file("{}");
  const uint64_t n = kMaxSafetensorsHeaderBytes + 1;
  std::memcpy(&bytes[0], &n, 8);
  expect_corrupt(bytes, "exceeds the limit of 100000000 bytes");
  std::memset(&bytes[0], 0xff, 8);
  expect_corrupt(bytes, "exceeds the limit");
}

TEST(SafetensorsCorrupt, HeaderNotUtf8) {
  expect_corrupt(raw_file("{\"a\xff\":{}}"), "invalid JSON");
  expect_corrupt(raw_file("{\"a\":{\"dtype\":\"\xc3\x28\"}}"), "invalid JSON");
}

TEST(SafetensorsCorrupt, HeaderNotJson) {
  expect_corrupt(raw_file("{\"a\":"), "invalid JSON");
  expect_corrupt(raw_file(std::string("{}\0", 3)), "invalid JSON");
}

TEST(SafetensorsCorrupt, HeaderNestedTooDeeply) {
  // nlohmann-json copies and dumps recursively: deep nesting must stop at the parser.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":" + deep + "}}"),
                 "nested deeper than 64 levels");
  const std::string ok = std::string(60, '[') + std::string(60, ']');
  expect_corrupt(
      raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[" + ok + "],\"data_offsets\":[0,4]}}", 4),
      "shape entries must be non-negative integers, got [[[[[[");
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  expect_corrupt(raw_file("[1,2]   "), "header must be a JSON object, got array");
  expect_corrupt(raw_file("\"x\""), "header must be a JSON object, got string");
}

TEST(SafetensorsCorrupt, EntryNotAnObject) {
  expect_corrupt(raw_file("{\"w\":[1]}"), "tensor 'w': expected an object");
}

TEST(SafetensorsCorrupt, EntryMissingAField) {
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}"),
                 "tensor 'w': missing field 'data_offsets'");
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4),
                 "tensor 'w': missing field 'shape'");
  expect_corrupt(raw_file("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                 "tensor 'w': missing field 'dtype'");
}

TEST(SafetensorsCorrupt, EntryFieldsOfTheWrongJsonType) {
  expect_corrupt(raw_file("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                 "tensor 'w': dtype must be a string, got integer");
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4),
                 "tensor 'w': shape must be an array, got integer");
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4),
                 "tensor 'w': data_offsets must be an array [begin, end]");
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4),
                 "tensor 'w': data_offsets must be an array [begin, end]");
  expect_corrupt(
      raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4),
      "tensor 'w': data_offsets must be non-negative integers");
  expect_corrupt(raw_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4),
                 "tensor 'w': data_offsets must be non-negative integers");
}

TEST(SafetensorsCorrupt, MetadataNotAMapOfStrings) {
  expect_corrupt(raw_file("{\"__metadata__\":[]}"), "__metadata__ must be an object of strings");
  expect_corrupt(raw_file("{\"__metadata__\":{\"k\":1}}"), "__metadata__ 'k' must be a string");
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  expect_corrupt(raw_file(obj(tensor_json("w", "F33", "[1]", 0, 4)), 4),
                 "tensor 'w': unknown dtype 'F33'");
}

TEST(SafetensorsCorrupt, UnsupportedDtype) {
  for (const char* dt : {"BOOL", "U8", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2"})
    expect_corrupt(raw_file(obj(tensor_json("w", dt, "[1]", 0, 1)), 1),
                   std::string("tensor 'w': unsupported dtype ") + dt);
}

TEST(SafetensorsCorrupt, NegativeOrNonIntegerShape) {
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[-1]", 0, 4)), 4),
                 "tensor 'w': shape entries must be non-negative integers, got -1");
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[2.5]", 0, 4)), 4),
                 "tensor 'w': shape entries must be non-negative integers, got 2.5");
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[\"1\"]", 0, 4)), 4),
                 "tensor 'w': shape entries must be non-negative integers");
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[18446744073709551615]", 0, 4)), 4),
                 "tensor 'w': shape entries must be non-negative integers");
}

TEST(SafetensorsCorrupt, NumelOverflow) {
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[4294967296,4294967296]", 0, 4)), 4),
                 "tensor 'w': shape [4294967296, 4294967296] of dtype F32 overflows");
  expect_corrupt(raw_file(obj(tensor_json("w", "F64", "[9223372036854775807]", 0, 4)), 4),
                 "overflows");
}

TEST(SafetensorsCorrupt, OffsetsOutOfTheDataSection) {
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[2]", 0, 8)), 4),
                 "tensor 'w': data_offsets [0, 8] out of the data section (4 bytes)");
  expect_corrupt(
      raw_file(
          obj(tensor_json("w", "F32", "[1]", 18446744073709551611ull, 18446744073709551615ull)), 4),
      "data_offsets must be non-negative integers");
}

TEST(SafetensorsCorrupt, EndBeforeBegin) {
  expect_corrupt(raw_file(obj(tensor_json("w", "F32", "[1]", 8, 4)), 8),
                 "tensor 'w': data_offsets [8, 4] end before begin");
}

TEST(SafetensorsCorrupt, ByteSizeNotMatchingDtypeAndShape) {
  expect_corrupt(raw_file(obj(tensor_json("model.norm.weight", "F32", "[4096]", 0, 12)), 12),
                 "tensor 'model.norm.weight': data_offsets [0, 12] hold 12 bytes, but dtype F32 "
                 "and shape [4096] need 16384");
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  expect_corrupt(raw_file(obj(tensor_json("a", "F32", "[2]", 0, 8) + "," +
                              tensor_json("b", "F32", "[2]", 4, 12)),
                          12),
                 "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]");
  expect_corrupt(raw_file(obj(tensor_json("a", "F32", "[2]", 0, 8) + "," +
                              tensor_json("b", "F32", "[2]", 0, 8)),
                          8),
                 "overlap tensor 'a'");
}

TEST(SafetensorsCorrupt, GapsInTheDataSection) {
  expect_corrupt(raw_file(obj(tensor_json("a", "F32", "[1]", 0, 4) + "," +
                              tensor_json("b", "F32", "[1]", 8, 12)),
                          12),
                 "gap of 4 bytes in the data section at offset 4 (before tensor 'b')");
  expect_corrupt(raw_file(obj(tensor_json("a", "F32", "[1]", 4, 8)), 8),
                 "gap of 4 bytes in the data section at offset 0");
}

TEST(SafetensorsCorrupt, DataSectionNotFullyCovered) {
  expect_corrupt(raw_file(obj(tensor_json("a", "F32", "[1]", 0, 4)), 6),
                 "the data section has 6 bytes but the tensors cover only 4");
  expect_corrupt(raw_file("{}", 1), "the data section has 1 bytes but the tensors cover only 0");
}

TEST(SafetensorsCorrupt, DuplicateTensorNames) {
  expect_corrupt(raw_file(obj(tensor_json("a", "F32", "[1]", 0, 4) + "," +
                              tensor_json("a", "F32", "[1]", 4, 8)),
                          8),
                 "duplicate key 'a'");
  expect_corrupt(raw_file("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],"
                          "\"data_offsets\":[0,4]}}",
                          4),
                 "duplicate key 'dtype'");
}

TEST(SafetensorsCorrupt, MissingFileOrDirectory) {
  ScratchDir dir;
  expect_error([&] { SafetensorsFile::open(dir / "absent.safetensors"); },
               {"absent.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile::open(dir.path()); },
               {dir.path().string(), "not a regular file"});
}

}  // namespace
}  // namespace subq::formats
