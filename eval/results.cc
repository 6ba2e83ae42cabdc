#include "eval/results.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "formats/atomic_file.h"
#include "subq/error.h"

namespace subq::eval {
namespace fs = std::filesystem;
namespace {

// The units file: "row,<unit>,<row as CSV>" lines, then "done,<unit>" once the unit has ended.
constexpr const char* kUnitsFile = "units.csv";
constexpr const char* kSettingsFile = "settings.json";
constexpr const char* kUnitsHeader = "# subq eval: the rows of each finished unit of work";

std::string quote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c == '\n' || c == '\r' ? ' ' : c;
  }
  return out + "\"";
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  SUBQ_CHECK(f, p.string(), ": cannot read");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::vector<std::string> split_csv(const std::string& line, const std::string& where) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  SUBQ_CHECK(!quoted, where, ": unterminated quote in '", line, "'");
  return fields;
}

double parse_number(const std::string& s, const std::string& where) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SUBQ_CHECK(used == s.size() && !s.empty(), where, ": expected a number, got '", s, "'");
  return v;
}

const char* csv_header() {
  return "model,task,length,depth,metric,value,detail";
}

std::string to_csv(const Row& r) {
  char num[64];
  std::string out = quote(r.model) + "," + quote(r.task) + "," + std::to_string(r.length) + ",";
  if (r.depth >= 0) {
    std::snprintf(num, sizeof num, "%.4f", r.depth);
    out += num;
  }
  // %.10g keeps every figure a report shows and round-trips the 0/1 of a trial exactly.
  std::snprintf(num, sizeof num, "%.10g", r.value);
  return out + "," + quote(r.metric) + "," + num + "," + quote(r.detail);
}

Row parse_csv_row(const std::string& line, const std::string& where) {
  const auto f = split_csv(line, where);
  SUBQ_CHECK(f.size() == 7, where, ": expected 7 fields (", csv_header(), "), got ", f.size());
  Row r;
  r.model = f[0];
  r.task = f[1];
  r.length = static_cast<int64_t>(parse_number(f[2], where));
  r.depth = f[3].empty() ? -1 : parse_number(f[3], where);
  r.metric = f[4];
  r.value = parse_number(f[5], where);
  r.detail = f[6];
  return r;
}

ResultStore::ResultStore(fs::path dir, const std::string& settings) : dir_(std::move(dir)) {
  if (dir_.empty()) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  SUBQ_CHECK(!ec && fs::is_directory(dir_), dir_.string(), ": cannot create the output directory (",
             ec.message(), ")");
  const fs::path settings_path = dir_ / kSettingsFile;
  const fs::path units_path = dir_ / kUnitsFile;
  if (fs::exists(settings_path)) {
    const std::string old = read_file(settings_path);
    SUBQ_CHECK(old == settings, dir_.string(), " holds an evaluation with other settings (",
               settings_path.string(), "); give another --out, or delete it to start again");
  } else {
    formats::AtomicFile f(settings_path);
    f.write(settings);
    f.commit();
  }
  // Keep the rows of the units that finished; drop a unit cut short (and a torn last line).
  std::map<std::string, std::vector<Row>> pending;
  if (fs::exists(units_path)) {
    std::istringstream in(read_file(units_path));
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.empty() || line[0] == '#') continue;
      const std::string where = units_path.string() + " line " + std::to_string(n);
      if (line.rfind("done,", 0) == 0) {
        const std::string unit = line.substr(5);
        units_[unit] = std::move(pending[unit]);
        pending.erase(unit);
      } else if (line.rfind("row,", 0) == 0) {
        const size_t comma = line.find(',', 4);
        if (comma == std::string::npos) continue;  // torn
        try {
          pending[line.substr(4, comma - 4)].push_back(
              parse_csv_row(line.substr(comma + 1), where));
        } catch (const Error&) {
          if (in.peek() != EOF) throw;  // only the last line may be torn by a kill
        }
      } else {
        SUBQ_CHECK(in.peek() == EOF, where, ": not a line of subq eval's units file");
      }
    }
  }
  resumed_ = static_cast<int64_t>(units_.size());
  // Rewrite the file with the finished units only, then append to it.
  {
    formats::AtomicFile f(units_path);
    f.write(std::string(kUnitsHeader) + "\n");
    for (const auto& [unit, rows] : units_) {
      for (const Row& r : rows) f.write("row," + unit + "," + to_csv(r) + "\n");
      f.write("done," + unit + "\n");
    }
    f.commit();
  }
  log_ = std::fopen(units_path.c_str(), "a");
  SUBQ_CHECK(log_, units_path.string(), ": cannot open for appending (", std::strerror(errno), ")");
}

ResultStore::~ResultStore() {
  if (log_) std::fclose(log_);
}

const std::vector<Row>& ResultStore::rows(const std::string& unit) const {
  static const std::vector<Row> kNone;
  const auto it = units_.find(unit);
  return it == units_.end() ? kNone : it->second;
}

void ResultStore::add(const std::string& unit, std::vector<Row> rows) {
  SUBQ_CHECK(unit.find_first_of(",\n\r") == std::string::npos,
             "internal: an eval unit name has a comma or newline: ", unit);
  if (log_) {
    std::string text;
    for (const Row& r : rows) text += "row," + unit + "," + to_csv(r) + "\n";
    text += "done," + unit + "\n";
    const bool ok = std::fwrite(text.data(), 1, text.size(), log_) == text.size() &&
                    std::fflush(log_) == 0 && ::fsync(fileno(log_)) == 0;
    SUBQ_CHECK(ok, (dir_ / kUnitsFile).string(), ": cannot write (", std::strerror(errno), ")");
  }
  units_[unit] = std::move(rows);
}

}  // namespace subq::eval
