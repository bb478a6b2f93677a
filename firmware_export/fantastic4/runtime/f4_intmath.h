/* Fixed-point requantization exactly as TFLite Micro's reference kernels do it (double rounding).
 *
 * Mirrors firmware_export/intmath.py name for name (prefix f4_):
 *   saturating_rounding_doubling_high_mul -> f4_saturating_rounding_doubling_high_mul
 *   rounding_divide_by_pot                -> f4_rounding_divide_by_pot
 *   multiply_by_quantized_multiplier      -> f4_multiply_by_quantized_multiplier
 * (quantize_multiplier runs at export time only; the blob stores its result.)
 * Sources: TFLite common.h MultiplyByQuantizedMultiplier, gemmlowp fixedpoint.h.
 *
 * Portable C99: no implementation-defined right shift of negative values and no signed overflow.
 * Header-only, no state. */
#ifndef F4_INTMATH_H_
#define F4_INTMATH_H_

#include <stdint.h>

/* uint32 bit pattern -> int32 (two's complement), without implementation-defined conversion. */
static inline int32_t f4_wrap_int32(uint32_t u) {
  return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* floor(x / 2^exponent), i.e. an arithmetic right shift, for 0 <= exponent <= 31. GCC and Clang
 * define >> of a negative int as sign-extending (their manuals), so it is used there; the portable
 * expression elsewhere. */
static inline int32_t f4_shift_right_floor(int32_t x, int exponent) {
#if defined(__GNUC__)
  return x >> exponent;
#else
  return x >= 0 ? (int32_t)((uint32_t)x >> exponent) : -(int32_t)((uint32_t)(-(x + 1)) >> exponent) - 1;
#endif
}

/* gemmlowp SaturatingRoundingDoublingHighMul: trunc((ab + nudge) / 2^31) with nudge = 2^30 for
 * ab >= 0 and 1 - 2^30 for ab < 0. That equals floor((ab + 2^30) / 2^31) for every ab (for ab < 0,
 * with t = -ab: -floor((t - 1 + 2^30) / 2^31) = -ceil((t - 2^30) / 2^31)), which is bits 31..62 of
 * the two's complement sum: no 64-bit division. */
static inline int32_t f4_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  const int overflow = (a == b) && (a == INT32_MIN);
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int32_t high = f4_wrap_int32((uint32_t)(((uint64_t)ab + ((uint64_t)1 << 30)) >> 31));
  return overflow ? INT32_MAX : high;
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero, 0 <= exponent <= 31. */
static inline int32_t f4_rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)((((uint32_t)1) << exponent) - 1u);
  const int32_t remainder = (int32_t)((uint32_t)x & (uint32_t)mask);
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return f4_shift_right_floor(x, exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier(x, quantized_multiplier, shift), -31 <= shift <= 30.
 * The left shift wraps modulo 2^32 like the int32 C++ code (intmath.py emulates the same). */
static inline int32_t f4_multiply_by_quantized_multiplier(int32_t x, int32_t quantized_multiplier, int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  const int32_t shifted = f4_wrap_int32((uint32_t)x << left_shift);
  return f4_rounding_divide_by_pot(f4_saturating_rounding_doubling_high_mul(shifted, quantized_multiplier),
                                   right_shift);
}

#endif /* F4_INTMATH_H_ */
