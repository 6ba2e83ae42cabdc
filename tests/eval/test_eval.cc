// The evaluations (eval/): the rows' CSV, the store that resumes an evaluation, the perplexity
// windows, each task on a tiny random model with the byte-level tokenizer (the chunked
// perplexity against one whole forward, resume doing no work twice), and the report.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/report.h"
#include "eval/results.h"
#include "eval/tasks.h"
#include "formats/atomic_file.h"
#include "formats/hf_config.h"
#include "subq/error.h"

namespace subq::eval {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("subq_eval_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string read(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(Rows, CsvRoundTripsWithQuotesAndAnEmptyDepth) {
  const Row r{"m,1", "ppl", 4096, -1, "ppl", 12.5, "gutenberg/\"war\", peace"};
  const std::string line = to_csv(r);
  EXPECT_EQ(line, "\"m,1\",ppl,4096,,ppl,12.5,\"gutenberg/\"\"war\"\", peace\"");
  const Row back = parse_csv_row(line, "test");
  EXPECT_EQ(back.model, r.model);
  EXPECT_EQ(back.length, 4096);
  EXPECT_LT(back.depth, 0);
  EXPECT_EQ(back.value, 12.5);
  EXPECT_EQ(back.detail, r.detail);
  const Row d = parse_csv_row(to_csv({"a", "passkey", 1024, 0.25, "correct", 1, "trial 3"}), "t");
  EXPECT_DOUBLE_EQ(d.depth, 0.25);
  EXPECT_THROW(parse_csv_row("a,b,c", "t"), Error);
  EXPECT_THROW(parse_csv_row("a,passkey,x,,correct,1,", "t"), Error);
}

TEST(Store, KeepsFinishedUnitsDropsACutOneAndRefusesOtherSettings) {
  const fs::path dir = temp_dir("store");
  {
    ResultStore s(dir, "settings A\n");
    s.add("u1", {{"m", "passkey", 64, 0.5, "correct", 1, "trial 0"}});
    s.add("u2", {{"m", "passkey", 64, 0.1, "correct", 0, "trial 1"}});
  }
  // A kill in the middle of a unit: its rows without the closing line, and a torn last line.
  {
    std::ofstream f(dir / "units.csv", std::ios::app);
    f << "row,u3,m,passkey,64,0.2000,correct,1,trial 2\nrow,u3,m,pass";
  }
  ResultStore s(dir, "settings A\n");
  EXPECT_EQ(s.resumed_units(), 2);
  EXPECT_TRUE(s.done("u1"));
  EXPECT_TRUE(s.done("u2"));
  EXPECT_FALSE(s.done("u3"));
  ASSERT_EQ(s.rows("u1").size(), 1u);
  EXPECT_EQ(s.rows("u1")[0].value, 1);
  EXPECT_EQ(s.rows("u2")[0].detail, "trial 1");
  EXPECT_EQ(read(dir / "units.csv").find("u3"), std::string::npos);  // rewritten without it
  EXPECT_THROW(ResultStore(dir, "settings B\n"), Error);
  fs::remove_all(dir);
}

TEST(Perplexity, WindowsLieOnTheStrideGridInsideLongEnoughDocuments) {
  const std::vector<int64_t> docs{100, 5000, 2000, 1025};
  const auto w = perplexity_windows(docs, 1024, 256, 6);
  ASSERT_EQ(w.size(), 6u);
  for (const Window& x : w) {
    EXPECT_NE(x.document, 0);  // too short for a window
    EXPECT_EQ(x.start % 256, 0);
    EXPECT_LE(x.start + 1024 + 1, docs[static_cast<size_t>(x.document)]);
  }
  // Spread over the grid (doc 1 has 16 starts, doc 2 has 4, doc 3 has 1): every document long
  // enough gets at least one of 6 evenly spaced picks only if the grid is covered in order.
  EXPECT_EQ(w.front().document, 1);
  EXPECT_EQ(w.back().document, 2);
  // Asking for more than the grid holds gives the whole grid.
  EXPECT_EQ(perplexity_windows(docs, 1024, 256, 1000).size(), 21u);
  EXPECT_THROW(perplexity_windows(docs, 8192, 256, 4), Error);
}

// A tiny random model saved with no tokenizer file: the byte-level tokenizer (258 ids).
fs::path tiny_model(const fs::path& dir) {
  const nlohmann::json mc = {{"architectures", {"LlamaForCausalLM"}},
                             {"model_type", "llama"},
                             {"hidden_size", 32},
                             {"intermediate_size", 64},
                             {"num_hidden_layers", 2},
                             {"num_attention_heads", 4},
                             {"num_key_value_heads", 2},
                             {"vocab_size", 258},
                             {"max_position_embeddings", 4096},
                             {"rms_norm_eps", 1e-5},
                             {"rope_theta", 10000.0},
                             {"tie_word_embeddings", true}};
  torch::manual_seed(3);
  model::DecoderModel m(formats::parse_llama_config(mc.dump(), "tiny"));
  model::save_model(*m, dir / "tiny");
  return dir / "tiny";
}

TEST(Tasks, PasskeyAndNiahFitTheirLengthsAndResumeWithoutRedoingWork) {
  const fs::path dir = temp_dir("retrieval");
  const fs::path path = tiny_model(dir);
  std::vector<EvalModel> models;
  models.push_back(load_eval_model(path, "f32"));
  RetrievalOptions o;
  o.lengths = {512, 700};
  o.trials = 3;
  int lines = 0;
  const ProgressFn count = [&lines](const std::string&) { ++lines; };
  std::vector<Row> first;
  {
    ResultStore store(dir / "out", "s\n");
    first = run_passkey(models, o, store, count);
    EXPECT_EQ(lines, 6);
    const auto niah = run_niah(models, o, store, count);
    EXPECT_EQ(lines, 12);
    for (const Row& r : niah) EXPECT_EQ(r.task, "niah");
  }
  int accuracy_rows = 0;
  for (const Row& r : first) {
    EXPECT_EQ(r.model, "tiny");
    if (r.metric == "prompt_tokens") {
      // One byte a token: the prompt fills its length to within the filler's last sentence cut.
      EXPECT_LE(r.value, r.length);
      EXPECT_GE(r.value, r.length - 2);
    }
    if (r.metric == "correct") {
      EXPECT_TRUE(r.value == 0 || r.value == 1);
    }
    if (r.metric == "accuracy") {
      ++accuracy_rows;
      EXPECT_EQ(r.detail, "3 trials");
    }
  }
  EXPECT_EQ(accuracy_rows, 2);
  // Reopened: every unit is done, nothing runs, and the rows are the same.
  lines = 0;
  ResultStore again(dir / "out", "s\n");
  EXPECT_EQ(again.resumed_units(), 12);
  const auto second = run_passkey(models, o, again, count);
  EXPECT_EQ(lines, 0);
  ASSERT_EQ(second.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(to_csv(second[i]), to_csv(first[i]));
  o.lengths = {8};
  EXPECT_THROW(run_passkey(models, o, again, count), Error);
  fs::remove_all(dir);
}

// The chunked perplexity of a window equals the mean cross-entropy of one whole forward.
TEST(Tasks, PerplexityOfAWindowIsTheWholeForwardsCrossEntropy) {
  const fs::path dir = temp_dir("ppl");
  const fs::path path = tiny_model(dir);
  fs::create_directories(dir / "text/heldout");
  std::string a, b;
  for (int i = 0; i < 30; ++i) a += "It was the best of times, it was the worst of times. ";
  for (int i = 0; i < 4; ++i) b += "Call me Ishmael. ";
  formats::write_file_atomically(dir / "text/heldout/a.txt", a);
  formats::write_file_atomically(dir / "text/heldout/b.txt", b);
  formats::write_file_atomically(
      dir / "text/manifest.tsv",
      "split\tsource\tdoc\tpath\tbytes\nheldout-A\tdickens\ttwo-cities\theldout/a.txt\t" +
          std::to_string(a.size()) + "\nheldout-A\tmelville\tmoby\theldout/b.txt\t" +
          std::to_string(b.size()) + "\n");
  std::vector<EvalModel> models;
  models.push_back(load_eval_model(path, "f32"));
  PerplexityOptions o;
  o.lengths = {96, 200};
  o.windows = 3;
  o.stride = 64;
  o.prefill_chunk = 40;  // several chunks per window, one of them partial
  o.text_dir = dir / "text";
  o.cache_dir = dir / "cache";
  o.splits = {"heldout-A"};
  ResultStore store("", "");
  const auto rows = run_perplexity(models, o, store, nullptr);
  // Windows start on the grid of the longest length (200) in document 0 (b is too short); the
  // first window of length 96 is the first 96 tokens of the first window of 200.
  const auto ws = perplexity_windows(
      {static_cast<int64_t>(a.size()) + 1, static_cast<int64_t>(b.size()) + 1}, 200, 64, 3);
  ASSERT_EQ(ws.size(), 3u);
  std::vector<int64_t> ids;
  for (unsigned char ch : a.substr(static_cast<size_t>(ws[0].start), 97)) ids.push_back(ch);
  torch::NoGradGuard ng;
  const at::Tensor in =
      torch::tensor(std::vector<int64_t>(ids.begin(), ids.end() - 1)).view({1, -1});
  const at::Tensor labels = torch::tensor(std::vector<int64_t>(ids.begin() + 1, ids.end()));
  const double want =
      torch::nn::functional::cross_entropy(models[0].model->forward(in).view({96, -1}), labels)
          .item<double>();
  std::vector<double> losses;
  double ppl_all = 0, loss_mean = 0;
  for (const Row& r : rows)
    if (r.length == 96) {
      if (r.metric == "loss") losses.push_back(r.value);
      if (r.metric == "ppl" && r.detail == "all") ppl_all = r.value;
      if (r.metric == "loss_mean") loss_mean = r.value;
    }
  ASSERT_EQ(losses.size(), 3u);
  EXPECT_NEAR(losses[0], want, 1e-5 * want);
  EXPECT_NEAR(loss_mean, (losses[0] + losses[1] + losses[2]) / 3, 1e-12);
  EXPECT_NEAR(ppl_all, std::exp(loss_mean), 1e-9 * ppl_all);
  // A random model over 258 ids: near ln 258 = 5.55, never below what a model can know.
  EXPECT_GT(loss_mean, 3.0);
  o.lengths = {100000};
  EXPECT_THROW(run_perplexity(models, o, store, nullptr), Error);  // no document that long
  fs::remove_all(dir);
}

TEST(Tasks, SpeedReportsPrefillDecodeAndACacheThatGrowsWithLength) {
  const fs::path dir = temp_dir("speed");
  std::vector<EvalModel> models;
  models.push_back(load_eval_model(tiny_model(dir), "f32"));
  SpeedOptions o;
  o.lengths = {128, 512};
  o.decode_tokens = 4;
  ResultStore store("", "");
  const auto rows = run_speed(models, o, store, nullptr);
  std::map<std::pair<int64_t, std::string>, double> v;
  for (const Row& r : rows) v[{r.length, r.metric}] = r.value;
  auto at = [&v](int64_t L, const char* metric) {
    return v[std::make_pair(L, std::string(metric))];
  };
  for (int64_t L : o.lengths) {
    EXPECT_GT(at(L, "prefill_s"), 0);
    EXPECT_NEAR(at(L, "prefill_tok_s"), static_cast<double>(L) / at(L, "prefill_s"),
                1e-6 * at(L, "prefill_tok_s"));
    EXPECT_GT(at(L, "decode_ms_per_token"), 0);
    EXPECT_GT(at(L, "peak_rss_mib"), 1);
  }
  // Softmax layers keep K and V for every token: the 512-token cache is the larger.
  EXPECT_GT(at(512, "cache_mib"), 3 * at(128, "cache_mib"));
  fs::remove_all(dir);
}

TEST(Report, WritesSummaryTablesAndPlotsOrSaysWhyNot) {
  const fs::path dir = temp_dir("report");
  const std::vector<Row> rows{{"a", "passkey", 1024, -1, "accuracy", 1.0, "10 trials"},
                              {"a", "passkey", 2048, -1, "accuracy", 0.5, "10 trials"},
                              {"b", "passkey", 1024, -1, "accuracy", 0.25, "10 trials"},
                              {"a", "speed", 1024, -1, "prefill_s", 2.0, ""},
                              {"a", "speed", 1024, -1, "decode_ms_per_token", 9.5, ""}};
  const std::string table = format_table(rows, "passkey");
  EXPECT_NE(table.find("100%"), std::string::npos);
  EXPECT_NE(table.find("25%"), std::string::npos);
  EXPECT_NE(table.find("-"), std::string::npos);  // b has no 2048 row
  write_report(dir / "none", rows, "t", "/nonexistent/gnuplot");
  EXPECT_NE(read(dir / "none/index.html").find("not drawn"), std::string::npos);
  EXPECT_EQ(read(dir / "none/summary.csv"), format_csv(rows));
  // With Debian's gnuplot (scripts/setup.sh installs it): an SVG and a PNG per plot.
  const auto drawn = write_report(dir / "drawn", rows, "t");
  ASSERT_EQ(drawn, (std::vector<std::string>{"passkey", "speed"}));
  for (const char* f : {"passkey.svg", "passkey.png", "speed.svg", "speed.png"})
    EXPECT_GT(fs::file_size(dir / "drawn" / f), 500u) << f;
  EXPECT_NE(read(dir / "drawn/index.html").find("<img src=\"passkey.svg\""), std::string::npos);
  fs::remove_all(dir);
}

TEST(Report, DrawsTrainingLossCurvesAndRefusesWhatIsNotALog) {
  const fs::path dir = temp_dir("plot");
  fs::create_directories(dir / "run_a");
  fs::create_directories(dir / "run_b");
  formats::write_file_atomically(dir / "run_a/log.csv",
                                 "step,loss,lr,grad_norm,tokens,seconds\n1,5.5,0.001,1,64,0.1\n"
                                 "2,4.0,0.001,1,128,0.2\n3,3.1,0.001,1,192,0.3\n");
  formats::write_file_atomically(dir / "run_b/log.csv",
                                 "step,loss,lr,grad_norm,tokens,seconds\n1,5.0,0.001,1,64,0.1\n");
  write_loss_plot({dir / "run_a/log.csv", dir / "run_b/log.csv"}, dir / "loss");
  EXPECT_GT(fs::file_size(dir / "loss.svg"), 500u);
  EXPECT_GT(fs::file_size(dir / "loss.png"), 500u);
  const std::string dat = read(dir / "loss.dat");
  EXPECT_NE(dat.find("# run_a\n1 5.5\n2 4.0\n3 3.1\n"), std::string::npos) << dat;
  EXPECT_NE(read(dir / "loss.gp").find("title 'run_b'"), std::string::npos);
  formats::write_file_atomically(dir / "bad.csv", "model,task\n");
  EXPECT_THROW(write_loss_plot({dir / "bad.csv"}, dir / "x"), Error);
  formats::write_file_atomically(dir / "empty.csv", "step,loss,lr,grad_norm,tokens,seconds\n");
  EXPECT_THROW(write_loss_plot({dir / "empty.csv"}, dir / "x"), Error);
  formats::write_file_atomically(dir / "nan.csv", "step,loss\n1,abc\n");
  EXPECT_THROW(write_loss_plot({dir / "nan.csv"}, dir / "x"), Error);
  EXPECT_THROW(write_loss_plot({dir / "missing.csv"}, dir / "x"), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace subq::eval
