#include "formats/safetensors.h"

#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <system_error>

#include "formats/atomic_file.h"
#include "formats/strict_json.h"
#include "subq/error.h"

namespace subq::formats {
namespace {

using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";

// Dtypes of the safetensors format that subq has no DType for. Named so that a file holding one
// gets "unsupported dtype U8" rather than the "unknown dtype" of a corrupt header.
constexpr std::string_view kUnsupportedDtypes[] = {
    "BOOL",    "U8",      "I8",      "I16",     "U16",     "U32", "U64",
    "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64",
};

constexpr DType kAllDtypes[] = {DType::kF32, DType::kBF16, DType::kF16,
                                DType::kF64, DType::kI32,  DType::kI64};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void append_u64_le(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// numel * element size, or nullopt when either product overflows.
std::optional<uint64_t> checked_nbytes(const std::vector<int64_t>& shape, DType dt) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / d)
      return std::nullopt;
    n *= static_cast<uint64_t>(d);
  }
  const uint64_t size = dtype_size(dt);
  if (n > std::numeric_limits<uint64_t>::max() / size) return std::nullopt;
  return n * size;
}

// A JSON value that must be a non-negative integer fitting in int64 (shape entries, offsets).
std::optional<uint64_t> as_index(const json& j) {
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return v;
  } else if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(j.get<int64_t>());
  }
  return std::nullopt;
}

SafetensorsEntry parse_entry(const std::string& name, const json& info, std::string_view source) {
  const auto where = [&] { return detail::concat(source, ": tensor '", name, "'"); };
  SUBQ_CHECK(info.is_object(), where(),
             ": expected an object with dtype, shape and data_offsets, got ", json_type_name(info));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    SUBQ_CHECK(info.contains(field), where(), ": missing field '", field, "'");

  SafetensorsEntry e;
  e.name = name;
  const json& dtype = info["dtype"];
  SUBQ_CHECK(dtype.is_string(), where(), ": dtype must be a string, got ", json_type_name(dtype));
  e.dtype = dtype_from_safetensors_name(dtype.get<std::string>(), where());

  const json& shape = info["shape"];
  SUBQ_CHECK(shape.is_array(), where(), ": shape must be an array, got ", json_type_name(shape));
  for (const json& d : shape) {
    const auto v = as_index(d);
    SUBQ_CHECK(v.has_value(), where(), ": shape entries must be non-negative integers, got ",
               json_excerpt(d));
    e.shape.push_back(static_cast<int64_t>(*v));
  }

  const json& offsets = info["data_offsets"];
  SUBQ_CHECK(offsets.is_array() && offsets.size() == 2, where(),
             ": data_offsets must be an array [begin, end], got ", json_excerpt(offsets));
  const auto begin = as_index(offsets[0]), end = as_index(offsets[1]);
  SUBQ_CHECK(begin && end, where(), ": data_offsets must be non-negative integers, got ",
             json_excerpt(offsets));
  e.begin = *begin;
  e.end = *end;
  SUBQ_CHECK(e.end >= e.begin, where(), ": data_offsets [", e.begin, ", ", e.end,
             "] end before begin");

  const auto need = checked_nbytes(e.shape, e.dtype);
  SUBQ_CHECK(need.has_value(), where(), ": shape ", shape_text(e.shape), " of dtype ",
             safetensors_dtype_name(e.dtype), " overflows 64-bit sizes");
  SUBQ_CHECK(e.end - e.begin == *need, where(), ": data_offsets [", e.begin, ", ", e.end, "] hold ",
             e.end - e.begin, " bytes, but dtype ", safetensors_dtype_name(e.dtype), " and shape ",
             shape_text(e.shape), " need ", *need);
  return e;
}

std::map<std::string, std::string> parse_metadata(const json& j, std::string_view source) {
  SUBQ_CHECK(j.is_object(), source, ": __metadata__ must be an object of strings, got ",
             json_type_name(j));
  std::map<std::string, std::string> m;
  for (const auto& [key, value] : j.items()) {
    SUBQ_CHECK(value.is_string(), source, ": __metadata__ '", key, "' must be a string, got ",
               json_type_name(value));
    m.emplace(key, value.get<std::string>());
  }
  return m;
}

// The reference reader's rule: sorted by offset, the tensors tile [0, data_bytes) exactly.
void check_tiling(const std::vector<SafetensorsEntry>& tensors, uint64_t data_bytes,
                  std::string_view source) {
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : tensors) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : by_offset) {
    SUBQ_CHECK(e->end <= data_bytes, source, ": tensor '", e->name, "': data_offsets [", e->begin,
               ", ", e->end, "] out of the data section (", data_bytes, " bytes)");
    SUBQ_CHECK(e->begin >= covered, source, ": tensor '", e->name, "': data_offsets [", e->begin,
               ", ", e->end, "] overlap tensor '", previous ? previous->name : "", "' [",
               previous ? previous->begin : 0, ", ", covered, "]");
    SUBQ_CHECK(e->begin == covered, source, ": gap of ", e->begin - covered,
               " bytes in the data section at offset ", covered, " (before tensor '", e->name,
               "'); tensors must cover the data section exactly");
    covered = e->end;
    previous = e;
  }
  SUBQ_CHECK(covered == data_bytes, source, ": the data section has ", data_bytes,
             " bytes but the tensors cover only ", covered,
             "; tensors must cover the data section exactly");
}

bool has_float_storage(DType dt) {
  return is_float(dt);
}

DType stored_dtype(const TensorToSave& t, const SafetensorsWriteOptions& options) {
  return options.float_dtype && has_float_storage(t.dtype) ? *options.float_dtype : t.dtype;
}

}  // namespace

std::string_view safetensors_dtype_name(DType dt) {
  switch (dt) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF64:
      return "F64";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

DType dtype_from_safetensors_name(std::string_view name, std::string_view context) {
  for (DType dt : kAllDtypes)
    if (name == safetensors_dtype_name(dt)) return dt;
  for (std::string_view unsupported : kUnsupportedDtypes)
    SUBQ_CHECK(name != unsupported, context, ": unsupported dtype ", name,
               " (subq reads F32, BF16, F16, F64, I32 and I64)");
  throw Error(detail::concat(context, ": unknown dtype '", name, "'"));
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const SafetensorsEntry* SafetensorsHeader::find(std::string_view name) const {
  auto it =
      std::lower_bound(tensors.begin(), tensors.end(), name,
                       [](const SafetensorsEntry& e, std::string_view n) { return e.name < n; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

SafetensorsHeader parse_safetensors(const void* data, size_t size, std::string_view source) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  SUBQ_CHECK(size >= 8, source, ": file has ", size,
             " bytes, shorter than the 8-byte header length");
  const uint64_t n = read_u64_le(bytes);
  SUBQ_CHECK(n <= kMaxSafetensorsHeaderBytes, source, ": header length ", n,
             " exceeds the limit of ", kMaxSafetensorsHeaderBytes, " bytes");
  SUBQ_CHECK(n <= size - 8, source, ": header length ", n, " runs past the end of the file (", size,
             " bytes)");

  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  const json root = parse_json_strict(text, detail::concat(source, ": header"));
  SUBQ_CHECK(root.is_object(), source, ": header must be a JSON object, got ",
             json_type_name(root));

  SafetensorsHeader header;
  header.data_start = 8 + n;
  for (const auto& [name, info] : root.items()) {  // sorted by name: std::map underneath
    if (name == kMetadataKey) {
      header.metadata = parse_metadata(info, source);
      continue;
    }
    header.tensors.push_back(parse_entry(name, info, source));
  }
  check_tiling(header.tensors, size - header.data_start, source);
  return header;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = std::make_unique<MappedFile>(path);
  file->base_ = file->mapping_->data();
  file->header_ = parse_safetensors(file->base_, file->mapping_->size(), path.string());
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

const SafetensorsEntry& SafetensorsFile::entry(std::string_view name) const {
  const SafetensorsEntry* e = header_.find(name);
  SUBQ_CHECK(e != nullptr, path_.string(), ": no tensor '", name, "'");
  return *e;
}

TensorView SafetensorsFile::view(std::string_view name) const {
  const SafetensorsEntry& e = entry(name);
  SUBQ_CHECK(e.shape.size() <= static_cast<size_t>(kMaxRank), path_.string(), ": tensor '", name,
             "': rank ", e.shape.size(), " exceeds subq's maximum rank ", kMaxRank);
  const auto address = reinterpret_cast<uintptr_t>(data(e));
  SUBQ_CHECK(address % dtype_size(e.dtype) == 0, path_.string(), ": tensor '", name,
             "': data at file offset ", header_.data_start + e.begin,
             " is not aligned to its element size; use copy() or to_f32()");
  // const_cast: TensorView has no const flavour; the mapping is PROT_READ (see open()).
  return TensorView(const_cast<std::byte*>(data(e)), e.dtype, e.shape);
}

Tensor SafetensorsFile::copy(std::string_view name) const {
  const SafetensorsEntry& e = entry(name);
  SUBQ_CHECK(e.shape.size() <= static_cast<size_t>(kMaxRank), path_.string(), ": tensor '", name,
             "': rank ", e.shape.size(), " exceeds subq's maximum rank ", kMaxRank);
  Tensor t = Tensor::empty(e.shape, e.dtype);
  if (e.nbytes() > 0) std::memcpy(t.data(), data(e), e.nbytes());  // any alignment
  return t;
}

Tensor SafetensorsFile::to_f32(std::string_view name) const {
  const SafetensorsEntry& e = entry(name);
  SUBQ_CHECK(is_float(e.dtype), path_.string(), ": tensor '", name, "': dtype ",
             safetensors_dtype_name(e.dtype), " is not a float dtype");
  Tensor stored = copy(name);
  if (e.dtype == DType::kF32) return stored;
  Tensor out = Tensor::empty(e.shape, DType::kF32);
  convert(stored.data(), e.dtype, out.data(), DType::kF32, static_cast<size_t>(e.numel()));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

uint64_t stored_nbytes(const TensorToSave& t, const SafetensorsWriteOptions& options) {
  const auto n = checked_nbytes(t.shape, stored_dtype(t, options));
  SUBQ_CHECK(n.has_value(), "tensor '", t.name, "': shape ", shape_text(t.shape),
             " is negative or overflows");
  return *n;
}

void write_safetensors(const std::vector<TensorToSave>& tensors,
                       const SafetensorsWriteOptions& options, std::string_view dest,
                       const std::function<void(const void*, size_t)>& sink) {
  if (options.float_dtype)
    SUBQ_CHECK(is_float(*options.float_dtype), dest, ": storage dtype must be a float dtype, got ",
               dtype_name(*options.float_dtype));
  std::set<std::string_view> names;
  for (const TensorToSave& t : tensors) {
    SUBQ_CHECK(t.name != kMetadataKey, dest, ": a tensor cannot be named ", kMetadataKey);
    SUBQ_CHECK(names.insert(t.name).second, dest, ": tensor '", t.name, "' given twice");
    const auto n = checked_nbytes(t.shape, t.dtype);
    SUBQ_CHECK(n.has_value(), dest, ": tensor '", t.name, "': shape ", shape_text(t.shape),
               " is negative or overflows");
    SUBQ_CHECK(*n == 0 || t.data != nullptr, dest, ": tensor '", t.name, "': no data");
  }

  // The reference writer's layout: larger elements first, so every tensor stays aligned to its
  // element size when the header length is a multiple of 8; then by name, for determinism.
  std::vector<const TensorToSave*> order;
  for (const TensorToSave& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [&](auto* a, auto* b) {
    const size_t sa = dtype_size(stored_dtype(*a, options)),
                 sb = dtype_size(stored_dtype(*b, options));
    return sa != sb ? sa > sb : a->name < b->name;
  });

  // Compact JSON as serde_json writes it; nlohmann escapes the strings.
  std::string header = "{";
  if (!options.metadata.empty()) {
    header += json(kMetadataKey).dump() + ":" + json(options.metadata).dump();
  }
  uint64_t offset = 0;
  for (const TensorToSave* t : order) {
    const uint64_t n = stored_nbytes(*t, options);
    if (header.size() > 1) header += ",";
    header += json(t->name).dump() + ":{\"dtype\":\"" +
              std::string(safetensors_dtype_name(stored_dtype(*t, options))) +
              "\",\"shape\":" + json(t->shape).dump() + ",\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + n) + "]}";
    offset += n;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  SUBQ_CHECK(header.size() <= kMaxSafetensorsHeaderBytes, dest, ": header of ", header.size(),
             " bytes exceeds the limit of ", kMaxSafetensorsHeaderBytes);

  std::string prefix;
  append_u64_le(prefix, header.size());
  sink(prefix.data(), prefix.size());
  sink(header.data(), header.size());

  // Conversion goes through a bounded buffer, so saving a large model does not double its memory.
  constexpr size_t kChunkElements = size_t{1} << 16;
  std::vector<std::byte> buffer;
  for (const TensorToSave* t : order) {
    const DType to = stored_dtype(*t, options);
    const size_t numel = static_cast<size_t>(stored_nbytes(*t, options) / dtype_size(to));
    if (to == t->dtype) {
      if (numel > 0) sink(t->data, numel * dtype_size(to));
      continue;
    }
    buffer.resize(std::min(numel, kChunkElements) * dtype_size(to));
    for (size_t i = 0; i < numel; i += kChunkElements) {
      const size_t n = std::min(kChunkElements, numel - i);
      convert(static_cast<const std::byte*>(t->data) + i * dtype_size(t->dtype), t->dtype,
              buffer.data(), to, n);
      sink(buffer.data(), n * dtype_size(to));
    }
  }
}

std::string serialize_safetensors(const std::vector<TensorToSave>& tensors,
                                  const SafetensorsWriteOptions& options) {
  std::string out;
  write_safetensors(tensors, options, "<memory>",
                    [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

void save_safetensors(const std::filesystem::path& path, const std::vector<TensorToSave>& tensors,
                      const SafetensorsWriteOptions& options) {
  AtomicFile file(path);
  write_safetensors(tensors, options, path.string(),
                    [&](const void* p, size_t n) { file.write(p, n); });
  file.commit();
}

}  // namespace subq::formats
