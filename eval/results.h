// The rows an evaluation produces, and where they are kept so that a long evaluation resumes
// where it stopped (docs/eval.md).
//
// Every task reports rows of one schema, `model,task,length,depth,metric,value,detail`: the
// issue's six columns, then `detail` (the trial number of a retrieval trial, the document of a
// perplexity window) so that per-trial and per-document rows can be told apart.
//
// Work is done in units (one trial, one perplexity window, one speed length). With an output
// directory, each unit's rows are appended to DIR/units.csv as soon as the unit ends, followed
// by a line that marks it done; a unit without that line (the process was killed in the middle
// of it) is dropped when the directory is opened again and run again.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace subq::eval {

struct Row {
  std::string model, task;
  int64_t length = 0;
  double depth = -1;  // in [0, 1]; < 0: not applicable (an empty field in CSV)
  std::string metric;
  double value = 0;
  std::string detail;
};

// "model,task,length,depth,metric,value,detail"
const char* csv_header();
// One CSV line (no newline); fields with commas or quotes are quoted.
std::string to_csv(const Row& row);
// Parses a line written by to_csv; throws subq::Error naming `where` on a malformed one.
Row parse_csv_row(const std::string& line, const std::string& where);

// The fields of one CSV line (RFC 4180 quoting, no embedded newline), and a number field;
// both throw subq::Error naming `where`.
std::vector<std::string> split_csv(const std::string& line, const std::string& where);
double parse_number(const std::string& field, const std::string& where);

class ResultStore {
 public:
  // dir empty: rows are kept in memory only. Otherwise DIR is created if needed; if it holds an
  // evaluation (DIR/settings.json) with other settings, that is an error naming both, since
  // mixing their rows would report neither. `settings` is a canonical description of
  // everything the rows depend on (models, task, lengths, trials, template, seed).
  ResultStore(std::filesystem::path dir, const std::string& settings);
  ~ResultStore();
  ResultStore(const ResultStore&) = delete;
  ResultStore& operator=(const ResultStore&) = delete;

  bool done(const std::string& unit) const { return units_.count(unit) != 0; }
  // The rows of a finished unit (empty if it is not done).
  const std::vector<Row>& rows(const std::string& unit) const;
  // Records a finished unit; with a directory, appends and flushes it before returning.
  void add(const std::string& unit, std::vector<Row> rows);
  // Units that were already done when the store was opened.
  int64_t resumed_units() const { return resumed_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::FILE* log_ = nullptr;
  std::map<std::string, std::vector<Row>> units_;
  int64_t resumed_ = 0;
};

}  // namespace subq::eval
