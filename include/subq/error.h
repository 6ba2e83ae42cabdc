// subq::Error and the argument checks every public entry point runs before touching memory.
//
// A message always names the argument, what was expected and what was given, e.g.
//   flash_attention_forward: k: expected head dim 64 (q.size(3)), got 32
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace subq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws "<where>: <arg>: expected <expected>, got <given>".
[[noreturn]] void throw_arg_error(std::string_view where, std::string_view arg,
                                  std::string_view expected, std::string_view given);

}  // namespace subq

// SUBQ_CHECK(cond, message parts...): throws subq::Error with the concatenated parts.
#define SUBQ_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) throw ::subq::Error(::subq::detail::concat(__VA_ARGS__)); \
  } while (0)

// SUBQ_CHECK_ARG(cond, where, arg, expected, given...): the standard argument message.
#define SUBQ_CHECK_ARG(cond, where, arg, expected, ...)                                   \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::subq::throw_arg_error(where, arg, expected, ::subq::detail::concat(__VA_ARGS__)); \
  } while (0)
