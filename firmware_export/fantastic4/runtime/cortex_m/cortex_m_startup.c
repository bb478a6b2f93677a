/* Bare-metal start-up of the FantastIC4 Cortex-M harness (not part of the runtime).
 *
 * The vector table's first two words are the initial stack pointer and the reset handler; the
 * reset handler copies .data from flash, zeroes .bss and calls main, then ends the program
 * through Arm semihosting (SYS_EXIT_EXTENDED, so the emulator's exit status is main's result).
 * Any fault ends the program with status 3. Addresses come from the linker script
 * (mps2_an386.ld for QEMU's Cortex-M4 board, mps2_an505.ld for its Cortex-M33 board). */
#include <stdint.h>

#include "cortex_m_semihost.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[], __stack_top[];
int main(void);

typedef void (*f4_vector)(void);

void Reset_Handler(void);
void Fault_Handler(void);

void Reset_Handler(void) {
  const uint32_t* src = __data_load;
  uint32_t* dst;
  for (dst = __data_start; dst < __data_end; ++dst) *dst = *src++;
  for (dst = __bss_start; dst < __bss_end; ++dst) *dst = 0u;
  f4_semihost_exit(main());
  for (;;) {
  }
}

void Fault_Handler(void) {
  f4_semihost_write0("fault\n");
  f4_semihost_exit(3);
  for (;;) {
  }
}

/* Initial SP, reset, then NMI, HardFault, MemManage, BusFault, UsageFault, SecureFault (M33),
 * 3 reserved, SVCall, DebugMonitor, reserved, PendSV, SysTick. */
__attribute__((section(".isr_vector"), used)) const f4_vector g_f4_vectors[16] = {
    (f4_vector)(uintptr_t)__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler};
