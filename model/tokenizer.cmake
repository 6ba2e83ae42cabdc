# Tokenizers (torch-free): the built-in byte-level one, Hugging Face tokenizer.json byte-level
# BPE (split regexes through PCRE2, JSON through nlohmann-json) and SentencePiece models
# (through libsentencepiece). docs/tokenizers.md describes them.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SUBQ_PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(SUBQ_SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
find_package(nlohmann_json 3 REQUIRED)

add_library(subq_tokenizer STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/utf8.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_bytes.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_regex.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_bpe.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_sentencepiece.cc
)
# Headers are included as "model/tokenizer.h", from the repository root.
target_include_directories(subq_tokenizer PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
target_link_libraries(subq_tokenizer
  PUBLIC subq_base
  PRIVATE PkgConfig::SUBQ_PCRE2 PkgConfig::SUBQ_SENTENCEPIECE nlohmann_json::nlohmann_json)

if(SUBQ_BUILD_TESTS)
  # The top level enables testing only after add_subdirectory(model); without this, add_test
  # here would be silently ignored.
  enable_testing()
  find_package(GTest REQUIRED)
  include(GoogleTest)
  set(_tok_tests ${PROJECT_SOURCE_DIR}/tests/model)

  add_executable(subq_tokenizer_tests ${_tok_tests}/test_tokenizer.cc)
  # The SentencePiece tests train a small model with the library's trainer.
  target_link_libraries(subq_tokenizer_tests PRIVATE subq_tokenizer PkgConfig::SUBQ_SENTENCEPIECE
                        nlohmann_json::nlohmann_json GTest::gtest GTest::gtest_main)
  # The tests write small tokenizer files of their own; the trained ones come from Python.
  gtest_discover_tests(subq_tokenizer_tests DISCOVERY_MODE PRE_TEST PROPERTIES TIMEOUT 300)

  # Reads a tokenizer and a JSON list of texts, prints ids and decodes as JSON (for the Python
  # comparisons against the PyPI `tokenizers` and `sentencepiece` packages).
  add_executable(subq_tokenize_tool ${_tok_tests}/tokenize_tool.cc)
  target_link_libraries(subq_tokenize_tool PRIVATE subq_tokenizer nlohmann_json::nlohmann_json)

  add_test(NAME tokenizer_vs_hf
           COMMAND ${SUBQ_PYTHON} ${_tok_tests}/tokenizer_vs_hf.py $<TARGET_FILE:subq_tokenize_tool>)
  add_test(NAME tokenizer_vs_sentencepiece
           COMMAND ${SUBQ_PYTHON} ${_tok_tests}/tokenizer_vs_sentencepiece.py
                   $<TARGET_FILE:subq_tokenize_tool>)
  set_tests_properties(tokenizer_vs_hf tokenizer_vs_sentencepiece PROPERTIES TIMEOUT 600)
endif()
