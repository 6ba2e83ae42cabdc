// What `subq eval` shows: a table per task on the terminal, the rows as CSV, and for
// `subq eval all` a report directory (summary.csv, plots drawn by gnuplot, index.html).
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "eval/results.h"

namespace subq::eval {

// A table of one task's aggregate rows: lengths down, models across (passkey and niah:
// accuracy; ppl: perplexity; speed: a block of columns per model).
std::string format_table(const std::vector<Row>& rows, const std::string& task);

// The header and every row, one per line.
std::string format_csv(const std::vector<Row>& rows);

// Writes DIR/summary.csv, the plots (DIR/<plot>.svg and .png, with the data and gnuplot script
// beside them) and DIR/index.html, which shows the plots and the tables. `gnuplot` is the
// program to run; plots are skipped with a note in index.html when it cannot be run. Returns
// the plots' names.
std::vector<std::string> write_report(const std::filesystem::path& dir,
                                      const std::vector<Row>& rows, const std::string& title,
                                      const std::string& gnuplot = "gnuplot");

// Training curves (`subq plot`): the loss of each run's log.csv (`subq train`'s
// step,loss,lr,grad_norm,tokens,seconds) against the step, a line per run named by its
// directory, into OUT.svg and OUT.png (with OUT.dat and OUT.gp beside them). Throws
// subq::Error for a log that is missing, malformed or empty, and when gnuplot cannot be run.
void write_loss_plot(const std::vector<std::filesystem::path>& logs,
                     const std::filesystem::path& out, const std::string& gnuplot = "gnuplot");

}  // namespace subq::eval
