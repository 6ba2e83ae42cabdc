// The training engine (train/): the schedule, the config's checks, resume reproducing an
// uninterrupted run exactly, and training that learns (MQAR).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>

#include <unistd.h>

#include "formats/atomic_file.h"
#include "formats/tokenizer.h"
#include "model/decoder.h"
#include "subq/error.h"
#include "subq/threads.h"
#include "train/schedule.h"
#include "train/synthetic_mix.h"
#include "train/trainer.h"

namespace subq::train {
namespace {

namespace fs = std::filesystem;

TEST(Schedule, WarmsUpLinearlyThenFollowsTheCosine) {
  Schedule s{1.0, 4, 14, 0.0};
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 0.25);
  EXPECT_DOUBLE_EQ(lr_at(s, 3), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 4), 1.0);     // the cosine's start
  EXPECT_NEAR(lr_at(s, 9), 0.5, 1e-12);   // half way: cos(pi / 2)
  EXPECT_NEAR(lr_at(s, 14), 0.0, 1e-12);  // the end
  EXPECT_NEAR(lr_at(s, 6), 0.5 * (1 + std::cos(M_PI * 0.2)), 1e-12);
  s.min_lr_ratio = 0.1;
  EXPECT_NEAR(lr_at(s, 14), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(s, 9), 0.1 + 0.9 * 0.5, 1e-12);
  Schedule none{2.0, 0, 10, 0.0};
  EXPECT_DOUBLE_EQ(lr_at(none, 0), 2.0);
}

const char* kTiny = R"({
  "model_config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 64,
                   "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                   "tie_word_embeddings": true},
  "data": {"task": "mqar", "vocab": 64, "seq_len": 32, "num_pairs": 4},
  "batch_size": 4, "steps": 6, "lr": 3e-3, "warmup_steps": 2, "checkpoint_every": 2,
  "seed": 5
})";

TEST(Config, BadConfigsAreOneLineErrors) {
  EXPECT_NO_THROW(parse_train_config(kTiny, "tiny.json"));
  auto bad = [](const std::string& text, const std::string& needle) {
    try {
      parse_train_config(text, "t.json");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string data =
      R"("data": {"task": "mqar", "vocab": 64, "seq_len": 32, "num_pairs": 4})";
  bad("[1]", "expected a JSON object");
  bad("{" + data + "}", "exactly one of model");
  bad(R"({"model": "x", "model_config": {}, )" + data + "}", "exactly one of model");
  bad(R"({"model": "x"})", "data");
  bad(R"({"model": "x", )" + data + R"(, "stpes": 3})", "unknown option \"stpes\"");
  bad(R"({"model": "x", )" + data + R"(, "steps": 0})", "steps");
  bad(R"({"model": "x", )" + data + R"(, "lr": "fast"})", "lr: expected a number");
  bad(R"({"model": "x", )" + data + R"(, "lr": -1})", "lr: expected");
  bad(R"({"model": "x", )" + data + R"(, "warmup_steps": 200, "steps": 100})", "warmup_steps");
  bad(R"({"model": "x", )" + data + R"(, "groups": {"mlps": {}}})", "unknown group \"mlps\"");
  bad(R"({"model": "x", )" + data + R"(, "groups": {"mlp": {"frozen": true}}})", "frozen");
  bad(R"({"model": "x", "data": {"task": "passkey"}})", "task");
  bad(R"({"model": "x", "data": {"task": "mqar", "seq_len": 30, "num_pairs": 8}})", "num_pairs");
}

std::vector<double> losses(const std::vector<StepRecord>& r) {
  std::vector<double> l;
  for (const auto& s : r) l.push_back(s.loss);
  return l;
}

// Runs `c` uninterrupted in dir/whole, then in dir/part stopped after 3 steps and resumed;
// expects bitwise the same losses and returns the uninterrupted run's.
std::vector<double> expect_resume_exact(const TrainConfig& c, const fs::path& dir) {
  RunOptions whole;
  whole.out = dir / "whole";
  const std::vector<double> expected = losses(run_training(c, whole));
  RunOptions part;
  part.out = dir / "part";
  part.stop_after = 3;  // a checkpoint at checkpoint_every and at 3 (the stop)
  std::vector<double> got = losses(run_training(c, part));
  EXPECT_EQ(got.size(), 3u);
  part.stop_after = 0;
  part.resume = true;
  for (double l : losses(run_training(c, part))) got.push_back(l);
  EXPECT_EQ(got, expected) << "bitwise the same losses";
  return expected;
}

// A corpus of the given documents (split "train", source "s") in dir/text and a tiny saved model
// with no tokenizer file (so the built-in byte-level one) in dir/model, its positions up to
// `max_positions`. Returns the start of a config that trains it, up to the data's open object:
// {"model": ..., "data": {"task": "corpus", "text": ..., "cache": ...,
std::string tiny_corpus_run(const fs::path& dir, const std::vector<std::string>& docs,
                            int max_positions) {
  fs::remove_all(dir);
  fs::create_directories(dir / "text/train/s");
  std::string manifest = "split\tsource\tdoc\tpath\tbytes\n";
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string name(1, static_cast<char>('a' + i));
    formats::write_file_atomically(dir / ("text/train/s/" + name + ".txt"), docs[i]);
    manifest += "train\ts\t" + name + "\ttrain/s/" + name + ".txt\t" +
                std::to_string(docs[i].size()) + "\n";
  }
  formats::write_file_atomically(dir / "text/manifest.tsv", manifest);
  nlohmann::json mc = nlohmann::json::parse(kTiny)["model_config"];
  mc["vocab_size"] = 258;
  mc["max_position_embeddings"] = max_positions;
  torch::manual_seed(1);
  model::DecoderModel m(formats::parse_llama_config(mc.dump(), "tiny"));
  model::save_model(*m, dir / "model");
  return R"({"model": ")" + (dir / "model").string() +
         R"(", "data": {"task": "corpus", "text": ")" + (dir / "text").string() +
         R"(", "cache": ")" + (dir / "cache").string() + "\", ";
}

TEST(Resume, ContinuesExactlyAsAnUninterruptedRun) {
  set_num_threads(1);
  const TrainConfig c = parse_train_config(kTiny, "tiny.json");
  const fs::path base = fs::temp_directory_path() / ("subq_train_" + std::to_string(getpid()));
  fs::remove_all(base);
  EXPECT_EQ(expect_resume_exact(c, base).size(), 6u);
  RunOptions part;
  part.out = base / "part";
  part.resume = true;

  // A resume with another model or data is refused; so is one with no checkpoint.
  TrainConfig other = c;
  other.seed = 6;
  EXPECT_THROW(run_training(other, part), Error);
  RunOptions none;
  none.out = base / "none";
  none.resume = true;
  EXPECT_THROW(run_training(c, none), Error);
  fs::remove_all(base);
}

// Not yet the Zoology bar (a 2-layer model at its expected MQAR accuracy needs thousands of
// steps: docs/train.md), but the loss must fall: the engine really optimises.
TEST(Training, LowersTheLoss) {
  set_num_threads(1);
  std::string text = kTiny;
  const std::string six = "\"steps\": 6,";
  text.replace(text.find(six), six.size(), "\"steps\": 80,");
  const TrainConfig c = parse_train_config(text, "tiny80.json");
  const fs::path out = fs::temp_directory_path() / ("subq_lower_" + std::to_string(getpid()));
  fs::remove_all(out);
  RunOptions run;
  run.out = out;
  const std::vector<double> l = losses(run_training(c, run));
  ASSERT_EQ(l.size(), 80u);
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) {
    first += l[i] / 10;
    last += l[70 + i] / 10;
  }
  EXPECT_LT(last, first - 0.3) << "first 10 steps " << first << ", last 10 " << last;
  fs::remove_all(out);
}

TEST(Groups, FrozenGroupsDoNotMove) {
  set_num_threads(1);
  std::string text = kTiny;
  text.insert(text.rfind('}'), R"(, "groups": {"embeddings": {"trainable": false}})");
  const TrainConfig c = parse_train_config(text, "frozen.json");
  const fs::path out = fs::temp_directory_path() / ("subq_frozen_" + std::to_string(getpid()));
  fs::remove_all(out);
  RunOptions run;
  run.out = out;
  run_training(c, run);
  // The fresh model of the same seed, and the trained one from its checkpoint.
  torch::manual_seed(c.seed);
  model::DecoderModel fresh(formats::parse_llama_config(c.model_config.dump()));
  model::DecoderModel trained = model::load_model(out / "checkpoint");
  auto a = fresh->named_parameters();
  auto b = trained->named_parameters();
  EXPECT_TRUE(torch::equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"]));
  EXPECT_FALSE(
      torch::equal(a["model.layers.0.mlp.up_proj.weight"], b["model.layers.0.mlp.up_proj.weight"]));
  fs::remove_all(out);
}

}  // namespace
}  // namespace subq::train

namespace subq::train {
namespace {

// The corpus task: a tiny saved model with no tokenizer file (so the built-in byte-level one)
// trains on packed windows of a two-document corpus; the loss falls, and a run stopped after 3
// steps and resumed gives the uninterrupted run's losses.
TEST(Corpus, TrainsOnPackedWindowsAndResumesExactly) {
  const fs::path base = fs::temp_directory_path() / ("subq_corpus_" + std::to_string(getpid()));
  std::string a, b;
  for (int i = 0; i < 40; ++i) a += "the cat sat on the mat. ";
  for (int i = 0; i < 40; ++i) b += "a dog ran in the park! ";
  const std::string text = tiny_corpus_run(base, {a, b}, 128) + R"("seq_len": 32},
    "batch_size": 4, "steps": 12, "lr": 1e-2, "warmup_steps": 2, "checkpoint_every": 3})";
  const std::vector<double> expected =
      expect_resume_exact(parse_train_config(text, "corpus.json"), base);
  ASSERT_EQ(expected.size(), 12u);
  EXPECT_LT(expected.back(), 0.7 * expected.front());
  fs::remove_all(base);
}

// The synthetic mix: each task's share of the rows, a pure function of (seed, row).
TEST(Mix, RowsGetEachTaskAtItsRatioAndTheSameTaskEveryTime) {
  MixOptions m;
  m.passkey = 0.1;
  m.niah = 0.2;
  m.mqar = 0.05;
  std::map<RowTask, int> n;
  for (int64_t i = 0; i < 20000; ++i) {
    const RowTask t = mix_row_task(m, 7, i);
    ++n[t];
    ASSERT_EQ(t, mix_row_task(m, 7, i));
  }
  EXPECT_NEAR(n[RowTask::kPasskey] / 20000.0, 0.1, 0.01);
  EXPECT_NEAR(n[RowTask::kNiah] / 20000.0, 0.2, 0.01);
  EXPECT_NEAR(n[RowTask::kMqar] / 20000.0, 0.05, 0.01);
  EXPECT_EQ(mix_row_task(MixOptions{}, 7, 3), RowTask::kCorpus);
}

// A passkey row: the trial's text, a space, the key and EOS, fitted to the row, labels shifted by
// one, no label past its end; an MQAR row labels its queries only.
TEST(Mix, SyntheticRowsHoldTheTrialAndItsAnswer) {
  const auto tok = formats::load_tokenizer(fs::temp_directory_path());  // no files: bytes
  const int32_t eos = *tok->eos_id();
  MixOptions m;
  m.passkey = 1;
  const int64_t T = 400;
  std::vector<int64_t> in(T), lab(T);
  synthetic_row(RowTask::kPasskey, m, *tok, eos, T, 3, 11, in.data(), lab.data());
  std::string text;
  int64_t end = 0;  // the EOS that ends the trial
  for (int64_t i = 0; i < T && lab[i] != kIgnore; ++i) {
    text += static_cast<char>(in[i]);
    if (i > 0) {
      EXPECT_EQ(in[i], lab[i - 1]);
    }
    end = i + 1;
  }
  EXPECT_EQ(lab[end - 1], eos);
  EXPECT_GE(end, T - 2);  // one byte a token: the filler fills the row to within a character
  EXPECT_EQ(text.rfind("There is an important info hidden", 0), 0u);
  const size_t q = text.find("What is the pass key? The pass key is ");
  ASSERT_NE(q, std::string::npos);
  const std::string key = text.substr(q + 38);
  EXPECT_NE(text.find("The pass key is " + key + ". Remember it."), std::string::npos) << text;
  // Deterministic: the same (seed, row), the same row.
  std::vector<int64_t> in2(T), lab2(T);
  synthetic_row(RowTask::kPasskey, m, *tok, eos, T, 3, 11, in2.data(), lab2.data());
  EXPECT_EQ(in, in2);
  m.mqar_vocab = 256;
  synthetic_row(RowTask::kMqar, m, *tok, eos, 64, 3, 12, in.data(), lab.data());
  int64_t labelled = 0;
  for (int64_t i = 0; i < 64; ++i) {
    labelled += lab[i] != kIgnore;
    EXPECT_LT(in[i], 256);
  }
  EXPECT_EQ(labelled, 4);  // K = T / 16
}

TEST(Mix, BadMixesAreOneLineErrors) {
  auto config = [](const std::string& mix, int seq_len) {
    return R"({"model": "m", "data": {"task": "corpus", "seq_len": )" + std::to_string(seq_len) +
           R"(, "mix": )" + mix + "}}";
  };
  EXPECT_NO_THROW(parse_train_config(config(R"({"passkey": 0.1, "niah": 0.1})", 512), "c"));
  EXPECT_THROW(parse_train_config(config(R"({"passkey": 0.7, "niah": 0.5})", 512), "c"), Error);
  EXPECT_THROW(parse_train_config(config(R"({"passkey": -0.1})", 512), "c"), Error);
  EXPECT_THROW(parse_train_config(config(R"({"pasky": 0.1})", 512), "c"), Error);
  EXPECT_THROW(parse_train_config(config(R"({"passkey": 0.1})", 128), "c"), Error);
  EXPECT_THROW(parse_train_config(config(R"([0.1])", 512), "c"), Error);
}

// Corpus batches with synthetic rows train, and a stopped and resumed run repeats the
// uninterrupted one's losses exactly.
TEST(Mix, CorpusWithSyntheticRowsResumesExactly) {
  const fs::path base = fs::temp_directory_path() / ("subq_mix_" + std::to_string(getpid()));
  std::string a;
  for (int i = 0; i < 200; ++i) a += "the cat sat on the mat. ";
  const std::string text = tiny_corpus_run(base, {a}, 512) + R"("seq_len": 400,
             "mix": {"passkey": 0.3, "niah": 0.2, "mqar": 0.1, "mqar_vocab": 64}},
    "batch_size": 4, "steps": 6, "lr": 1e-2, "warmup_steps": 2, "checkpoint_every": 2})";
  // One byte a token: NIAH's template alone is 366 tokens, more than a row of 300.
  std::string short_rows = text;
  short_rows.replace(short_rows.find("\"seq_len\": 400"), 15, "\"seq_len\": 300");
  RunOptions bad;
  bad.out = base / "bad";
  EXPECT_THROW(run_training(parse_train_config(short_rows, "mix.json"), bad), Error);
  const std::vector<double> expected =
      expect_resume_exact(parse_train_config(text, "mix.json"), base);
  ASSERT_EQ(expected.size(), 6u);
  for (double l : expected) EXPECT_TRUE(std::isfinite(l));
  fs::remove_all(base);
}

}  // namespace
}  // namespace subq::train
