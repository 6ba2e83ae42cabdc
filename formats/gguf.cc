#include "formats/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "formats/mapped_file.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32

// gguf_type numbers.
enum : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64
};

// The fixed size of a scalar type, or 0 for string and array.
size_t scalar_size(uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
    default:
      return 0;
  }
}

// The smallest number of bytes one element of `type` takes in the file: bounds array counts.
size_t min_size(uint32_t type) {
  if (type == kString) return 8;
  if (type == kArray) return 12;
  return scalar_size(type);
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size, std::string_view source)
      : p_(data), size_(size), source_(source) {}

  template <class... A>
  [[noreturn]] void fail(const A&... a) const {
    throw Error(detail::concat(source_, ": ", a...));
  }
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  void need(size_t n, std::string_view what) const {
    if (n > left())
      fail(what, ": needs ", n, " bytes at offset ", pos_, " but the file has ", left(),
           " left (truncated?)");
  }
  template <class T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(std::string_view what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > left())
      fail(what, ": string of ", n, " bytes at offset ", pos_, " but the file has ", left(),
           " left");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

  GgufValue read_value(uint32_t type, const std::string& key, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case kU8:
        v.value = int64_t{read<uint8_t>(key)};
        break;
      case kI8:
        v.value = int64_t{read<int8_t>(key)};
        break;
      case kU16:
        v.value = int64_t{read<uint16_t>(key)};
        break;
      case kI16:
        v.value = int64_t{read<int16_t>(key)};
        break;
      case kU32:
        v.value = int64_t{read<uint32_t>(key)};
        break;
      case kI32:
        v.value = int64_t{read<int32_t>(key)};
        break;
      case kI64:
        v.value = read<int64_t>(key);
        break;
      case kU64: {
        const uint64_t u = read<uint64_t>(key);
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(key, ": u64 value ", u, " is out of range (above 2^63 - 1)");
        v.value = static_cast<int64_t>(u);
        break;
      }
      case kF32:
        v.value = double{read<float>(key)};
        break;
      case kF64:
        v.value = read<double>(key);
        break;
      case kBool: {
        const uint8_t b = read<uint8_t>(key);
        if (b > 1) fail(key, ": bool value ", int{b}, " is neither 0 nor 1");
        v.value = int64_t{b};
        break;
      }
      case kString:
        v.value = read_string(key);
        break;
      case kArray:
        read_array(v, key, depth);
        break;
      default:
        fail(key, ": unknown value type ", type, " (expected 0..12)");
    }
    return v;
  }

  uint64_t metadata_elements = 0;

 private:
  void read_array(GgufValue& v, const std::string& key, int depth) {
    if (depth >= kMaxGgufArrayDepth)
      fail(key, ": arrays nested deeper than ", kMaxGgufArrayDepth, " levels");
    v.elem_type = read<uint32_t>(key);
    const uint64_t count = read<uint64_t>(key);
    const size_t elem = min_size(v.elem_type);
    if (elem == 0) fail(key, ": unknown array element type ", v.elem_type, " (expected 0..12)");
    if (count > left() / elem)
      fail(key, ": array of ", count, " elements cannot fit in the ", left(),
           " bytes left in the file");
    if (count > kMaxGgufArrayElements)
      fail(key, ": array of ", count, " elements (at most ", kMaxGgufArrayElements, ")");
    metadata_elements += count;
    if (metadata_elements > kMaxGgufMetadataElements)
      fail(key, ": the metadata holds more than ", kMaxGgufMetadataElements, " array elements");
    const size_t n = static_cast<size_t>(count);
    if (v.elem_type == kString) {
      std::vector<std::string> out;
      out.reserve(n);
      for (size_t i = 0; i < n; ++i) out.push_back(read_string(key));
      v.value = std::move(out);
    } else if (v.elem_type == kArray) {
      std::vector<GgufValue> out;
      out.reserve(n);
      for (size_t i = 0; i < n; ++i) out.push_back(read_value(kArray, key, depth + 1));
      v.value = std::move(out);
    } else if (v.elem_type == kF32 || v.elem_type == kF64) {
      std::vector<double> out(n);
      for (size_t i = 0; i < n; ++i)
        out[i] = std::get<double>(read_value(v.elem_type, key, depth).value);
      v.value = std::move(out);
    } else {
      std::vector<int64_t> out(n);
      for (size_t i = 0; i < n; ++i)
        out[i] = std::get<int64_t>(read_value(v.elem_type, key, depth).value);
      v.value = std::move(out);
    }
  }

  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  std::string_view source_;
};

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace

std::string_view gguf_value_type_name(uint32_t type) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                "i32", "f32", "bool", "string", "array",
                                                "u64", "i64", "f64"};
  return type < std::size(kNames) ? kNames[type] : std::string_view("unknown");
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<int64_t> GgufTensorInfo::shape() const {
  return {dims.rbegin(), dims.rend()};
}

const GgufTensorInfo* GgufHeader::find(std::string_view name) const {
  for (const GgufTensorInfo& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufValue* GgufHeader::get(std::string_view key) const {
  const auto it = metadata.find(std::string(key));
  return it == metadata.end() ? nullptr : &it->second;
}

GgufHeader parse_gguf(const void* data, size_t size, std::string_view source) {
  Reader r(static_cast<const uint8_t*>(data), size, source);
  GgufHeader h;
  if (size < 4 || r.read<uint32_t>("magic") != kMagic)
    r.fail("not a GGUF file (the first 4 bytes are not \"GGUF\")");
  h.version = r.read<uint32_t>("version");
  if (h.version != 2 && h.version != 3)
    r.fail("GGUF version ", h.version, " is not supported (expected 2 or 3)");
  const uint64_t n_tensors = r.read<uint64_t>("tensor_count");
  const uint64_t n_kv = r.read<uint64_t>("metadata_kv_count");
  // Each key-value pair takes at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8.
  if (n_kv > r.left() / 13)
    r.fail("metadata_kv_count ", n_kv, " cannot fit in the ", r.left(), " bytes left");
  if (n_tensors > r.left() / 32)
    r.fail("tensor_count ", n_tensors, " cannot fit in the ", r.left(), " bytes left");

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string("metadata key");
    if (key.empty()) r.fail("metadata key ", i, " is empty");
    const uint32_t type = r.read<uint32_t>(key);
    GgufValue v = r.read_value(type, key, 0);
    if (!h.metadata.emplace(key, std::move(v)).second) r.fail(key, ": duplicate metadata key");
  }

  if (const GgufValue* a = h.get("general.alignment")) {
    const auto* n = std::get_if<int64_t>(&a->value);
    if (!n || a->type == kBool || *n <= 0 || *n > (int64_t{1} << 20) || (*n & (*n - 1)) != 0)
      r.fail("general.alignment: expected a power of two up to 2^20");
    h.alignment = static_cast<uint64_t>(*n);
  }

  std::set<std::string> names;
  h.tensors.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.read_string("tensor name");
    const std::string what = "tensor '" + t.name + "'";
    if (!names.insert(t.name).second) r.fail(what, ": duplicate tensor name");
    const uint32_t n_dims = r.read<uint32_t>(what);
    if (n_dims < 1 || n_dims > kMaxGgufDims)
      r.fail(what, ": ", n_dims, " dimensions (expected 1 to ", kMaxGgufDims, ")");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.read<uint64_t>(what);
      // Each dim and the product stay below 2^62: sizes in bytes cannot overflow below.
      if (dim == 0 || dim > (uint64_t{1} << 62) || numel > (uint64_t{1} << 62) / dim)
        r.fail(what, ": dimension ", d, " is ", dim,
               " (expected > 0, and fewer than 2^62 "
               "elements in all)");
      numel *= dim;
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    const uint32_t type = r.read<uint32_t>(what);
    const auto traits = ggml_type_traits(type);
    if (!traits) r.fail(what, ": unknown ggml type ", type);
    t.type = static_cast<GgmlType>(type);
    t.type_name = traits->name;
    if (t.dims[0] % traits->block_size != 0)
      r.fail(what, ": rows of ", t.dims[0], " values are not whole ", traits->name, " blocks of ",
             traits->block_size);
    if (numel / traits->block_size > size / traits->block_bytes)
      r.fail(what, ": ", traits->name, " ", dims_text(t.dims),
             " takes more bytes than the whole "
             "file (",
             size, ")");
    t.nbytes = numel / traits->block_size * traits->block_bytes;
    t.offset = r.read<uint64_t>(what);
    if (t.offset % h.alignment != 0)
      r.fail(what, ": data offset ", t.offset, " is not a multiple of the alignment ", h.alignment);
    h.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end_of_infos = r.pos();
  h.data_start = (end_of_infos + h.alignment - 1) / h.alignment * h.alignment;
  if (!h.tensors.empty() && h.data_start > size)
    r.fail("the data section would start at ", h.data_start, ", past the end of the file (", size,
           " bytes)");
  const uint64_t data_bytes = h.tensors.empty() ? 0 : size - h.data_start;
  // Every tensor inside the data section, and no two overlapping.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : h.tensors) {
    if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset)
      r.fail("tensor '", t.name, "' (", t.type_name, " ", dims_text(t.dims), ", ", t.nbytes,
             " bytes at data offset ", t.offset,
             ") ends past the end of the file (the data "
             "section has ",
             data_bytes, " bytes; truncated?)");
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    if (prev.offset + prev.nbytes > by_offset[i]->offset)
      r.fail("tensors '", prev.name, "' and '", by_offset[i]->name,
             "' overlap in the data section");
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Typed metadata

const GgufValue& GgufMetadata::at(std::string_view key) const {
  const GgufValue* v = header_.get(key);
  SUBQ_CHECK(v != nullptr, source_, ": metadata key ", key, " is missing");
  return *v;
}

void GgufMetadata::fail(std::string_view key, std::string_view what, const GgufValue& v) const {
  std::string got(gguf_value_type_name(v.type));
  if (v.type == kArray) got += std::string(" of ") + std::string(gguf_value_type_name(v.elem_type));
  throw Error(detail::concat(source_, ": ", key, ": expected ", what, ", got ", got));
}

int64_t GgufMetadata::integer(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto* n = std::get_if<int64_t>(&v.value);
  if (!n || v.type == kBool) fail(key, "an integer", v);
  return *n;
}

int64_t GgufMetadata::integer_or(std::string_view key, int64_t fallback) const {
  return has(key) ? integer(key) : fallback;
}

double GgufMetadata::number(std::string_view key) const {
  const GgufValue& v = at(key);
  if (const auto* d = std::get_if<double>(&v.value)) return *d;
  const auto* n = std::get_if<int64_t>(&v.value);
  if (!n || v.type == kBool) fail(key, "a number", v);
  return static_cast<double>(*n);
}

double GgufMetadata::number_or(std::string_view key, double fallback) const {
  return has(key) ? number(key) : fallback;
}

bool GgufMetadata::boolean_or(std::string_view key, bool fallback) const {
  if (!has(key)) return fallback;
  const GgufValue& v = at(key);
  if (v.type != kBool) fail(key, "a bool", v);
  return std::get<int64_t>(v.value) != 0;
}

std::string GgufMetadata::string(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto* s = std::get_if<std::string>(&v.value);
  if (!s) fail(key, "a string", v);
  return *s;
}

std::string GgufMetadata::string_or(std::string_view key, std::string fallback) const {
  return has(key) ? string(key) : fallback;
}

std::vector<std::string> GgufMetadata::strings(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto* s = std::get_if<std::vector<std::string>>(&v.value);
  if (!s) fail(key, "an array of strings", v);
  return *s;
}

std::vector<int64_t> GgufMetadata::integers(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto* s = std::get_if<std::vector<int64_t>>(&v.value);
  if (!s || v.elem_type == kBool) fail(key, "an array of integers", v);
  return *s;
}

std::vector<double> GgufMetadata::numbers(std::string_view key) const {
  const GgufValue& v = at(key);
  const auto* s = std::get_if<std::vector<double>>(&v.value);
  if (!s) fail(key, "an array of floats", v);
  return *s;
}

// ---------------------------------------------------------------------------------------------
// GgufFile

std::shared_ptr<const GgufFile> GgufFile::open(const std::filesystem::path& path) {
  std::shared_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->mapping_ = std::make_unique<MappedFile>(path);
  file->base_ = file->mapping_->data();
  file->header_ = parse_gguf(file->base_, file->mapping_->size(), path.string());
  return file;
}

GgufFile::~GgufFile() = default;

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = header_.find(name);
  SUBQ_CHECK(t != nullptr, path_.string(), ": no tensor '", name, "'");
  return *t;
}

Tensor GgufFile::to_f32(const GgufTensorInfo& t) const {
  const auto traits = ggml_type_traits(static_cast<uint32_t>(t.type));
  SUBQ_CHECK(traits && traits->supported, path_.string(), ": tensor '", t.name, "': type ",
             t.type_name,
             " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, "
             "Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)");
  SUBQ_CHECK(t.dims.size() <= static_cast<size_t>(kMaxRank), path_.string(), ": tensor '", t.name,
             "': rank ", t.dims.size(), " is above ", kMaxRank);
  Tensor out = Tensor::empty(t.shape(), DType::kF32);
  dequantize_row(t.type, data(t), static_cast<float*>(out.data()), t.numel());
  return out;
}

}  // namespace subq::formats
