// The synthetic tasks (train/synthetic.h): templates exactly as linearize.md gives them,
// determinism under a seed, the ranges and placement rules, and scoring on hand-made
// predictions.
#include "train/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "subq/error.h"

namespace subq::train {
namespace {

TEST(Filler, RepeatsWithSpacesAndCutsExactly) {
  EXPECT_EQ(repeat_filler("ab.", 0), "");
  EXPECT_EQ(repeat_filler("ab.", 5), "ab. a");
  EXPECT_EQ(repeat_filler("ab.", 11), "ab. ab. ab.");
  EXPECT_EQ(repeat_filler(kDefaultFiller, 1000).size(), 1000u);
  EXPECT_THROW(repeat_filler("", 3), Error);
  EXPECT_THROW(repeat_filler("x", -1), Error);
  EXPECT_THROW(repeat_filler("x", int64_t{1} << 40), Error);
}

TEST(Passkey, MatchesTheTemplateExactly) {
  PasskeyOptions o;
  o.filler = "Fill.";
  o.filler_chars = 23;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const TextTrial t = passkey_trial(o, seed);
    const int64_t prefix = static_cast<int64_t>(t.depth * 23 + 0.5);
    const std::string expected =
        "There is an important info hidden inside a lot of irrelevant text. Find it and "
        "memorize them. I will quiz you about the important information there.\n" +
        repeat_filler("Fill.", prefix) + "\nThe pass key is " + t.answer + ". Remember it. " +
        t.answer + " is the pass key.\n" + repeat_filler("Fill.", 23 - prefix) +
        "\nWhat is the pass key? The pass key is";
    EXPECT_EQ(t.prompt, expected) << seed;
    const int64_t key = std::stoll(t.answer);
    EXPECT_GE(key, 1);
    EXPECT_LT(key, 50000);
  }
}

TEST(Passkey, SameSeedSameTrialAndDepthsAndKeysSpread) {
  PasskeyOptions o;
  EXPECT_EQ(passkey_trial(o, 7).prompt, passkey_trial(o, 7).prompt);
  EXPECT_NE(passkey_trial(o, 7).prompt, passkey_trial(o, 8).prompt);
  std::set<std::string> keys;
  double lo = 1, hi = 0;
  for (uint64_t s = 0; s < 200; ++s) {
    const TextTrial t = passkey_trial(o, s);
    keys.insert(t.answer);
    lo = std::min(lo, t.depth);
    hi = std::max(hi, t.depth);
  }
  EXPECT_GT(keys.size(), 190u);
  EXPECT_LT(lo, 0.05);
  EXPECT_GT(hi, 0.95);
  o.digits = 6;
  for (uint64_t s = 0; s < 50; ++s) EXPECT_EQ(passkey_trial(o, s).answer.size(), 6u);
  o.digits = 19;
  EXPECT_THROW(passkey_trial(o, 0), Error);
}

TEST(Passkey, ScoringComparesTheLeadingTokens) {
  EXPECT_TRUE(passkey_correct({5, 6, 7, 2}, {5, 6, 7}));
  EXPECT_TRUE(passkey_correct({5, 6, 7}, {5, 6, 7}));
  EXPECT_FALSE(passkey_correct({5, 6}, {5, 6, 7}));
  EXPECT_FALSE(passkey_correct({9, 5, 6, 7}, {5, 6, 7}));
  EXPECT_FALSE(passkey_correct({5, 6, 8}, {5, 6, 7}));
  EXPECT_THROW(passkey_correct({1}, {}), Error);
}

TEST(Niah, MatchesRulersTemplateWithTheNeedleBetweenRepetitions) {
  NiahOptions o;
  o.filler = "Fill.";
  o.filler_chars = 35;  // six repetitions of "Fill." and a cut
  std::set<double> depths;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const TextTrial t = niah_trial(o, seed);
    EXPECT_EQ(t.answer.size(), 7u);
    const std::string head =
        "Some special magic numbers are hidden within the following text. Make sure to "
        "memorize it. I will quiz you about the numbers afterwards.\n";
    ASSERT_EQ(t.prompt.rfind(head, 0), 0u) << t.prompt;
    const size_t n = t.prompt.find("One of the special magic numbers for ");
    ASSERT_NE(n, std::string::npos);
    const size_t colon = t.prompt.find(" is: ", n);
    const std::string key = t.prompt.substr(n + 37, colon - n - 37);
    EXPECT_NE(key.find('-'), std::string::npos) << key;
    EXPECT_EQ(t.prompt.substr(colon, 5 + t.answer.size() + 1), " is: " + t.answer + ".");
    const std::string tail = "\nWhat is the special magic number for " + key +
                             " mentioned in the provided text? The special magic number for " +
                             key + " mentioned in the provided text is";
    ASSERT_GE(t.prompt.size(), tail.size());
    EXPECT_EQ(t.prompt.substr(t.prompt.size() - tail.size()), tail);
    // Without the needle, the haystack is the filler exactly; the needle starts a repetition.
    std::string hay = t.prompt.substr(head.size(), t.prompt.size() - head.size() - tail.size());
    const std::string needle =
        "One of the special magic numbers for " + key + " is: " + t.answer + ".";
    const size_t at = hay.find(needle);
    std::string without = hay.substr(0, at) + hay.substr(at + needle.size());
    if (at > 0)
      without.erase(at - 1, 1);  // the space before the needle
    else if (!without.empty())
      without.erase(0, 1);  // or after it, at the start
    EXPECT_EQ(without, repeat_filler("Fill.", 35)) << hay;
    EXPECT_EQ(at == 0 || hay[at - 1] == ' ', true);
    EXPECT_EQ(at == 0 ? 0 : (at) % 6, 0u) << "the needle sits between repetitions";
    depths.insert(t.depth);
    EXPECT_EQ(niah_trial(o, seed).prompt, t.prompt);
  }
  EXPECT_GE(depths.size(), 5u);
}

TEST(Niah, ScoringFindsTheValueAnywhere) {
  EXPECT_TRUE(niah_correct(" 1234567.", "1234567"));
  EXPECT_TRUE(niah_correct("The number is 1234567", "1234567"));
  EXPECT_FALSE(niah_correct("123456", "1234567"));
  EXPECT_FALSE(niah_correct("", "1234567"));
}

TEST(Fit, FindsTheLargestFillerThatFits) {
  // A made-up tokenizer: 30 tokens of template, then one token per 4 characters.
  auto tokens = [](int64_t chars) { return 30 + (chars + 3) / 4; };
  EXPECT_EQ(fit_filler_chars(1024, tokens), 3976);  // 30 + 994 = 1024; 3977 would be 1025
  EXPECT_EQ(fit_filler_chars(30, tokens), 0);
  EXPECT_THROW(fit_filler_chars(29, tokens), Error);
  EXPECT_EQ(fit_filler_chars(65536, tokens), 4 * (65536 - 30));
}

TEST(Mqar, ContextQueriesAndLabelsFollowZoologysRules) {
  MqarOptions o;
  o.vocab = 8192;
  o.seq_len = 256;
  o.num_pairs = 16;
  std::vector<int64_t> gaps;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const MqarExample ex = mqar_example(o, seed);
    ASSERT_EQ(ex.inputs.size(), 256u);
    ASSERT_EQ(ex.labels.size(), 256u);
    std::set<int64_t> keys, values;
    std::map<int64_t, int64_t> value_of;
    for (int i = 0; i < 16; ++i) {
      const int64_t k = ex.inputs[2 * i], v = ex.inputs[2 * i + 1];
      EXPECT_GE(k, 1);
      EXPECT_LT(k, 4096);
      EXPECT_GE(v, 4096);
      EXPECT_LT(v, 8192);
      keys.insert(k);
      values.insert(v);
      value_of[k] = v;
      EXPECT_EQ(ex.labels[2 * i], kIgnore);
      EXPECT_EQ(ex.labels[2 * i + 1], kIgnore);
    }
    EXPECT_EQ(keys.size(), 16u);
    EXPECT_EQ(values.size(), 16u);
    std::set<int64_t> queried;
    for (size_t p = 32; p < 256; ++p) {
      EXPECT_GE(ex.inputs[p], 0);
      EXPECT_LT(ex.inputs[p], 8192);
      if (ex.labels[p] == kIgnore) continue;
      EXPECT_EQ((p - 32) % 2, 0u) << "queries sit at even offsets after the context";
      ASSERT_TRUE(value_of.count(ex.inputs[p])) << "a query is a key of the context";
      EXPECT_EQ(ex.labels[p], value_of[ex.inputs[p]]);
      queried.insert(ex.inputs[p]);
      gaps.push_back(static_cast<int64_t>(p - 32) / 2);
    }
    EXPECT_EQ(queried.size(), 16u) << "every key is queried once";
    EXPECT_EQ(mqar_example(o, seed).inputs, ex.inputs);
  }
  // The power law puts most queries early: with a = 0.01 over 112 slots, drawing 16 without
  // replacement, the median gap is far below the uniform draw's 56.
  std::sort(gaps.begin(), gaps.end());
  EXPECT_LT(gaps[gaps.size() / 2], 45);
  o.random_non_queries = false;
  const MqarExample zeros = mqar_example(o, 3);
  for (size_t p = 32; p < 256; ++p) {
    if (zeros.labels[p] == kIgnore) {
      EXPECT_EQ(zeros.inputs[p], 0);
    }
  }
}

TEST(Mqar, BadOptionsAreErrors) {
  MqarOptions o;
  o.seq_len = 63;
  EXPECT_THROW(mqar_example(o, 0), Error);
  o.seq_len = 64;
  o.num_pairs = 17;  // 4K > T
  EXPECT_THROW(mqar_example(o, 0), Error);
  o.num_pairs = 4;
  o.vocab = 6;  // keys from [1, 3): not 4 of them
  EXPECT_THROW(mqar_example(o, 0), Error);
  o.vocab = 8192;
  o.power_a = 0;
  EXPECT_THROW(mqar_example(o, 0), Error);
}

TEST(Mqar, AccuracyCountsLabelledPositionsOnly) {
  const std::vector<int64_t> labels = {kIgnore, 7, kIgnore, 9, 4};
  EXPECT_DOUBLE_EQ(mqar_accuracy({1, 7, 2, 9, 4}, labels), 1.0);
  EXPECT_DOUBLE_EQ(mqar_accuracy({7, 7, 9, 0, 4}, labels), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(mqar_accuracy({0, 0, 0, 0, 0}, labels), 0.0);
  EXPECT_THROW(mqar_accuracy({1, 2}, labels), Error);
  EXPECT_THROW(mqar_accuracy({1}, {kIgnore}), Error);
}

}  // namespace
}  // namespace subq::train
