#include "src/cpu/flash_cpu.h"
#include "src/ref/flash_ref.h"
namespace subq::cpu {
void flash_decode(const detail::FlashDecodeArgs& a) { ref::flash_decode(a); }  // WIP
}
