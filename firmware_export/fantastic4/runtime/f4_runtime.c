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

/* acc = folded_bias[r] + sum over k >= 1 with s[k] != 0 of codebook[k] * s[k]. */
static inline int32_t f4_combine_partial_sums(const f4_layer* layer, uint32_t r, const int32_t* s) {
  int32_t acc = f4_read_i32(layer->bias + 4u * r);
  uint32_t k;
  for (k = 1; k < layer->n_values; ++k) {
    if (s[k] != 0) acc += (int32_t)layer->codebook[k] * s[k];
  }
  return acc;
}

/* clamp(MultiplyByQuantizedMultiplier(acc) + output_zero_point, activation_min, activation_max),
 * with the addition exact (as in a wider type; FORMAT.md section 5): y is clamped to
 * [activation_min - output_zero_point, activation_max - output_zero_point] (both within +-255)
 * before the zero point is added, so y + output_zero_point never leaves int32 even when the
 * requantized value is near +-2^31. */
static inline int8_t f4_requantize(const f4_layer* layer, int32_t acc) {
  const int32_t lo = (int32_t)layer->activation_min - layer->output_zero_point;
  const int32_t hi = (int32_t)layer->activation_max - layer->output_zero_point;
  int32_t y = f4_multiply_by_quantized_multiplier(acc, layer->output_multiplier, layer->output_shift);
  if (y < lo) y = lo;
  if (y > hi) y = hi;
  return (int8_t)(y + layer->output_zero_point);
}

static inline void f4_clear_partial_sums(int32_t* s) {
  uint32_t k;
  for (k = 0; k < F4_MAX_VALUES; ++k) s[k] = 0;
}

/* DENSE4: every code nibble, zero codes skipped (a zero byte skips two weights at once). */
void f4_dense_layer_dense4(const f4_layer* layer, const int8_t* x, int8_t* y) {
  const uint8_t* codes = layer->weights;
  const uint32_t in = layer->in_features;
  uint32_t e = 0, r;
  int32_t s[F4_MAX_VALUES];
  for (r = 0; r < layer->out_features; ++r) {
    const uint32_t row0 = e, end = e + in;
    f4_clear_partial_sums(s);
    if (e & 1u) { /* the row starts in a high nibble */
      const uint32_t code = (uint32_t)codes[e >> 1] >> 4;
      if (code != 0u) s[code] += x[0];
      ++e;
    }
    for (; e + 1u < end; e += 2u) {
      const uint32_t b = codes[e >> 1];
      if (b != 0u) {
        if ((b & 0x0Fu) != 0u) s[b & 0x0Fu] += x[e - row0];
        if ((b >> 4) != 0u) s[b >> 4] += x[e + 1u - row0];
      }
    }
    if (e < end) { /* the row ends in a low nibble */
      const uint32_t code = (uint32_t)codes[e >> 1] & 0x0Fu;
      if (code != 0u) s[code] += x[e - row0];
      ++e;
    }
    y[r] = f4_requantize(layer, f4_combine_partial_sums(layer, r, s));
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
  const uint32_t in = layer->in_features;
  const uint8_t* mask = layer->weights;
  const uint8_t* codes = mask + (((uint32_t)layer->out_features * in + 7u) >> 3);
  uint32_t e = 0, c = 0, r;
  int32_t s[F4_MAX_VALUES];
  for (r = 0; r < layer->out_features; ++r) {
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
    y[r] = f4_requantize(layer, f4_combine_partial_sums(layer, r, s));
  }
}

/* CER: per row a value_mask, then per present value a count and column gaps (vu8). */
void f4_dense_layer_cer(const f4_layer* layer, const int8_t* x, int8_t* y) {
  const uint8_t* p = layer->weights;
  uint32_t r, k;
  int32_t s[F4_MAX_VALUES];
  for (r = 0; r < layer->out_features; ++r) {
    const uint32_t value_mask = f4_read_u16(p);
    p += 2;
    f4_clear_partial_sums(s);
    for (k = 1; k < layer->n_values; ++k) {
      if ((value_mask >> k) & 1u) {
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
        s[k] = sum;
      }
    }
    y[r] = f4_requantize(layer, f4_combine_partial_sums(layer, r, s));
  }
}

/* CSC (simulate.py init_accumulators, accumulate_columns, dense_layer_csc). */

/* acc[r] = the bias section, which for CSC holds the TFLite bias (not folded). */
static inline void f4_init_accumulators(const f4_layer* layer, uint32_t* acc) {
  uint32_t r;
  for (r = 0; r < layer->out_features; ++r) acc[r] = f4_read_u32(layer->bias + 4u * r);
}

/* Index of the lowest set bit of a non-zero 16-bit value. */
static inline uint32_t f4_ctz16(uint32_t m) { return (m & 0xFFu) != 0u ? f4_ctz8[m & 0xFFu] : 8u + f4_ctz8[m >> 8]; }

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
  uint32_t r;
  f4_init_accumulators(layer, acc);
  f4_accumulate_columns(layer, x, acc);
  for (r = 0; r < layer->out_features; ++r) y[r] = f4_requantize(layer, f4_wrap_int32(acc[r]));
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
 * indices are left (that one included), and the next gap. */
typedef struct {
  const uint8_t* p;
  uint32_t index;
  uint32_t remaining;
} f4_group_cursor;

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
      uint32_t index = g[i].index, remaining = g[i].remaining;
      while (index - base < F4_DISTINCT_WINDOW) {
        const uint32_t offset = index - base, bit = 1u << (offset & 31u);
        if ((seen[offset >> 5] & bit) != 0u) return F4_ERR_WEIGHTS;
        seen[offset >> 5] |= bit;
        if (--remaining == 0u) break;
        index += f4_read_vu8(&q) + 1u;
      }
      if (remaining == 0u) {
        g[i] = g[--n]; /* the group moved into slot i is scanned next */
      } else {
        g[i].p = q;
        g[i].index = index;
        g[i].remaining = remaining;
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
