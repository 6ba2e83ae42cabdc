#include "src/cpu/flash_cpu.h"
#include "src/ref/flash_ref.h"
namespace subq::cpu {
void flash_backward(const detail::FlashArgs& a) { ref::flash_backward(a); }  // WIP
}
