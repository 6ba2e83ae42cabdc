#include "cli/eval_command.h"

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/model_commands.h"
#include "eval/report.h"
#include "eval/tasks.h"
#include "formats/default_teacher.h"
#include "subq/error.h"

namespace subq::cli {
namespace {

const std::vector<std::string> kTasks{"passkey", "niah", "ppl", "speed", "mqar", "all"};

// "1024,2k,4K" -> lengths; K means 1024.
std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = std::min(s.find(',', pos), s.size());
    std::string item = s.substr(pos, comma - pos);
    int64_t scale = 1;
    if (!item.empty() && (item.back() == 'k' || item.back() == 'K')) {
      scale = 1024;
      item.pop_back();
    }
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SUBQ_CHECK(!item.empty() && used == item.size() && v > 0 && v <= (1ll << 30),
               "--lengths: expected positive token counts such as 1024,4K, got '", s, "'");
    out.push_back(v * scale);
    pos = comma + 1;
  }
  return out;
}

}  // namespace

CLI::App* add_eval_command(CLI::App& app, EvalCommandConfig& c) {
  CLI::App* e = app.add_subcommand(
      "eval",
      "Evaluate models side by side (docs/eval.md): passkey, niah, ppl, speed, mqar, or all "
      "but mqar into a report directory");
  e->add_option("task", c.task, "passkey | niah | ppl | speed | mqar | all")->required();
  e->add_option("--model", c.models,
                "Checkpoint directory or .gguf file; repeat to compare models (default: the "
                "default teacher)");
  e->add_option(
      "--lengths", c.lengths,
      "Context lengths in tokens, e.g. 1024,4K (default: 1K,2K,4K; speed: 1K to 16K; mqar: "
      "256)");
  e->add_option("--trials", c.trials, "passkey, niah: trials per length")->capture_default_str();
  e->add_option("--filler", c.filler, "passkey, niah: the sentence the haystack repeats");
  e->add_option("--digits", c.digits,
                "passkey: digits of the key (0: uniform in [1, 50000)); niah: of the value "
                "(0: 7)")
      ->capture_default_str();
  e->add_option("--windows", c.windows, "ppl: windows per length")->capture_default_str();
  e->add_option("--stride", c.stride, "ppl: the grid windows start on, in tokens")
      ->capture_default_str();
  e->add_option("--decode-tokens", c.decode_tokens, "speed: timed decode steps per length")
      ->capture_default_str();
  e->add_option("--vocab", c.vocab, "mqar: the task's vocabulary (keys below V/2, values above)")
      ->capture_default_str();
  e->add_option("--pairs", c.pairs, "mqar: key-value pairs (0: length / 16, Zoology's grid)")
      ->capture_default_str();
  e->add_option("--examples", c.examples, "mqar: held-out sequences per length")
      ->capture_default_str();
  e->add_option("--seed", c.seed, "Seed of the trials and of speed's tokens")
      ->capture_default_str();
  e->add_option("--out", c.out,
                "Directory that keeps each finished unit, so a rerun resumes; `all` writes its "
                "report there (default for all: eval-report)");
  e->add_option("--text", c.text_dir, "ppl: the extracted corpora (scripts/fetch_corpora.sh)")
      ->capture_default_str();
  e->add_option("--cache", c.cache_dir, "ppl: where token caches are kept")->capture_default_str();
  e->add_flag("--csv", c.csv,
              "Print every row as CSV (model,task,length,depth,metric,value,detail)");
  e->add_option("--weights", c.weights, "f32 | bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  e->add_option("--threads", c.threads, "Threads (default: all cores)");
  return e;
}

int run_eval(const EvalCommandConfig& c) {
  SUBQ_CHECK(std::find(kTasks.begin(), kTasks.end(), c.task) != kTasks.end(),
             "eval: unknown task '", c.task, "': expected passkey, niah, ppl, speed or all");
  const std::vector<int64_t> lengths =
      c.lengths.empty() ? std::vector<int64_t>{} : parse_lengths(c.lengths);
  SUBQ_CHECK(c.models.size() <= 16, "--model: at most 16 models, got ", c.models.size());
  set_model_threads(c.threads);

  eval::RetrievalOptions ro;
  ro.trials = c.trials;
  ro.filler = c.filler;
  ro.digits = c.digits;
  ro.seed = c.seed;
  eval::PerplexityOptions po;
  po.windows = c.windows;
  po.stride = c.stride;
  po.text_dir = c.text_dir;
  po.cache_dir = c.cache_dir;
  eval::SpeedOptions so;
  so.decode_tokens = c.decode_tokens;
  so.seed = c.seed;
  if (!lengths.empty()) ro.lengths = po.lengths = so.lengths = lengths;

  const bool all = c.task == "all";
  const std::string out = all && c.out.empty() ? "eval-report" : c.out;

  // What the rows depend on; a resumed directory must have been started with the same.
  std::vector<std::string> model_paths;
  if (c.models.empty()) model_paths.push_back(formats::default_teacher_path().string());
  for (const auto& m : c.models) model_paths.push_back(m);
  const nlohmann::json settings = {{"task", c.task},       {"models", model_paths},
                                   {"weights", c.weights}, {"lengths", lengths},
                                   {"trials", c.trials},   {"filler", c.filler},
                                   {"digits", c.digits},   {"windows", c.windows},
                                   {"stride", c.stride},   {"decode_tokens", c.decode_tokens},
                                   {"seed", c.seed}};

  std::vector<eval::EvalModel> models;
  for (const auto& p : model_paths)
    models.push_back(eval::load_eval_model(p, c.weights, /*with_tokenizer=*/c.task != "mqar"));
  eval::make_names_distinct(models);

  eval::ResultStore store(out, settings.dump(1) + "\n");
  if (store.resumed_units() > 0)
    std::fprintf(stderr, "eval: resuming in %s: %lld units already done\n", out.c_str(),
                 static_cast<long long>(store.resumed_units()));
  const eval::ProgressFn progress = [](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
  };

  std::vector<eval::Row> rows;
  auto append = [&rows](std::vector<eval::Row> r) { rows.insert(rows.end(), r.begin(), r.end()); };
  if (all || c.task == "passkey") append(eval::run_passkey(models, ro, store, progress));
  if (all || c.task == "niah") append(eval::run_niah(models, ro, store, progress));
  if (all || c.task == "ppl") append(eval::run_perplexity(models, po, store, progress));
  if (all || c.task == "speed") append(eval::run_speed(models, so, store, progress));
  if (c.task == "mqar") {
    for (int64_t T : lengths.empty() ? std::vector<int64_t>{256} : lengths) {
      eval::MqarEvalOptions mo;
      mo.mqar.vocab = c.vocab;
      mo.mqar.seq_len = T;
      mo.mqar.num_pairs = c.pairs > 0 ? c.pairs : std::max<int64_t>(1, T / 16);
      mo.examples = c.examples;
      mo.seed = c.seed;
      append(eval::run_mqar(models, mo, store, progress));
    }
  }

  if (c.csv) {
    std::fputs(eval::format_csv(rows).c_str(), stdout);
  } else {
    for (const char* t : {"passkey", "niah", "ppl", "speed", "mqar"})
      if ((all && std::string(t) != "mqar") || c.task == t)
        std::printf("%s\n", eval::format_table(rows, t).c_str());
  }
  if (all) {
    const auto drawn = eval::write_report(out, rows, "subq eval all");
    std::fprintf(stderr, "eval: report in %s/index.html (%zu plots%s), rows in %s/summary.csv\n",
                 out.c_str(), drawn.size(), drawn.empty() ? ": gnuplot not found" : "",
                 out.c_str());
  } else if (!out.empty()) {
    // Every row of this task, beside the units it was computed from.
    eval::write_report(out, rows, "subq eval " + c.task);
  }
  return 0;
}

CLI::App* add_plot_command(CLI::App& app, PlotCommandConfig& c) {
  CLI::App* p = app.add_subcommand(
      "plot", "Draw the training loss of runs of subq train (their log.csv), a line per run");
  p->add_option("logs", c.logs, "log.csv files, or run directories holding one")->required();
  p->add_option("--out", c.out, "Output: OUT.svg and OUT.png (with OUT.dat and OUT.gp)")
      ->capture_default_str();
  return p;
}

int run_plot(const PlotCommandConfig& c) {
  std::vector<std::filesystem::path> logs;
  for (const auto& l : c.logs) {
    const std::filesystem::path p(l);
    logs.push_back(std::filesystem::is_directory(p) ? p / "log.csv" : p);
  }
  std::filesystem::path out(c.out);
  if (out.extension() == ".svg" || out.extension() == ".png") out.replace_extension();
  eval::write_loss_plot(logs, out);
  std::printf("wrote %s.svg and %s.png\n", out.c_str(), out.c_str());
  return 0;
}

}  // namespace subq::cli
