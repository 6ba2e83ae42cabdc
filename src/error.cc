#include "subq/error.h"

namespace subq {

void throw_arg_error(std::string_view where, std::string_view arg, std::string_view expected,
                     std::string_view given) {
  throw Error(detail::concat(where, ": ", arg, ": expected ", expected, ", got ", given));
}

}  // namespace subq
