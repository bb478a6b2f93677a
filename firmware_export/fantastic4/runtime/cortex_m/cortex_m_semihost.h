/* Arm semihosting (BKPT 0xAB, operation in r0, parameter in r1) for the Cortex-M harness: QEMU
 * with -semihosting-config enable=on,target=native and ecqx-simulate --cortex-m's emulator
 * implement SYS_WRITE0 and SYS_EXIT_EXTENDED. Not used by the runtime. */
#ifndef CORTEX_M_SEMIHOST_H_
#define CORTEX_M_SEMIHOST_H_

#include <stdint.h>

#define F4_SYS_WRITE0 0x04
#define F4_SYS_EXIT_EXTENDED 0x20
#define F4_ADP_STOPPED_APPLICATION_EXIT 0x20026u

static inline uint32_t f4_semihost(uint32_t op, const void* arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

/* Print a NUL-terminated string on the host. */
static inline void f4_semihost_write0(const char* s) { (void)f4_semihost(F4_SYS_WRITE0, s); }

/* End the program; the emulator exits with status code. */
static inline void f4_semihost_exit(int code) {
  const uint32_t block[2] = {F4_ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
  (void)f4_semihost(F4_SYS_EXIT_EXTENDED, block);
}

#endif /* CORTEX_M_SEMIHOST_H_ */
