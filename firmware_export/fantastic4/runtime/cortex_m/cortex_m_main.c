/* FantastIC4 Cortex-M harness: runs every golden vector through the runtime on the target and
 * reports the outputs, the mismatches against the golden outputs and the SysTick ticks of each
 * inference (with QEMU's -icount, ticks are proportional to executed instructions). Output via
 * Arm semihosting, one line per sample:
 *
 *   f4-cortex-m: blob B bytes, status F4_OK, scratch S bytes, f4_model M bytes, N samples
 *   f4-cortex-m: calibration loop 1000 T1 loop 11000 T2 empty T0 ticks
 *   f4-cortex-m: stack prepare P invoke I bytes
 *   s <index> <ticks> <outputs as two hex digits each>
 *   f4-cortex-m: checked N samples, K mismatching
 *
 * Exit status (SYS_EXIT_EXTENDED): 0 all equal, 1 mismatches, 3 blob rejected or fault.
 *
 * The blob is the export's C array (f4_model_data.h), the golden vectors are the export's raw
 * files embedded by cortex_m_golden.S. The runtime is called exactly as on a device: f4_prepare
 * once into a static f4_model, then f4_invoke per sample with a static scratch buffer; neither
 * allocates. ecqx-simulate --cortex-m calls f4_prepare / f4_invoke on the same symbols
 * (g_f4_harness_*) directly in its emulator to count instructions. Not part of the runtime. */
#include <stddef.h>
#include <stdint.h>

#include "cortex_m_semihost.h"
#include "f4_model_data.h"
#include "f4_runtime.h"

extern const int8_t g_f4_golden_inputs[], g_f4_golden_inputs_end[];
extern const int8_t g_f4_golden_outputs[], g_f4_golden_outputs_end[];
extern uint32_t __stack_limit[];

/* Word-aligned, as the CSC accumulators require. */
#define F4_HARNESS_SCRATCH_WORDS ((F4_MODEL_SCRATCH_BYTES + 3u) / 4u + 1u)

f4_model g_f4_harness_model;
int32_t g_f4_harness_scratch[F4_HARNESS_SCRATCH_WORDS];
int8_t g_f4_harness_input[F4_MODEL_INPUT_FEATURES];
int8_t g_f4_harness_output[F4_MODEL_OUTPUT_FEATURES];

#define F4_SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define F4_SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define F4_SYST_CVR (*(volatile uint32_t*)0xE000E018u)
#define F4_STACK_PAINT 0xC5A5A5C5u

static void systick_start(void) {
  F4_SYST_RVR = 0x00FFFFFFu;
  F4_SYST_CVR = 0u;
  F4_SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
}

static uint32_t stack_pointer(void) {
  uint32_t sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  return sp;
}

/* Fill the stack below the caller's frame (keeping 64 bytes of margin) with a pattern. */
static __attribute__((noinline)) void stack_paint(void) {
  uint32_t* p = __stack_limit;
  uint32_t* const end = (uint32_t*)(stack_pointer() - 64u);
  while (p < end) *p++ = F4_STACK_PAINT;
}

/* Bytes between sp_before (the SP at the call) and the lowest word no longer holding the pattern. */
static uint32_t stack_used(uint32_t sp_before) {
  const uint32_t* p = __stack_limit;
  while (*p == F4_STACK_PAINT) ++p;
  return sp_before - (uint32_t)(uintptr_t)p;
}

static char* put_str(char* o, const char* s) {
  while (*s != '\0') *o++ = *s++;
  return o;
}

static char* put_uint(char* o, uint32_t v) {
  char tmp[10];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10u);
    v /= 10u;
  } while (v != 0u);
  while (n > 0) *o++ = tmp[--n];
  return o;
}

static char* put_hex8(char* o, uint8_t v) {
  static const char digits[] = "0123456789abcdef";
  *o++ = digits[v >> 4];
  *o++ = digits[v & 0x0Fu];
  return o;
}

/* Calibration for instruction counting with QEMU -icount: the ticks of a loop of 2 * loops + 1
 * instructions (MOV, then SUBS/BNE per iteration), and of an empty call between the same two
 * SysTick reads as timed_invoke (the reads' own overhead). */
static __attribute__((noinline)) void empty_call(void) { __asm__ volatile("" ::: "memory"); }

static __attribute__((noinline)) uint32_t timed_loop(uint32_t loops) {
  uint32_t t0, t1;
  t0 = F4_SYST_CVR;
  __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(loops) : : "cc");
  t1 = F4_SYST_CVR;
  return (t0 - t1) & 0x00FFFFFFu;
}

static __attribute__((noinline)) uint32_t timed_empty(void) {
  uint32_t t0, t1;
  t0 = F4_SYST_CVR;
  empty_call();
  t1 = F4_SYST_CVR;
  return (t0 - t1) & 0x00FFFFFFu;
}

/* SysTick counts down: ticks = (before - after) modulo 2^24. */
static __attribute__((noinline)) f4_status timed_invoke(uint32_t* ticks) {
  uint32_t t0, t1;
  f4_status st;
  t0 = F4_SYST_CVR;
  st = f4_invoke(&g_f4_harness_model, g_f4_harness_input, g_f4_harness_output, (int8_t*)g_f4_harness_scratch,
                 F4_MODEL_SCRATCH_BYTES);
  t1 = F4_SYST_CVR;
  *ticks = (t0 - t1) & 0x00FFFFFFu;
  return st;
}

int main(void) {
  static char line[64 + 2 * F4_MODEL_OUTPUT_FEATURES];
  const uint32_t n_in = F4_MODEL_INPUT_FEATURES, n_out = F4_MODEL_OUTPUT_FEATURES;
  const uint32_t samples = (uint32_t)(g_f4_golden_inputs_end - g_f4_golden_inputs) / n_in;
  uint32_t i, j, mismatching = 0, stack_prepare, stack_invoke = 0, sp;
  size_t scratch = 0;
  f4_status st;
  char* o;

  sp = stack_pointer();
  stack_paint();
  st = f4_prepare(F4_MODEL_DATA, (size_t)F4_MODEL_DATA_SIZE, &g_f4_harness_model);
  stack_prepare = stack_used(sp);
  if (st == F4_OK) st = f4_required_scratch(F4_MODEL_DATA, (size_t)F4_MODEL_DATA_SIZE, &scratch);
  o = put_str(line, "f4-cortex-m: blob ");
  o = put_uint(o, (uint32_t)F4_MODEL_DATA_SIZE);
  o = put_str(o, " bytes, status ");
  o = put_str(o, f4_status_name(st));
  o = put_str(o, ", scratch ");
  o = put_uint(o, (uint32_t)scratch);
  o = put_str(o, " bytes, f4_model ");
  o = put_uint(o, (uint32_t)sizeof(f4_model));
  o = put_str(o, " bytes, ");
  o = put_uint(o, samples);
  o = put_str(o, " samples\n");
  *o = '\0';
  f4_semihost_write0(line);
  if (st != F4_OK || scratch > F4_MODEL_SCRATCH_BYTES || g_f4_harness_model.input_features != n_in ||
      g_f4_harness_model.output_features != n_out) {
    f4_semihost_write0("f4-cortex-m: the blob does not match this harness\n");
    return 3;
  }
  systick_start();
  o = put_str(line, "f4-cortex-m: calibration loop 1000 ");
  o = put_uint(o, timed_loop(1000u));
  o = put_str(o, " loop 11000 ");
  o = put_uint(o, timed_loop(11000u));
  o = put_str(o, " empty ");
  o = put_uint(o, timed_empty());
  o = put_str(o, " ticks\n");
  *o = '\0';
  f4_semihost_write0(line);
  for (i = 0; i < samples; ++i) {
    uint32_t ticks = 0;
    int bad = 0;
    for (j = 0; j < n_in; ++j) g_f4_harness_input[j] = g_f4_golden_inputs[i * n_in + j];
    if (i == 0u) {
      sp = stack_pointer();
      stack_paint();
    }
    st = timed_invoke(&ticks);
    if (i == 0u) {
      stack_invoke = stack_used(sp);
      o = put_str(line, "f4-cortex-m: stack prepare ");
      o = put_uint(o, stack_prepare);
      o = put_str(o, " invoke ");
      o = put_uint(o, stack_invoke);
      o = put_str(o, " bytes\n");
      *o = '\0';
      f4_semihost_write0(line);
    }
    if (st != F4_OK) {
      f4_semihost_write0("f4-cortex-m: f4_invoke failed\n");
      return 3;
    }
    o = put_str(line, "s ");
    o = put_uint(o, i);
    *o++ = ' ';
    o = put_uint(o, ticks);
    *o++ = ' ';
    for (j = 0; j < n_out; ++j) {
      o = put_hex8(o, (uint8_t)g_f4_harness_output[j]);
      if (g_f4_harness_output[j] != g_f4_golden_outputs[i * n_out + j]) bad = 1;
    }
    *o++ = '\n';
    *o = '\0';
    f4_semihost_write0(line);
    mismatching += (uint32_t)bad;
  }
  o = put_str(line, "f4-cortex-m: checked ");
  o = put_uint(o, samples);
  o = put_str(o, " samples, ");
  o = put_uint(o, mismatching);
  o = put_str(o, " mismatching\n");
  *o = '\0';
  f4_semihost_write0(line);
  return mismatching == 0u ? 0 : 1;
}
