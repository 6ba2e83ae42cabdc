# Checkpoint I/O (torch-free): safetensors files, config.json and the Hugging Face directory
# layout. Links only subq_base and nlohmann-json, so the fuzz targets and the torch-free tools
# build without the kernels.
find_package(nlohmann_json 3.10 REQUIRED)

option(SUBQ_FUZZ "Build the libFuzzer targets of the file parsers (clang only; scripts/fuzz.sh)" OFF)

set(SUBQ_CHECKPOINT_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/atomic_file.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/strict_json.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/safetensors.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/hf_config.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint.cc
)

add_library(subq_checkpoint STATIC ${SUBQ_CHECKPOINT_SOURCES})
# Headers are included as "model/safetensors.h", from the repository root.
target_include_directories(subq_checkpoint PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
target_link_libraries(subq_checkpoint PUBLIC subq_base nlohmann_json::nlohmann_json)

if(SUBQ_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
  set(_ckpt_tests ${PROJECT_SOURCE_DIR}/tests/model)

  add_executable(subq_checkpoint_tests
    ${_ckpt_tests}/test_safetensors.cc
    ${_ckpt_tests}/test_hf_config.cc
    ${_ckpt_tests}/test_checkpoint.cc
  )
  target_link_libraries(subq_checkpoint_tests PRIVATE subq_checkpoint GTest::gtest GTest::gtest_main)
  gtest_discover_tests(subq_checkpoint_tests DISCOVERY_MODE PRE_TEST PROPERTIES TIMEOUT 300)

  # Reads, writes and checks files for the interop test against PyPI's safetensors and
  # transformers (tests/model/safetensors_interop.py).
  add_executable(subq_safetensors_tool ${_ckpt_tests}/safetensors_tool.cc)
  target_link_libraries(subq_safetensors_tool PRIVATE subq_checkpoint)
  add_test(NAME checkpoint_interop
           COMMAND ${SUBQ_PYTHON} ${_ckpt_tests}/safetensors_interop.py
                   $<TARGET_FILE:subq_safetensors_tool>)
  set_tests_properties(checkpoint_interop PROPERTIES TIMEOUT 600)
endif()

if(SUBQ_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SUBQ_FUZZ needs clang (libFuzzer): configure with CXX=clang++")
  endif()
  # The parsers and what they call are instrumented for coverage and checked by ASan and UBSan;
  # the fuzz targets link only these two libraries, never the kernels.
  set(_fuzz_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
  foreach(_lib subq_base subq_checkpoint)
    target_compile_options(${_lib} PRIVATE -fsanitize=fuzzer-no-link ${_fuzz_flags})
  endforeach()
  foreach(_target fuzz_safetensors fuzz_hf_config)
    add_executable(${_target} ${PROJECT_SOURCE_DIR}/tests/fuzz/${_target}.cc)
    target_compile_options(${_target} PRIVATE -fsanitize=fuzzer ${_fuzz_flags})
    target_link_options(${_target} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${_target} PRIVATE subq_checkpoint)
  endforeach()
endif()
