#include "eval/report.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "formats/atomic_file.h"
#include "subq/error.h"

namespace subq::eval {
namespace fs = std::filesystem;
namespace {

// The aggregate a table and a plot show for a task, and how it reads.
struct Measure {
  const char* task;
  const char* metric;
  const char* detail;  // nullptr: any
  const char* label;
  bool percent;
};
constexpr Measure kMeasures[] = {
    {"passkey", "accuracy", nullptr, "passkey accuracy (%)", true},
    {"niah", "accuracy", nullptr, "NIAH accuracy (%)", true},
    {"ppl", "ppl", "all", "perplexity", false},
    {"mqar", "accuracy", nullptr, "MQAR accuracy (%)", true},
    {"speed", "prefill_s", nullptr, "prefill (s)", false},
    {"speed", "prefill_tok_s", nullptr, "prefill (tok/s)", false},
    {"speed", "peak_rss_mib", nullptr, "peak RSS (MiB)", false},
    {"speed", "decode_ms_per_token", nullptr, "decode (ms/token)", false},
    {"speed", "cache_mib", nullptr, "cache or state (MiB)", false},
};

bool matches(const Row& r, const Measure& m) {
  return r.task == m.task && r.metric == m.metric && (!m.detail || r.detail == m.detail);
}

std::vector<std::string> models_of(const std::vector<Row>& rows) {
  std::vector<std::string> out;
  for (const Row& r : rows)
    if (std::find(out.begin(), out.end(), r.model) == out.end()) out.push_back(r.model);
  return out;
}

// (model, length) -> value of a measure.
std::map<std::pair<std::string, int64_t>, double> values(const std::vector<Row>& rows,
                                                         const Measure& m) {
  std::map<std::pair<std::string, int64_t>, double> out;
  for (const Row& r : rows)
    if (matches(r, m)) out[{r.model, r.length}] = r.value;
  return out;
}

std::string cell(double v, bool percent) {
  char buf[32];
  if (percent)
    std::snprintf(buf, sizeof buf, "%.0f%%", 100 * v);
  else if (std::fabs(v) >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string pad(const std::string& s, size_t w) {
  return s.size() >= w ? s : std::string(w - s.size(), ' ') + s;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

void write_text(const fs::path& p, const std::string& text) {
  formats::AtomicFile f(p);
  f.write(text);
  f.commit();
}

// Runs `program script` in `dir` without a shell; true on exit status 0.
bool run_gnuplot(const std::string& program, const fs::path& dir, const std::string& script) {
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    if (chdir(dir.c_str()) != 0) _exit(127);
    // gnuplot's warnings (a missing font, an empty series) are not ours to print.
    if (!freopen("/dev/null", "w", stderr)) _exit(127);
    execlp(program.c_str(), program.c_str(), script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// One plot: a measure against length, a line per model; the speed plot has three panels.
struct Plot {
  std::string name, title;
  std::vector<const Measure*> panels;
};

std::vector<Plot> plots_for(const std::vector<Row>& rows) {
  auto find = [](const char* task, const char* metric) -> const Measure* {
    for (const Measure& m : kMeasures)
      if (std::string(m.task) == task && std::string(m.metric) == metric) return &m;
    return nullptr;
  };
  std::set<std::string> tasks;
  for (const Row& r : rows) tasks.insert(r.task);
  std::vector<Plot> out;
  if (tasks.count("passkey"))
    out.push_back({"passkey", "Passkey retrieval", {find("passkey", "accuracy")}});
  if (tasks.count("niah"))
    out.push_back({"niah", "Single-needle NIAH", {find("niah", "accuracy")}});
  if (tasks.count("ppl"))
    out.push_back({"ppl", "Perplexity on held-out text", {find("ppl", "ppl")}});
  if (tasks.count("mqar")) out.push_back({"mqar", "MQAR (Zoology)", {find("mqar", "accuracy")}});
  if (tasks.count("speed"))
    out.push_back({"speed",
                   "Speed and memory",
                   {find("speed", "prefill_s"), find("speed", "peak_rss_mib"),
                    find("speed", "decode_ms_per_token")}});
  return out;
}

// has_data[i * panels + k]: model i has points in panel k (gnuplot stops at an empty series).
std::string plot_script(const Plot& p, const std::vector<std::string>& models,
                        const std::vector<bool>& has_data) {
  std::string s = "# Drawn by subq eval; run `gnuplot " + p.name + ".gp` here to redraw.\n";
  for (const char* term : {"svg size 960,460 dynamic noenhanced font 'sans,11'",
                           "pngcairo size 960,460 noenhanced font 'sans,10'"}) {
    const bool svg = std::string(term).rfind("svg", 0) == 0;
    s += std::string("set terminal ") + term + "\nset output '" + p.name + (svg ? ".svg" : ".png") +
         "'\n";
    s += "set multiplot layout 1," + std::to_string(p.panels.size()) + " title \"" + p.title +
         "\"\n";
    for (size_t k = 0; k < p.panels.size(); ++k) {
      const Measure& m = *p.panels[k];
      s += "set logscale x 2\nset xlabel 'context length (tokens)'\nset ylabel '" +
           std::string(m.label) + "'\nset key below\nset grid\n";
      // Accuracy on a fixed 0-100 scale; speed and memory grow by orders of magnitude.
      s += m.percent ? "set yrange [0:105]\nunset logscale y\n"
                     : (p.name == "speed" ? "set autoscale y\nset logscale y\n"
                                          : "set autoscale y\nunset logscale y\n");
      std::string series;
      for (size_t i = 0; i < models.size(); ++i) {
        const size_t block = i * p.panels.size() + k;
        if (!has_data[block]) continue;
        series += std::string(series.empty() ? "" : ", ") + "'" + p.name + ".dat' index " +
                  std::to_string(block) + " using 1:2 with linespoints lw 2 title '" + models[i] +
                  "'";
      }
      if (series.empty())  // gnuplot refuses a plot with no point: an empty frame that says so
        s += "unset logscale y\nset yrange [0:1]\nset label 1 'no data' at graph 0.5,0.5 center\n"
             "plot -1 notitle\nunset label 1\n";
      else
        s += "plot " + series + "\n";
    }
    s += "unset multiplot\n";
  }
  return s;
}

}  // namespace

std::string format_csv(const std::vector<Row>& rows) {
  std::string out = std::string(csv_header()) + "\n";
  for (const Row& r : rows) out += to_csv(r) + "\n";
  return out;
}

namespace {

// Rows of cells, right-aligned in columns two spaces apart.
std::string align(const std::vector<std::vector<std::string>>& table) {
  std::vector<size_t> width;
  for (const auto& line : table)
    for (size_t c = 0; c < line.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], line[c].size());
    }
  std::string out;
  for (const auto& line : table) {
    for (size_t c = 0; c < line.size(); ++c) out += (c ? "  " : "") + pad(line[c], width[c]);
    out += "\n";
  }
  return out;
}

}  // namespace

std::string format_table(const std::vector<Row>& rows, const std::string& task) {
  const std::vector<std::string> models = models_of(rows);
  std::vector<const Measure*> measures;
  for (const Measure& m : kMeasures)
    if (m.task == task) measures.push_back(&m);
  SUBQ_CHECK(!measures.empty(), "eval: no table for task '", task, "'");
  std::set<int64_t> lengths;
  for (const Row& r : rows)
    if (r.task == task) lengths.insert(r.length);
  std::vector<std::map<std::pair<std::string, int64_t>, double>> vals;
  for (const Measure* m : measures) vals.push_back(values(rows, *m));
  auto value = [&](size_t k, const std::string& model, int64_t L) -> std::string {
    const auto it = vals[k].find({model, L});
    return it == vals[k].end() ? "-" : cell(it->second, measures[k]->percent);
  };
  if (measures.size() == 1) {
    // One measure: lengths down, models across.
    std::vector<std::vector<std::string>> table{{"length"}};
    for (const std::string& mo : models) table[0].push_back(mo);
    for (int64_t L : lengths) {
      table.push_back({std::to_string(L)});
      for (const std::string& mo : models) table.back().push_back(value(0, mo, L));
    }
    return std::string(measures[0]->label) + "\n" + align(table);
  }
  // Several measures (speed): a table per model, measures across.
  std::string out;
  for (const std::string& mo : models) {
    std::vector<std::vector<std::string>> table{{"length"}};
    for (const Measure* m : measures) table[0].push_back(m->label);
    for (int64_t L : lengths) {
      table.push_back({std::to_string(L)});
      for (size_t k = 0; k < measures.size(); ++k) table.back().push_back(value(k, mo, L));
    }
    out += task + ", " + mo + "\n" + align(table);
  }
  return out;
}

std::vector<std::string> write_report(const fs::path& dir, const std::vector<Row>& rows,
                                      const std::string& title, const std::string& gnuplot) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  SUBQ_CHECK(!ec, dir.string(), ": cannot create the report directory (", ec.message(), ")");
  write_text(dir / "summary.csv", format_csv(rows));
  const std::vector<std::string> models = models_of(rows);
  std::vector<std::string> drawn;
  std::string html =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
      "</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
      "img{max-width:100%}pre{background:#f4f4f4;padding:1em}</style></head><body>\n<h1>" +
      html_escape(title) + "</h1>\n";
  const std::vector<Plot> plots = plots_for(rows);
  for (const Plot& p : plots) {
    // The data: a gnuplot block (two blank lines apart) per model and panel.
    std::string dat;
    std::vector<bool> has_data;
    for (const std::string& mo : models)
      for (const Measure* m : p.panels) {
        dat += "# " + mo + " " + m->metric + "\n";
        bool any = false;
        for (const auto& [key, v] : values(rows, *m))
          if (key.first == mo) {
            dat +=
                std::to_string(key.second) + " " + std::to_string(m->percent ? 100 * v : v) + "\n";
            any = true;
          }
        // gnuplot's index skips a block with no data line: an empty series is one missing point.
        if (!any) dat += "1 NaN\n";
        dat += "\n\n";
        has_data.push_back(any);
      }
    write_text(dir / (p.name + ".dat"), dat);
    write_text(dir / (p.name + ".gp"), plot_script(p, models, has_data));
    if (run_gnuplot(gnuplot, dir, p.name + ".gp") && fs::exists(dir / (p.name + ".svg"))) {
      drawn.push_back(p.name);
      html += "<h2>" + html_escape(p.title) + "</h2>\n<img src=\"" + p.name + ".svg\" alt=\"" +
              html_escape(p.title) + "\">\n";
    } else {
      html += "<h2>" + html_escape(p.title) + "</h2>\n<p>(not drawn: " + html_escape(gnuplot) +
              " could not be run; the data is in " + p.name + ".dat)</p>\n";
    }
  }
  html += "<h2>Tables</h2>\n";
  std::set<std::string> tasks;
  for (const Row& r : rows) tasks.insert(r.task);
  for (const char* t : {"passkey", "niah", "ppl", "mqar", "speed"})
    if (tasks.count(t)) html += "<pre>" + html_escape(format_table(rows, t)) + "</pre>\n";
  html += "<p>Every row: <a href=\"summary.csv\">summary.csv</a> (" + std::string(csv_header()) +
          ").</p>\n</body></html>\n";
  write_text(dir / "index.html", html);
  return drawn;
}

void write_loss_plot(const std::vector<fs::path>& logs, const fs::path& out,
                     const std::string& gnuplot) {
  SUBQ_CHECK(!logs.empty() && logs.size() <= 64, "plot: expected 1 to 64 logs, got ", logs.size());
  SUBQ_CHECK(out.has_filename(), "plot: --out: expected a file name, got '", out.string(), "'");
  std::string dat, series;
  for (size_t i = 0; i < logs.size(); ++i) {
    std::ifstream f(logs[i]);
    SUBQ_CHECK(f, logs[i].string(), ": cannot read the training log");
    std::string line;
    SUBQ_CHECK(std::getline(f, line) && line.rfind("step,loss,", 0) == 0, logs[i].string(),
               ": not a log.csv of subq train (expected the header step,loss,...)");
    // The run's name: the directory holding log.csv.
    std::string name = fs::absolute(logs[i]).parent_path().filename().string();
    for (char& c : name)
      if (c == '\'' || c == '"' || c == '\\') c = '_';
    int64_t rows = 0;
    dat += "# " + name + "\n";
    // Bounded: a run logs a row per step, and 10M steps is far past any run here.
    while (std::getline(f, line) && rows < 10000000) {
      const auto fields = split_csv(line, logs[i].string());
      SUBQ_CHECK(fields.size() >= 2, logs[i].string(), " line ", rows + 2,
                 ": expected step,loss,...");
      parse_number(fields[0], logs[i].string());
      parse_number(fields[1], logs[i].string());
      dat += fields[0] + " " + fields[1] + "\n";
      ++rows;
    }
    SUBQ_CHECK(rows > 0, logs[i].string(), ": the log has no step yet");
    dat += "\n\n";
    series += std::string(i ? ", " : "") + "'" + out.filename().string() + ".dat' index " +
              std::to_string(i) + " using 1:2 with lines lw 2 title '" + name + "'";
  }
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string stem = out.filename().string();
  std::string gp = "# Drawn by subq plot; run `gnuplot " + stem + ".gp` here to redraw.\n";
  for (const char* term : {"svg size 800,450 dynamic noenhanced font 'sans,11'",
                           "pngcairo size 800,450 noenhanced font 'sans,10'"}) {
    const bool svg = std::string(term).rfind("svg", 0) == 0;
    gp += std::string("set terminal ") + term + "\nset output '" + stem + (svg ? ".svg" : ".png") +
          "'\nset xlabel 'step'\nset ylabel 'training loss'\nset grid\nset key top right\n"
          "plot " +
          series + "\n";
  }
  write_text(dir / (stem + ".dat"), dat);
  write_text(dir / (stem + ".gp"), gp);
  SUBQ_CHECK(run_gnuplot(gnuplot, dir, stem + ".gp") && fs::exists(dir / (stem + ".svg")),
             "plot: ", gnuplot, " could not draw ", (dir / (stem + ".gp")).string(),
             " (scripts/setup.sh installs gnuplot-nox)");
}

}  // namespace subq::eval
