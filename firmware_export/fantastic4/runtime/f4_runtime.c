/* FantastIC4-style 4-bit sparse MLP runtime. See f4_runtime.h and FORMAT.md.
 * Mirrors firmware_export/fantastic4/format.py (read_blob check order) and simulate.py (datapath). */
#include "f4_runtime.h"

#include "f4_intmath.h"

/* ------------------------------------------------------------------------------------------ */
/* CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320, as zlib.crc32), 4 bits per step. */

static const uint32_t f4_crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

/* crc32 field: CRC of the blob with the 4 bytes of the field itself read as zero. */
static uint32_t f4_crc32(const uint8_t* blob, size_t size) {
  uint32_t crc = 0xFFFFFFFFu;
  size_t i;
  for (i = 0; i < size; ++i) {
    const uint8_t b = (i >= F4_HDR_CRC32 && i < F4_HDR_CRC32 + 4u) ? 0u : blob[i];
    crc ^= b;
    crc = (crc >> 4) ^ f4_crc_nibble[crc & 0x0Fu];
    crc = (crc >> 4) ^ f4_crc_nibble[crc & 0x0Fu];
  }
  return crc ^ 0xFFFFFFFFu;
}

/* ------------------------------------------------------------------------------------------ */
/* Datapath (simulate.py: accumulate_partial_sums, combine_partial_sums, requantize). */

/* acc = folded_bias + sum over k = 1 .. n_values-1 of codebook[k] * s[k] (a k whose s[k] is 0 or
 * that is absent from the row adds 0; simulate.py counts only the multiplies with s[k] != 0). */
static inline int32_t f4_combine_partial_sums(int32_t folded_bias, const int32_t* codebook, uint32_t n_values,
                                              const int32_t* s) {
  int32_t acc = folded_bias;
  uint32_t k;
  for (k = 1; k < n_values; ++k) acc += codebook[k] * s[k];
  return acc;
}

/* The codebook as int32 locals (one load per use, no aliasing with the kernels' int8 stores). */
static inline void f4_codebook_words(const f4_layer* layer, int32_t* codebook) {
  uint32_t k;
  for (k = 0; k < F4_MAX_VALUES; ++k) codebook[k] = layer->codebook[k];
}

/* A layer's requantization constants in locals (the kernels' int8 stores could alias the layer's
 * fields, which would make the compiler reload them for every output). */
typedef struct {
  int32_t multiplier;
  int left, right; /* output_shift as TFLite splits it: max(shift, 0) and max(-shift, 0) */
  int32_t lo, hi, zero_point;
} f4_requant;

static inline f4_requant f4_requant_of(const f4_layer* layer) {
  f4_requant q;
  q.multiplier = layer->output_multiplier;
  q.left = layer->output_shift > 0 ? layer->output_shift : 0;
  q.right = layer->output_shift > 0 ? 0 : -layer->output_shift;
  q.zero_point = layer->output_zero_point;
  q.lo = (int32_t)layer->activation_min - layer->output_zero_point;
  q.hi = (int32_t)layer->activation_max - layer->output_zero_point;
  return q;
}

/* clamp(MultiplyByQuantizedMultiplier(acc) + output_zero_point, activation_min, activation_max),
 * with the addition exact (as in a wider type; FORMAT.md section 5): y is clamped to
 * [activation_min - output_zero_point, activation_max - output_zero_point] (both within +-255)
 * before the zero point is added, so y + output_zero_point never leaves int32 even when the
 * requantized value is near +-2^31. */
static inline int8_t f4_requantize(const f4_requant* q, int32_t acc) {
  /* f4_multiply_by_quantized_multiplier without the saturation branch of the high multiply, which
   * needs multiplier == INT32_MIN: f4_prepare accepts only multipliers >= 0, so the value is the
   * same (f4_saturating_rounding_doubling_high_mul explains the shift form). */
  const int64_t ab = (int64_t)f4_wrap_int32((uint32_t)acc << q->left) * q->multiplier;
  const int32_t high = f4_wrap_int32((uint32_t)(((uint64_t)ab + ((uint64_t)1 << 30)) >> 31));
  int32_t y = f4_rounding_divide_by_pot(high, q->right);
  if (y < q->lo) y = q->lo;
  if (y > q->hi) y = q->hi;
  return (int8_t)(y + q->zero_point);
}

/* Saturation to int16 / int8: the ACLE intrinsic (one SSAT) where the target has it. */
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT && defined(__GNUC__)
#include <arm_acle.h>
#define F4_SAT16(v) __ssat((v), 16)
#define F4_SAT8(v) __ssat((v), 8)
#else
static inline int32_t f4_sat(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }
#define F4_SAT16(v) f4_sat((v), -32768, 32767)
#define F4_SAT8(v) f4_sat((v), -128, 127)
#endif

/* y[r] = f4_requantize(acc[r]) for the out_features int32 accumulators of a CSC / CSCI layer. The
 * common case (no left shift, activation range the whole int8 range: NONE, and RELU with output
 * zero point -128) has its own loop: there clamp(y, lo, hi) + zp = clamp(clamp(y, -32768, 32767) +
 * zp, -128, 127) (|zp| <= 128, so the inner clamp changes nothing the outer one keeps): two SSAT
 * instructions on Arm. */
static void f4_requantize_accumulators(const f4_layer* layer, const uint32_t* acc, int8_t* y) {
  const f4_requant q = f4_requant_of(layer);
  const uint32_t out = layer->out_features;
  uint32_t r;
  if (q.left == 0 && layer->activation_min == -128 && layer->activation_max == 127) {
    const int32_t multiplier = q.multiplier, zero_point = q.zero_point;
    const int right = q.right;
    for (r = 0; r < out; ++r) {
      const int64_t ab = (int64_t)f4_wrap_int32(acc[r]) * multiplier;
      const int32_t high = f4_wrap_int32((uint32_t)(((uint64_t)ab + ((uint64_t)1 << 30)) >> 31));
      const int32_t v = f4_rounding_divide_by_pot(high, right);
      y[r] = (int8_t)F4_SAT8(F4_SAT16(v) + zero_point);
    }
    return;
  }
  for (r = 0; r < out; ++r) y[r] = f4_requantize(&q, f4_wrap_int32(acc[r]));
}

/* 16 stores (a loop would become a memset call). */
static inline void f4_clear_partial_sums(int32_t* s) {
  s[0] = s[1] = s[2] = s[3] = s[4] = s[5] = s[6] = s[7] = 0;
  s[8] = s[9] = s[10] = s[11] = s[12] = s[13] = s[14] = s[15] = 0;
}

/* DENSE4: every code nibble, zero codes skipped (a zero byte skips two weights at once). */
void f4_dense_layer_dense4(const f4_layer* layer, const int8_t* x, int8_t* y) {
  const uint8_t* codes = layer->weights;
  const uint32_t in = layer->in_features, out = layer->out_features, n_values = layer->n_values;
  const f4_requant q = f4_requant_of(layer);
  uint32_t e = 0, r;
  int32_t s[F4_MAX_VALUES], cb[F4_MAX_VALUES];
  f4_codebook_words(layer, cb);
  for (r = 0; r < out; ++r) {
    const uint32_t row0 = e, end = e + in;
    f4_clear_partial_sums(s);
    if (e & 1u) { /* the row starts in a high nibble */
      const uint32_t code = (uint32_t)codes[e >> 1] >> 4;
      s[code] += x[0]; /* s[0] collects the zero weights' inputs and is never used */
      ++e;
    }
    for (; e + 1u < end; e += 2u) {
      const uint32_t b = codes[e >> 1];
      if (b != 0u) {
        s[b & 0x0Fu] += x[e - row0];
        s[b >> 4] += x[e + 1u - row0];
      }
    }
    if (e < end) { /* the row ends in a low nibble */
      s[codes[e >> 1] & 0x0Fu] += x[e - row0];
      ++e;
    }
    y[r] = f4_requantize(&q, f4_combine_partial_sums(f4_read_i32(layer->bias + 4u * r), cb, n_values, s));
  }
}

/* Index of the lowest set bit of a non-zero byte. */
static const uint8_t f4_ctz8[256] = {
    0, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    5, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    6, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    5, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    7, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    5, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    6, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0,
    5, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0};

/* BITMAP: one mask bit per weight, one code nibble per set bit; visits only the set bits. */
void f4_dense_layer_bitmap(const f4_layer* layer, const int8_t* x, int8_t* y) {
  const uint32_t in = layer->in_features, out = layer->out_features, n_values = layer->n_values;
  const uint8_t* mask = layer->weights;
  const uint8_t* codes = mask + (((uint32_t)out * in + 7u) >> 3);
  const f4_requant q = f4_requant_of(layer);
  uint32_t e = 0, c = 0, r;
  int32_t s[F4_MAX_VALUES], cb[F4_MAX_VALUES];
  f4_codebook_words(layer, cb);
  for (r = 0; r < out; ++r) {
    const uint32_t row0 = e, end = e + in;
    f4_clear_partial_sums(s);
    while (e < end) {
      uint32_t n = 8u - (e & 7u);
      uint32_t bits = (uint32_t)mask[e >> 3] >> (e & 7u);
      if (n > end - e) {
        n = end - e;
        bits &= (1u << n) - 1u;
      }
      while (bits != 0u) {
        s[f4_read_nibble(codes, c)] += x[e + f4_ctz8[bits] - row0];
        ++c;
        bits &= bits - 1u;
      }
      e += n;
    }
    y[r] = f4_requantize(&q, f4_combine_partial_sums(f4_read_i32(layer->bias + 4u * r), cb, n_values, s));
  }
}

/* Index of the lowest set bit of a non-zero 16-bit value. */
static inline uint32_t f4_ctz16(uint32_t m) { return (m & 0xFFu) != 0u ? f4_ctz8[m & 0xFFu] : 8u + f4_ctz8[m >> 8]; }

/* CER: per row a value_mask, then per present value a count and column gaps (vu8); the sum of a
 * value's inputs is multiplied into the accumulator at once (no partial-sum array). */
void f4_dense_layer_cer(const f4_layer* layer, const int8_t* x, int8_t* y) {
  const uint8_t* p = layer->weights;
  const uint32_t out = layer->out_features;
  const f4_requant q = f4_requant_of(layer);
  uint32_t r;
  int32_t cb[F4_MAX_VALUES];
  f4_codebook_words(layer, cb);
  for (r = 0; r < out; ++r) {
    uint32_t value_mask = f4_read_u16(p);
    int32_t acc = f4_read_i32(layer->bias + 4u * r);
    p += 2;
    while (value_mask != 0u) {
      uint32_t count = f4_read_vu8(&p);
      uint32_t col = f4_read_vu8(&p);
      int32_t sum = x[col];
      while (--count != 0u) {
        uint32_t gap = *p++; /* fast path: a gap below 255 is one byte */
        if (gap == 0xFFu) {
          --p;
          gap = f4_read_vu8(&p);
        }
        col += gap + 1u;
        sum += x[col];
      }
      acc += cb[f4_ctz16(value_mask)] * sum;
      value_mask &= value_mask - 1u;
    }
    y[r] = f4_requantize(&q, acc);
  }
}

/* CSC (simulate.py init_accumulators, accumulate_columns, dense_layer_csc). */

/* acc[r] = the n little-endian words at bias (four per step). */
static inline void f4_copy_bias(const uint8_t* bias, uint32_t* acc, uint32_t n) {
  uint32_t r = 0;
  for (; r + 4u <= n; r += 4u) {
    const uint32_t a = f4_load_u32le(bias + 4u * r), b = f4_load_u32le(bias + 4u * r + 4u);
    const uint32_t c = f4_load_u32le(bias + 4u * r + 8u), d = f4_load_u32le(bias + 4u * r + 12u);
    acc[r] = a;
    acc[r + 1u] = b;
    acc[r + 2u] = c;
    acc[r + 3u] = d;
  }
  for (; r < n; ++r) acc[r] = f4_load_u32le(bias + 4u * r);
}

/* acc[r] = the bias section, which for CSC holds the TFLite bias (not folded). */
static inline void f4_init_accumulators(const f4_layer* layer, uint32_t* acc) {
  f4_copy_bias(layer->bias, acc, layer->out_features);
}


/* vu8 with a one-byte fast path (values below 255, the common case). */
static inline uint32_t f4_read_vu8_short(const uint8_t** p) {
  const uint32_t b = **p;
  if (b != 0xFFu) {
    (*p)++;
    return b;
  }
  return f4_read_vu8(p);
}

/* Per column j: column_size (vu8), then, if > 0, value_mask and per present value a count and row
 * gaps (vu8). With d = x[j] - input_zero_point: d == 0 (or an empty column) skips the column_size
 * bytes; else acc[r] += codebook[k] * d for every listed row r. The adds are modulo 2^32 (uint32);
 * for a validated blob every partial sum is within int32 (F4_ERR_BIAS), so the final value is
 * exactly TFLM's int32 accumulator. With out_features <= 256 every gap is < 255, i.e. one byte
 * (a validated blob has no row >= out_features), so the inner loop needs no vu8 test. */
static inline void f4_accumulate_columns_impl(const f4_layer* layer, const int8_t* x, uint32_t* acc,
                                              const int one_byte_gaps) {
  const uint8_t* p = layer->weights;
  const int32_t zp = layer->input_zero_point;
  uint32_t j;
  for (j = 0; j < layer->in_features; ++j) {
    const uint32_t column_size = f4_read_vu8_short(&p);
    const int32_t d = (int32_t)x[j] - zp;
    const uint8_t* next = p + column_size;
    uint32_t value_mask;
    if (d == 0 || column_size == 0u) {
      p = next;
      continue;
    }
    value_mask = f4_read_u16(p);
    p += 2;
    do {
      const uint32_t v = (uint32_t)((int32_t)layer->codebook[f4_ctz16(value_mask)] * d);
      const uint32_t count = f4_read_vu8_short(&p);
      uint32_t* a = acc + f4_read_vu8_short(&p);
      *a += v;
      if (one_byte_gaps) { /* count - 1 one-byte gaps, two per step */
        const uint8_t* const stop = p + count - 1u;
        if (((count - 1u) & 1u) != 0u) {
          a += (uint32_t)*p++ + 1u;
          *a += v;
        }
        while (p != stop) {
          a += (uint32_t)p[0] + 1u;
          *a += v;
          a += (uint32_t)p[1] + 1u;
          *a += v;
          p += 2;
        }
      } else {
        uint32_t i;
        for (i = 1; i < count; ++i) {
          a += f4_read_vu8_short(&p) + 1u;
          *a += v;
        }
      }
      value_mask &= value_mask - 1u;
    } while (value_mask != 0u);
    p = next;
  }
}

/* Two copies of the loop, so that the gap test is decided once per layer. */
static void f4_accumulate_columns(const f4_layer* layer, const int8_t* x, uint32_t* acc) {
  if (layer->out_features <= 256u) {
    f4_accumulate_columns_impl(layer, x, acc, 1);
  } else {
    f4_accumulate_columns_impl(layer, x, acc, 0);
  }
}

/* CSC: acc from the bias, the columns of the non-zero-point inputs added in, then requantized. */
void f4_dense_layer_csc(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc) {
  f4_init_accumulators(layer, acc);
  f4_accumulate_columns(layer, x, acc);
  f4_requantize_accumulators(layer, acc, y);
}

/* CSCI (simulate.py dense_layer_csci): the CSC datapath on the indexed layout. Column j's chunks
 * follow column j-1's, lengths[j] bytes; a chunk is a head (code | count << 4, count 1..15) and
 * count rows; v = codebook[code] * d is added to acc[row] of each (modulo 2^32, as in CSC). */

/* The rows of one chunk (1 to 15): the fall-through switch adds count times without a loop. */
#define F4_CSCI_ADD(rows, i) acc[(rows)[i]] += v
static inline void f4_csci_chunk_u8(uint32_t* acc, const uint8_t* rows, uint32_t count, uint32_t v) {
  switch (count) {
    case 15: F4_CSCI_ADD(rows, 14); /* fall through */
    case 14: F4_CSCI_ADD(rows, 13); /* fall through */
    case 13: F4_CSCI_ADD(rows, 12); /* fall through */
    case 12: F4_CSCI_ADD(rows, 11); /* fall through */
    case 11: F4_CSCI_ADD(rows, 10); /* fall through */
    case 10: F4_CSCI_ADD(rows, 9); /* fall through */
    case 9: F4_CSCI_ADD(rows, 8); /* fall through */
    case 8: F4_CSCI_ADD(rows, 7); /* fall through */
    case 7: F4_CSCI_ADD(rows, 6); /* fall through */
    case 6: F4_CSCI_ADD(rows, 5); /* fall through */
    case 5: F4_CSCI_ADD(rows, 4); /* fall through */
    case 4: F4_CSCI_ADD(rows, 3); /* fall through */
    case 3: F4_CSCI_ADD(rows, 2); /* fall through */
    case 2: F4_CSCI_ADD(rows, 1); /* fall through */
    default: F4_CSCI_ADD(rows, 0); break;
  }
}

/* Column j's byte length in a CSCI lengths table of lb (1, 2 or 4) bytes per entry. */
static inline uint32_t f4_csci_length(const uint8_t* lengths, uint32_t lb, uint32_t j) {
  return lb == 1u ? (uint32_t)lengths[j] : lb == 2u ? (uint32_t)f4_load_u16le(lengths + 2u * j) : f4_load_u32le(lengths + 4u * j);
}

/* One active column with 1-byte rows, [p, end) its chunks, d = x[j] - input_zero_point. */
static inline void f4_csci_column_u8(uint32_t* acc, const uint8_t* p, const uint8_t* end, const int8_t* codebook,
                                     int32_t d) {
  while (p != end) {
    const uint32_t head = *p++, count = head >> 4;
    f4_csci_chunk_u8(acc, p, count, (uint32_t)((int32_t)codebook[head & 0x0Fu] * d));
    p += count;
  }
}

/* One active column with 2-byte rows (out_features > 256): 2-byte heads, little-endian rows. */
static inline void f4_csci_column_u16(uint32_t* acc, const uint8_t* p, const uint8_t* end, const int8_t* codebook,
                                      int32_t d) {
  while (p != end) {
    const uint32_t head = *p, count = head >> 4;
    const uint32_t v = (uint32_t)((int32_t)codebook[head & 0x0Fu] * d);
    const uint8_t* const stop = p + 2u + 2u * count;
    for (p += 2; p != stop; p += 2) acc[f4_load_u16le(p)] += v;
  }
}

/* F4_THUMB2_ASM: the CSCI column loop for 1-byte rows and 1-byte lengths in Thumb-2 assembly (GCC
 * or Clang, ARMv7-M / ARMv7E-M / ARMv8-M Mainline: Cortex-M3/M4/M7/M33...); -DF4_NO_ASM or any
 * other target: the C loop, which computes the same. */
#if !defined(F4_NO_ASM) && defined(__GNUC__) && defined(__thumb2__) && \
    (defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__))
#define F4_THUMB2_ASM 1
#else
#define F4_THUMB2_ASM 0
#endif

/* What the column loop needs (the naked assembly function reads it at these word offsets). */
typedef struct {
  const int8_t* x;        /* 0: first input */
  const int8_t* x_end;    /* 4: one past the last input */
  const uint8_t* lengths; /* 8: 1-byte column lengths */
  const uint8_t* data;    /* 12: the first column's chunks */
  uint32_t* acc;          /* 16: accumulators */
  const int8_t* codebook; /* 20: 16 values (C loop) or 256 = 16 copies of them (assembly: indexed by the head) */
  int32_t zp;             /* 24: input_zero_point */
} f4_csci_job;

#if F4_THUMB2_ASM
/* Per column: LDRSB x, LDRB length, SUBS d = x - zp, the column end; d == 0: skip the column (8
 * instructions). Per chunk: LDRB head, LDRSB the value (job->codebook holds 256 = 16 copies of the
 * codebook, so the head indexes it directly), MUL v, TBB on the head (a 256-byte table: 16 entries
 * per count) into 15 copies of "LDRB row (post-increment), LDR acc[row], ADD v, STR" entered at the
 * count-th last one, then CMP/BNE to the next chunk: 4 instructions per row, 6 per chunk (a validated
 * chunk has 1..15 rows; the count-0 entries add nothing). AAPCS: r4-r11 and lr saved. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter" /* job arrives in r0 */
__attribute__((naked, noinline)) static void f4_csci_columns_t2(const f4_csci_job* job) {
  __asm__ volatile(
      "push    {r4-r11, lr}\n\t"
      "ldr     r1, [r0, #4]\n\t"
      "ldr     r2, [r0, #8]\n\t"
      "ldr     r6, [r0, #12]\n\t"
      "ldr     r3, [r0, #16]\n\t"
      "ldr     r4, [r0, #20]\n\t"
      "ldr     r5, [r0, #24]\n\t"
      "ldr     r0, [r0, #0]\n"
      "1:\n\t"                         /* column: r0 x, r2 length, r6 p */
      "ldrsb.w r8, [r0], #1\n\t"
      "ldrb.w  r7, [r2], #1\n\t"
      "subs    r8, r8, r5\n\t"
      "add     r7, r6\n\t"             /* r7: column end (no flags) */
      "bne.w   20f\n\t"                /* d != 0: to the chunk loop's test (an empty column ends at once) */
      "mov     r6, r7\n\t"             /* d == 0: skip the column */
      "cmp     r0, r1\n\t"
      "bne     1b\n\t"
      "pop     {r4-r11, pc}\n"
      "2:\n\t"                         /* chunk */
      "ldrb.w  r9, [r6], #1\n\t"
      "ldrsb.w r10, [r4, r9]\n\t"     /* the value: codebook[head & 15] from the 256-byte copy */
      "mul     r11, r10, r8\n\t"
      "tbb     [pc, r9]\n"            /* indexed by the whole head: 16 entries per count */
      "5:\n\t"
      ".rept 16\n\t.byte (20f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (21f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (22f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (23f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (24f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (25f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (26f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (27f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (28f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (29f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (30f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (31f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (32f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (33f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (34f-5b)/2\n\t.endr\n\t"
      ".rept 16\n\t.byte (35f-5b)/2\n\t.endr\n\t"
      ".p2align 1\n"
#define F4_ASM_ROW(label)                       \
      #label ":\n\t"                            \
      "ldrb.w  r12, [r6], #1\n\t"               \
      "ldr.w   r10, [r3, r12, lsl #2]\n\t"      \
      "add     r10, r10, r11\n\t"               \
      "str.w   r10, [r3, r12, lsl #2]\n"
      F4_ASM_ROW(35) F4_ASM_ROW(34) F4_ASM_ROW(33) F4_ASM_ROW(32) F4_ASM_ROW(31) F4_ASM_ROW(30) F4_ASM_ROW(29)
      F4_ASM_ROW(28) F4_ASM_ROW(27) F4_ASM_ROW(26) F4_ASM_ROW(25) F4_ASM_ROW(24) F4_ASM_ROW(23) F4_ASM_ROW(22)
      F4_ASM_ROW(21)
#undef F4_ASM_ROW
      "20:\n\t"
      "cmp     r6, r7\n\t"
      "bne.w   2b\n\t"
      "cmp     r0, r1\n\t"
      "bne.w   1b\n\t"
      "pop     {r4-r11, pc}\n");
}
#pragma GCC diagnostic pop
#endif

/* The column loop in C (any target; also Thumb-2 layers with 2-byte rows or lengths). */
static void f4_csci_columns_c(const f4_csci_job* job, uint32_t rb, uint32_t lb) {
  const int8_t* x = job->x;
  const uint8_t* p = job->data;
  uint32_t j = 0;
  for (; x != job->x_end; ++x, ++j) {
    const int32_t d = (int32_t)*x - job->zp;
    const uint32_t len = f4_csci_length(job->lengths, lb, j);
    if (d != 0 && len != 0u) {
      if (rb == 1u) {
        f4_csci_column_u8(job->acc, p, p + len, job->codebook, d);
      } else {
        f4_csci_column_u16(job->acc, p, p + len, job->codebook, d);
      }
    }
    p += len;
  }
}

void f4_dense_layer_csci(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc) {
  const uint8_t* const w = layer->weights;
  const uint32_t in = layer->in_features, out = layer->out_features, rb = w[0], lb = w[1];
  f4_csci_job job;
  job.x = x;
  job.x_end = x + in;
  job.lengths = w + F4_CSCI_HEADER;
  job.data = job.lengths + in * lb;
  job.acc = acc;
  job.codebook = layer->codebook;
  job.zp = layer->input_zero_point;
  f4_copy_bias(layer->bias, acc, out);
#if F4_THUMB2_ASM
  if (rb == 1u && lb == 1u) {
    uint32_t by_head[64]; /* as int8: by_head[h] = codebook[h & 15], 16 copies of the 16 bytes */
    uint32_t cb4[4], r;
    memcpy(cb4, layer->codebook, sizeof(cb4));
    for (r = 0; r < 64u; r += 4u) {
      by_head[r] = cb4[0];
      by_head[r + 1u] = cb4[1];
      by_head[r + 2u] = cb4[2];
      by_head[r + 3u] = cb4[3];
    }
    job.codebook = (const int8_t*)(const void*)by_head;
    f4_csci_columns_t2(&job);
  } else {
    f4_csci_columns_c(&job, rb, lb);
  }
#else
  f4_csci_columns_c(&job, rb, lb);
#endif
  f4_requantize_accumulators(layer, acc, y);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation of the weights section content (format.py decode_dense4/_bitmap/_cer/_csc). */

static f4_status f4_check_dense4(const f4_layer* layer) {
  const uint32_t n = (uint32_t)layer->out_features * layer->in_features;
  uint32_t e, nonzero = 0;
  if ((n & 1u) && (layer->weights[n >> 1] >> 4) != 0u) return F4_ERR_WEIGHTS;
  for (e = 0; e < n; ++e) {
    const uint8_t code = f4_read_nibble(layer->weights, e);
    if (code >= layer->n_values) return F4_ERR_WEIGHTS;
    if (code != 0u) ++nonzero;
  }
  return nonzero == layer->nnz ? F4_OK : F4_ERR_WEIGHTS;
}

static f4_status f4_check_bitmap(const f4_layer* layer) {
  const uint32_t n = (uint32_t)layer->out_features * layer->in_features;
  const uint32_t mask_size = (n + 7u) >> 3;
  const uint8_t* codes = layer->weights + mask_size;
  uint32_t e, c, popcount = 0;
  if ((n & 7u) && (layer->weights[mask_size - 1u] >> (n & 7u)) != 0u) return F4_ERR_WEIGHTS;
  for (e = 0; e < n; ++e) popcount += (layer->weights[e >> 3] >> (e & 7u)) & 1u;
  if (popcount != layer->nnz) return F4_ERR_WEIGHTS;
  if ((layer->nnz & 1u) && (codes[layer->nnz >> 1] >> 4) != 0u) return F4_ERR_WEIGHTS;
  for (c = 0; c < layer->nnz; ++c) {
    const uint8_t code = f4_read_nibble(codes, c);
    if (code == 0u || code >= layer->n_values) return F4_ERR_WEIGHTS;
  }
  return F4_OK;
}

/* Bounded vu8: fails past end or above limit (summed in 64 bits, so no overflow for any limit). */
static int f4_read_vu8_checked(const uint8_t** p, const uint8_t* end, uint32_t limit, uint32_t* value) {
  uint64_t v = 0;
  for (;;) {
    uint8_t b;
    if (*p >= end) return 0;
    b = **p;
    (*p)++;
    v += b;
    if (v > limit) return 0;
    if (b != 0xFFu) break;
  }
  *value = (uint32_t)v;
  return 1;
}

/* One group's read position in f4_check_distinct: its smallest index not yet marked, how many
 * indices are left (that one included), and the next gap (kind 0: CER/CSC vu8 gaps) or the next
 * absolute row (kind 1 or 2: CSCI rows of that many bytes; chunk_left rows are left in the current
 * chunk, after which the next chunk of the same code follows its head). */
typedef struct {
  const uint8_t* p;
  uint32_t index;
  uint32_t remaining;
  uint32_t chunk_left;
  uint32_t kind;
} f4_group_cursor;

/* The group's next index after index (the bytes were validated before). */
static inline uint32_t f4_cursor_advance(const uint8_t** q, uint32_t index, uint32_t kind, uint32_t* chunk_left) {
  if (kind == 0u) return index + f4_read_vu8(q) + 1u;
  if (*chunk_left == 0u) { /* the next chunk of the same code: skip its head */
    *chunk_left = (uint32_t)(**q >> 4);
    *q += kind;
  }
  --*chunk_left;
  index = kind == 1u ? (uint32_t)**q : (uint32_t)f4_read_u16(*q);
  *q += kind;
  return index;
}

/* Bits of the window of f4_check_distinct (a multiple of 32; 32 bytes of stack). */
#define F4_DISTINCT_WINDOW 256u

/* "an index appears in at most one group", for the n (<= 15) strictly increasing index lists of
 * one row (column), with a bitset over a window of F4_DISTINCT_WINDOW indices: the window starts
 * at the smallest index not yet marked, every group marks its indices inside the window, and a bit
 * already set is an index listed twice (within a group indices strictly increase, so by two
 * groups). After a window every group's next index is past it, so the windows are disjoint and
 * every index is marked in exactly one window, the same one for two groups that both list it:
 * exact. A finished group is swapped out; one group left cannot repeat an index. O(entries +
 * windows * n), stack only; the gaps were read with bounds checks before, so f4_read_vu8 stays
 * inside the row (column). (A k-way merge that takes the smallest of the n heads per entry is also
 * exact, but scans n heads per entry: 4-5x the added instructions on the 784-256-128-10 benchmark.) */
static f4_status f4_check_distinct(f4_group_cursor* g, uint32_t n) {
  uint32_t seen[F4_DISTINCT_WINDOW / 32u];
  while (n > 1u) {
    uint32_t i, w, base = g[0].index;
    for (i = 1; i < n; ++i) {
      if (g[i].index < base) base = g[i].index;
    }
    for (w = 0; w < F4_DISTINCT_WINDOW / 32u; ++w) seen[w] = 0u;
    i = 0;
    while (i < n) {
      const uint8_t* q = g[i].p;
      uint32_t index = g[i].index, remaining = g[i].remaining, chunk_left = g[i].chunk_left;
      while (index - base < F4_DISTINCT_WINDOW) {
        const uint32_t offset = index - base, bit = 1u << (offset & 31u);
        if ((seen[offset >> 5] & bit) != 0u) return F4_ERR_WEIGHTS;
        seen[offset >> 5] |= bit;
        if (--remaining == 0u) break;
        index = f4_cursor_advance(&q, index, g[i].kind, &chunk_left);
      }
      if (remaining == 0u) {
        g[i] = g[--n]; /* the group moved into slot i is scanned next */
      } else {
        g[i].p = q;
        g[i].index = index;
        g[i].remaining = remaining;
        g[i].chunk_left = chunk_left;
        ++i;
      }
    }
  }
  return F4_OK;
}

/* One value_mask + groups (a CER row, a CSC column) in [*p, end): value_mask bits only in
 * 1..n_values-1 (and not 0 unless empty_ok), counts >= 1, indices (columns for CER, rows for CSC)
 * strictly increasing within a group and < n_index, and an index in at most one group
 * (f4_check_distinct, once the whole row/column has passed the other rules). Adds the counts to
 * *total. */
static f4_status f4_check_groups(const uint8_t** p, const uint8_t* end, uint32_t n_values, uint32_t n_index,
                                 int empty_ok, uint32_t* total) {
  f4_group_cursor groups[F4_MAX_VALUES - 1u];
  uint32_t value_mask, k, n_groups = 0;
  if (end - *p < 2) return F4_ERR_WEIGHTS;
  value_mask = f4_read_u16(*p);
  *p += 2;
  if ((value_mask & 1u) || (value_mask >> n_values) != 0u) return F4_ERR_WEIGHTS;
  if (value_mask == 0u && !empty_ok) return F4_ERR_WEIGHTS;
  for (k = 1; k < n_values; ++k) {
    uint32_t count, i, index = 0, gap;
    if (!((value_mask >> k) & 1u)) continue;
    if (!f4_read_vu8_checked(p, end, n_index, &count) || count == 0u) return F4_ERR_WEIGHTS;
    for (i = 0; i < count; ++i) {
      if (!f4_read_vu8_checked(p, end, n_index, &gap)) return F4_ERR_WEIGHTS;
      index = (i == 0u) ? gap : index + gap + 1u;
      if (index >= n_index) return F4_ERR_WEIGHTS;
      if (i == 0u) {
        groups[n_groups].p = *p;
        groups[n_groups].index = index;
        groups[n_groups].remaining = count;
        groups[n_groups].chunk_left = 0u;
        groups[n_groups].kind = 0u;
        ++n_groups;
      }
    }
    *total += count;
  }
  return f4_check_distinct(groups, n_groups);
}

/* Every rule of FORMAT.md CER, including "a column in at most one group of a row". */
static f4_status f4_check_cer(const f4_layer* layer) {
  const uint8_t* p = layer->weights;
  const uint8_t* end = layer->weights + layer->weights_size;
  uint32_t r, total = 0;
  for (r = 0; r < layer->out_features; ++r) {
    const f4_status st = f4_check_groups(&p, end, layer->n_values, layer->in_features, 1, &total);
    if (st != F4_OK) return st;
  }
  if (p != end || total != layer->nnz) return F4_ERR_WEIGHTS;
  return F4_OK;
}

/* Every rule of FORMAT.md CSC, including "a row in at most one group of a column": column_size
 * within the section and equal to the bytes its groups take, a non-zero value_mask in a non-empty
 * column. */
static f4_status f4_check_csc(const f4_layer* layer) {
  const uint8_t* p = layer->weights;
  const uint8_t* end = layer->weights + layer->weights_size;
  uint32_t j, total = 0;
  for (j = 0; j < layer->in_features; ++j) {
    uint32_t column_size;
    const uint8_t* column_end;
    f4_status st;
    if (!f4_read_vu8_checked(&p, end, (uint32_t)(end - p), &column_size)) return F4_ERR_WEIGHTS;
    if (column_size > (uint32_t)(end - p)) return F4_ERR_WEIGHTS;
    if (column_size == 0u) continue;
    column_end = p + column_size;
    st = f4_check_groups(&p, column_end, layer->n_values, layer->out_features, 0, &total);
    if (st != F4_OK) return st;
    if (p != column_end) return F4_ERR_WEIGHTS;
  }
  if (p != end || total != layer->nnz) return F4_ERR_WEIGHTS;
  return F4_OK;
}

/* One CSCI column in [p, end) with rb-byte rows (format.py decode_csci): chunks of a head
 * (code | count << 4, then a zero byte when rb = 2) and count rows; codes 1..n_values-1 ascending,
 * a code continuing into the next chunk only after a full chunk of F4_CSCI_CHUNK rows; count >= 1;
 * the rows of a code strictly increasing (across its chunks) and < n_rows; a row under at most one
 * code (f4_check_distinct, one cursor per code). Adds the counts to *total. */
static f4_status f4_check_csci_column(const uint8_t* p, const uint8_t* end, uint32_t rb, uint32_t n_values,
                                      uint32_t n_rows, uint32_t* total) {
  f4_group_cursor groups[F4_MAX_VALUES - 1u];
  uint32_t n_groups = 0, prev_code = 0, prev_count = F4_CSCI_CHUNK, prev_row = 0;
  while (p != end) {
    uint32_t head, k, count, i;
    if ((uint32_t)(end - p) < rb) return F4_ERR_WEIGHTS;
    head = p[0];
    if (rb == 2u && p[1] != 0u) return F4_ERR_WEIGHTS;
    k = head & 0x0Fu;
    count = head >> 4;
    if (k < 1u || k >= n_values || count == 0u) return F4_ERR_WEIGHTS;
    if (k < prev_code || (k == prev_code && prev_count != F4_CSCI_CHUNK)) return F4_ERR_WEIGHTS;
    p += rb;
    if ((uint32_t)(end - p) / rb < count) return F4_ERR_WEIGHTS;
    for (i = 0; i < count; ++i) {
      const uint32_t row = rb == 1u ? (uint32_t)p[0] : (uint32_t)f4_read_u16(p);
      if (row >= n_rows) return F4_ERR_WEIGHTS;
      if (i == 0u && k != prev_code) { /* a new code: its cursor starts here */
        groups[n_groups].p = p + rb;
        groups[n_groups].index = row;
        groups[n_groups].remaining = 0u;
        groups[n_groups].chunk_left = count - 1u;
        groups[n_groups].kind = rb;
        ++n_groups;
      } else if (row <= prev_row) {
        return F4_ERR_WEIGHTS;
      }
      prev_row = row;
      p += rb;
    }
    groups[n_groups - 1u].remaining += count;
    *total += count;
    prev_code = k;
    prev_count = count;
  }
  return f4_check_distinct(groups, n_groups);
}

/* Every rule of FORMAT.md CSCI: header (row_bytes by out_features, length_bytes the narrowest of 1,
 * 2, 4 holding the longest column, reserved 0), column lengths adding up to the section, every
 * column (f4_check_csci_column), counts adding up to nnz. */
static f4_status f4_check_csci(const f4_layer* layer) {
  const uint8_t* w = layer->weights;
  const uint32_t in = layer->in_features, size = layer->weights_size;
  const uint32_t rb = layer->out_features <= 256u ? 1u : 2u;
  uint32_t lb, j, total = 0, longest = 0;
  uint64_t sum = 0;
  const uint8_t* p;
  if (size < F4_CSCI_HEADER) return F4_ERR_WEIGHTS;
  lb = w[1];
  if (w[0] != rb || (lb != 1u && lb != 2u && lb != 4u) || w[2] != 0u || w[3] != 0u) return F4_ERR_WEIGHTS;
  if ((uint64_t)F4_CSCI_HEADER + (uint64_t)in * lb > size) return F4_ERR_WEIGHTS;
  for (j = 0; j < in; ++j) {
    const uint32_t len = f4_csci_length(w + F4_CSCI_HEADER, lb, j);
    sum += len;
    if (len > longest) longest = len;
  }
  if (lb != (longest <= 0xFFu ? 1u : longest <= 0xFFFFu ? 2u : 4u)) return F4_ERR_WEIGHTS;
  if (sum != (uint64_t)(size - F4_CSCI_HEADER - in * lb)) return F4_ERR_WEIGHTS;
  p = w + F4_CSCI_HEADER + in * lb;
  for (j = 0; j < in; ++j) {
    const uint32_t len = f4_csci_length(w + F4_CSCI_HEADER, lb, j);
    const f4_status st = f4_check_csci_column(p, p + len, rb, layer->n_values, layer->out_features, &total);
    if (st != F4_OK) return st;
    p += len;
  }
  if (total != layer->nnz) return F4_ERR_WEIGHTS;
  return F4_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The layout table: drives validation, size rules and dispatch (format.py LAYOUTS). */

#define F4_SIZE_FROM_CONTENT UINT64_MAX

static uint64_t f4_size_dense4(uint64_t out, uint64_t in, uint64_t nnz) {
  (void)nnz;
  return (out * in + 1u) / 2u;
}
static uint64_t f4_size_bitmap(uint64_t out, uint64_t in, uint64_t nnz) { return (out * in + 7u) / 8u + (nnz + 1u) / 2u; }
static uint64_t f4_size_from_content(uint64_t out, uint64_t in, uint64_t nnz) {
  (void)out;
  (void)in;
  (void)nnz;
  return F4_SIZE_FROM_CONTENT;
}

/* format.py acc_per_input: the largest |contribution| of one input to an accumulator. */
static int64_t f4_acc_per_input(int folded_bias, int32_t input_zero_point) {
  const int64_t up = 127 - (int64_t)input_zero_point, down = (int64_t)input_zero_point + 128;
  if (folded_bias) return F4_ACC_PER_INPUT;
  return 128 * (up > down ? up : down);
}

/* The row-major kernels need no accumulator workspace. */
static void f4_layer_dense4(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc) {
  (void)acc;
  f4_dense_layer_dense4(layer, x, y);
}
static void f4_layer_bitmap(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc) {
  (void)acc;
  f4_dense_layer_bitmap(layer, x, y);
}
static void f4_layer_cer(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc) {
  (void)acc;
  f4_dense_layer_cer(layer, x, y);
}

typedef struct {
  uint8_t id;
  const char* name;
  uint64_t (*weights_size)(uint64_t out, uint64_t in, uint64_t nnz);
  f4_status (*check)(const f4_layer* layer);
  void (*dense_layer)(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc);
  uint8_t folded_bias; /* 1: bias section = folded bias; 0: TFLite bias, needs the acc scratch */
} f4_layout_ops;

static const f4_layout_ops f4_layouts[F4_N_LAYOUTS] = {
    {F4_LAYOUT_DENSE4, "dense4", f4_size_dense4, f4_check_dense4, f4_layer_dense4, 1u},
    {F4_LAYOUT_BITMAP, "bitmap", f4_size_bitmap, f4_check_bitmap, f4_layer_bitmap, 1u},
    {F4_LAYOUT_CER, "cer", f4_size_from_content, f4_check_cer, f4_layer_cer, 1u},
    {F4_LAYOUT_CSC, "csc", f4_size_from_content, f4_check_csc, f4_dense_layer_csc, 0u},
    {F4_LAYOUT_CSCI, "csci", f4_size_from_content, f4_check_csci, f4_dense_layer_csci, 0u},
};

/* ------------------------------------------------------------------------------------------ */
/* Prepare (format.py read_blob, same order of checks). */

static int f4_inside(uint32_t offset, uint32_t size, uint32_t total) { return offset <= total && size <= total - offset; }

static f4_status f4_check_header(const uint8_t* blob, size_t blob_size, uint16_t* n_layers) {
  const uint8_t* h = blob;
  uint32_t n;
  if (blob_size < F4_HEADER_SIZE) return F4_ERR_SIZE;
  if (h[0] != F4_MAGIC0 || h[1] != F4_MAGIC1 || h[2] != F4_MAGIC2 || h[3] != F4_MAGIC3) return F4_ERR_MAGIC;
  if (h[F4_HDR_VERSION] != F4_VERSION) return F4_ERR_VERSION;
  if (h[F4_HDR_HEADER_SIZE] != F4_HEADER_SIZE || h[F4_HDR_ENTRY_SIZE] != F4_ENTRY_SIZE || h[F4_HDR_RESERVED0] != 0u ||
      f4_read_u16(h + F4_HDR_RESERVED1) != 0u || f4_read_u32(h + F4_HDR_RESERVED2) != 0u) {
    return F4_ERR_HEADER;
  }
  n = f4_read_u16(h + F4_HDR_N_LAYERS);
  if (n < 1u || n > F4_MAX_LAYERS) return F4_ERR_LAYER_COUNT;
  if ((uint64_t)f4_read_u32(h + F4_HDR_TOTAL_SIZE) != (uint64_t)blob_size) return F4_ERR_SIZE;
  if (f4_read_u32(h + F4_HDR_CRC32) != f4_crc32(blob, blob_size)) return F4_ERR_CRC;
  if ((uint64_t)F4_HEADER_SIZE + (uint64_t)F4_ENTRY_SIZE * n > (uint64_t)blob_size) return F4_ERR_SIZE;
  *n_layers = (uint16_t)n;
  return F4_OK;
}

static f4_status f4_check_codebook(const uint8_t* e, f4_layer* l) {
  uint32_t k, m;
  l->n_values = e[F4_ENT_N_VALUES];
  if (l->n_values < 1u || l->n_values > F4_MAX_VALUES) return F4_ERR_CODEBOOK;
  for (k = 0; k < F4_MAX_VALUES; ++k) l->codebook[k] = f4_read_i8(e + F4_ENT_CODEBOOK + k);
  if (l->codebook[0] != 0) return F4_ERR_CODEBOOK;
  for (k = 1; k < F4_MAX_VALUES; ++k) {
    if (k < l->n_values) {
      if (l->codebook[k] == 0) return F4_ERR_CODEBOOK;
      for (m = 1; m < k; ++m) {
        if (l->codebook[m] == l->codebook[k]) return F4_ERR_CODEBOOK;
      }
    } else if (l->codebook[k] != 0) {
      return F4_ERR_CODEBOOK;
    }
  }
  return F4_OK;
}

static f4_status f4_check_layer(const uint8_t* blob, uint32_t total, uint32_t data_start, const uint8_t* e,
                                const f4_layer* prev, f4_layer* l) {
  uint32_t bias_offset, bias_size, weights_offset, r;
  uint64_t want;
  int64_t limit;
  f4_status st;
  const f4_layout_ops* ops;

  l->layout = e[F4_ENT_LAYOUT];
  if (l->layout >= F4_N_LAYOUTS) return F4_ERR_LAYOUT;
  ops = &f4_layouts[l->layout];
  st = f4_check_codebook(e, l);
  if (st != F4_OK) return st;

  l->input_zero_point = f4_read_i8(e + F4_ENT_INPUT_ZERO_POINT);
  l->output_zero_point = f4_read_i8(e + F4_ENT_OUTPUT_ZERO_POINT);
  l->activation_min = f4_read_i8(e + F4_ENT_ACTIVATION_MIN);
  l->activation_max = f4_read_i8(e + F4_ENT_ACTIVATION_MAX);
  l->output_shift = f4_read_i8(e + F4_ENT_OUTPUT_SHIFT);
  l->output_multiplier = f4_read_i32(e + F4_ENT_OUTPUT_MULTIPLIER);
  if (l->activation_min > l->activation_max) return F4_ERR_QUANT;
  if (l->output_shift < -31 || l->output_shift > 30) return F4_ERR_QUANT;
  if (l->output_multiplier < 0) return F4_ERR_QUANT;
  if (e[F4_ENT_RESERVED] != 0u || f4_read_u32(e + F4_ENT_RESERVED_U32) != 0u) return F4_ERR_QUANT;

  l->in_features = f4_read_u16(e + F4_ENT_IN_FEATURES);
  l->out_features = f4_read_u16(e + F4_ENT_OUT_FEATURES);
  l->nnz = f4_read_u32(e + F4_ENT_NNZ);
  if (l->in_features < 1u || l->out_features < 1u) return F4_ERR_SHAPE;
  if ((uint64_t)l->nnz > (uint64_t)l->in_features * l->out_features) return F4_ERR_SHAPE;
  if (prev != NULL) {
    if (l->in_features != prev->out_features) return F4_ERR_CHAIN;
    if (l->input_zero_point != prev->output_zero_point) return F4_ERR_CHAIN;
  }

  bias_offset = f4_read_u32(e + F4_ENT_BIAS_OFFSET);
  bias_size = f4_read_u32(e + F4_ENT_BIAS_SIZE);
  if ((bias_offset & 3u) != 0u || bias_offset < data_start || bias_size != 4u * l->out_features ||
      !f4_inside(bias_offset, bias_size, total)) {
    return F4_ERR_SECTION;
  }
  weights_offset = f4_read_u32(e + F4_ENT_WEIGHTS_OFFSET);
  l->weights_size = f4_read_u32(e + F4_ENT_WEIGHTS_SIZE);
  want = ops->weights_size(l->out_features, l->in_features, l->nnz);
  if (weights_offset < data_start || !f4_inside(weights_offset, l->weights_size, total) ||
      (want != F4_SIZE_FROM_CONTENT && want != (uint64_t)l->weights_size)) {
    return F4_ERR_SECTION;
  }
  l->bias = blob + bias_offset;
  l->weights = blob + weights_offset;
  st = ops->check(l);
  if (st != F4_OK) return st;

  limit = (int64_t)INT32_MAX - f4_acc_per_input(ops->folded_bias, l->input_zero_point) * l->in_features;
  for (r = 0; r < l->out_features; ++r) {
    const int64_t b = f4_read_i32(l->bias + 4u * r);
    if (b > limit || -b > limit) return F4_ERR_BIAS;
  }
  return F4_OK;
}

f4_status f4_prepare(const uint8_t* blob, size_t blob_size, f4_model* model) {
  uint16_t n = 0;
  uint32_t i, data_start;
  f4_status st;
  if (blob == NULL || model == NULL) return F4_ERR_ARGUMENT;
  st = f4_check_header(blob, blob_size, &n);
  if (st != F4_OK) return st;
  data_start = F4_HEADER_SIZE + F4_ENTRY_SIZE * (uint32_t)n;
  model->n_layers = 0;
  model->scratch_half = 0;
  model->scratch_acc = 0;
  for (i = 0; i < n; ++i) {
    st = f4_check_layer(blob, (uint32_t)blob_size, data_start, blob + F4_HEADER_SIZE + F4_ENTRY_SIZE * i,
                        i > 0u ? &model->layers[i - 1u] : NULL, &model->layers[i]);
    if (st != F4_OK) {
      model->n_layers = 0;
      return st;
    }
    if (i + 1u < n && model->layers[i].out_features > model->scratch_half) {
      model->scratch_half = model->layers[i].out_features;
    }
    if (!f4_layouts[model->layers[i].layout].folded_bias && model->layers[i].out_features > model->scratch_acc) {
      model->scratch_acc = model->layers[i].out_features;
    }
  }
  model->n_layers = n;
  model->input_features = model->layers[0].in_features;
  model->output_features = model->layers[n - 1u].out_features;
  return F4_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Invoke / run. */

/* format.py scratch_layout: two int8 halves of scratch_half bytes at 0 and scratch_half; with CSC
 * layers, scratch_acc int32 accumulators at *acc_offset = align4(2 * scratch_half). Returns the
 * total bytes. */
static size_t f4_scratch_layout(const f4_model* model, size_t* acc_offset) {
  const size_t halves = (size_t)2u * model->scratch_half;
  if (model->scratch_acc == 0u) {
    *acc_offset = halves;
    return halves;
  }
  *acc_offset = (halves + (F4_ACC_ALIGN - 1u)) / F4_ACC_ALIGN * F4_ACC_ALIGN;
  return *acc_offset + (size_t)4u * model->scratch_acc;
}

f4_status f4_invoke(const f4_model* model, const int8_t* input, int8_t* output, int8_t* scratch,
                    size_t scratch_size) {
  uint32_t i;
  size_t need, acc_offset = 0;
  uint32_t* acc = NULL;
  const int8_t* x = input;
  if (model == NULL || input == NULL || output == NULL || model->n_layers < 1u || model->n_layers > F4_MAX_LAYERS) {
    return F4_ERR_ARGUMENT;
  }
  need = f4_scratch_layout(model, &acc_offset);
  if (need > scratch_size) return F4_ERR_SCRATCH;
  if (need > 0u && scratch == NULL) return F4_ERR_ARGUMENT;
  if (model->scratch_acc > 0u) {
    if (((uintptr_t)(const void*)scratch & (uintptr_t)(F4_ACC_ALIGN - 1u)) != 0u) return F4_ERR_ARGUMENT;
    acc = (uint32_t*)(void*)(scratch + acc_offset);
  }
  for (i = 0; i < model->n_layers; ++i) {
    const f4_layer* layer = &model->layers[i];
    int8_t* y = (i + 1u == model->n_layers) ? output : scratch + (size_t)(i & 1u) * model->scratch_half;
    f4_layouts[layer->layout].dense_layer(layer, x, y, acc);
    x = y;
  }
  return F4_OK;
}

f4_status f4_run(const uint8_t* blob, size_t blob_size, const int8_t* input, int8_t* output, int8_t* scratch,
                 size_t scratch_size) {
  f4_model model;
  const f4_status st = f4_prepare(blob, blob_size, &model);
  if (st != F4_OK) return st;
  return f4_invoke(&model, input, output, scratch, scratch_size);
}

f4_status f4_required_scratch(const uint8_t* blob, size_t blob_size, size_t* scratch_size) {
  f4_model model;
  f4_status st;
  size_t acc_offset;
  if (scratch_size == NULL) return F4_ERR_ARGUMENT;
  st = f4_prepare(blob, blob_size, &model);
  if (st != F4_OK) return st;
  *scratch_size = f4_scratch_layout(&model, &acc_offset);
  return F4_OK;
}

const char* f4_status_name(f4_status status) {
  static const char* const names[] = {
      "F4_OK",           "F4_ERR_ARGUMENT", "F4_ERR_SIZE",  "F4_ERR_MAGIC",   "F4_ERR_VERSION",    "F4_ERR_HEADER",
      "F4_ERR_CRC",      "F4_ERR_LAYER_COUNT", "F4_ERR_LAYOUT", "F4_ERR_CODEBOOK", "F4_ERR_QUANT",   "F4_ERR_SHAPE",
      "F4_ERR_SECTION",  "F4_ERR_WEIGHTS",  "F4_ERR_BIAS",  "F4_ERR_CHAIN",   "F4_ERR_SCRATCH"};
  const unsigned idx = (unsigned)status;
  return idx < sizeof(names) / sizeof(names[0]) ? names[idx] : "F4_ERR_UNKNOWN";
}
