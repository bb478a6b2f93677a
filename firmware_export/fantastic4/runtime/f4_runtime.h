/* FantastIC4-style 4-bit sparse MLP runtime (portable C99).
 *
 * Runs the integer MLP stored in a blob (FORMAT.md) bit-exactly like TFLite Micro's reference
 * FULLY_CONNECTED, acc = bias + sum_j w[r,j] * (x[j] - zp_in), y = requantize(acc), with one of
 * five weight layouts per layer:
 *   DENSE4, BITMAP, CER (row-major): per output row, the int8 activations that share a codebook
 *     value are summed first, each partial sum is multiplied by its value once, then the folded
 *     bias (bias - zp_in * row sum) is added;
 *   CSC (column-major): acc starts at the TFLite bias; per input j with d = x[j] - zp_in != 0
 *     (zero-point activations are skipped), per value k present in column j, v = codebook[k] * d is
 *     added to acc[r] of every row r listed;
 *   CSCI (column-major, indexed): the CSC datapath on column byte lengths and chunks of absolute
 *     row indices (at most 15 per chunk, one multiply each). On ARMv7-M / ARMv7E-M / ARMv8-M
 *     Mainline with GCC or Clang its column loop is Thumb-2 assembly (4 instructions per addition);
 *     -DF4_NO_ASM or any other target compiles the C loop, which computes the same.
 * Bit-exact with TFLM and with the Python simulator simulate.py, whose function names this file
 * mirrors (prepare, required_scratch, dense_layer_dense4/_bitmap/_cer/_csc/_csci,
 * accumulate/combine_partial_sums, init_accumulators, accumulate_columns, requantize, run).
 *
 * Memory: allocates nothing and has no mutable globals. f4_prepare validates the blob (every
 * field, offset, size, count and weight code; CRC-32) into a caller-owned f4_model, f4_invoke only
 * reads it. Scratch (caller-provided, f4_required_scratch bytes, FORMAT.md section 8):
 * intermediate int8 activations ping-pong between two halves of half = widest hidden layer bytes;
 * if the blob has CSC or CSCI layers, int32 accumulators for the widest such layer follow at offset
 * align4(2 * half), and the scratch pointer must then be 4-byte aligned (else F4_ERR_ARGUMENT;
 * e.g. declare it as an int32_t array and pass (int8_t*)words). Stack: an f4_model (~0.9 KB) in
 * f4_run, 64 bytes of partial sums per DENSE4/BITMAP layer call, a 256-byte codebook copy per
 * CSCI layer call on the assembly path (f4_invoke's peak on the demo model: 468 bytes on Cortex-M4).
 *
 * Init/Prepare/Eval split as in TFLM: call f4_prepare once at boot, then f4_invoke per inference;
 * f4_run does both (it re-validates the blob, including the CRC, on every call). */
#ifndef F4_RUNTIME_H_
#define F4_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#include "f4_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Identical to format.py STATUS and FORMAT.md section 6. */
typedef enum {
  F4_OK = 0,
  F4_ERR_ARGUMENT = 1,
  F4_ERR_SIZE = 2,
  F4_ERR_MAGIC = 3,
  F4_ERR_VERSION = 4,
  F4_ERR_HEADER = 5,
  F4_ERR_CRC = 6,
  F4_ERR_LAYER_COUNT = 7,
  F4_ERR_LAYOUT = 8,
  F4_ERR_CODEBOOK = 9,
  F4_ERR_QUANT = 10,
  F4_ERR_SHAPE = 11,
  F4_ERR_SECTION = 12,
  F4_ERR_WEIGHTS = 13,
  F4_ERR_BIAS = 14,
  F4_ERR_CHAIN = 15,
  F4_ERR_SCRATCH = 16
} f4_status;

/* One validated layer (fields named after FORMAT.md section 2; pointers into the blob). */
typedef struct {
  uint8_t layout;
  uint8_t n_values;
  int8_t input_zero_point;
  int8_t output_zero_point;
  int8_t activation_min;
  int8_t activation_max;
  int8_t output_shift;
  uint16_t in_features;
  uint16_t out_features;
  int32_t output_multiplier;
  uint32_t nnz;
  uint32_t weights_size;
  const uint8_t* bias;    /* out_features little-endian int32: folded bias (DENSE4, BITMAP, CER) or TFLite bias (CSC) */
  const uint8_t* weights; /* weights_size bytes in the layer's layout */
  int8_t codebook[F4_MAX_VALUES];
} f4_layer;

typedef struct {
  uint16_t n_layers;
  uint16_t input_features;
  uint16_t output_features;
  uint32_t scratch_half; /* widest intermediate activation (0 for one layer) */
  uint32_t scratch_acc;  /* widest CSC layer's out_features: int32 accumulators (0 without CSC) */
  f4_layer layers[F4_MAX_LAYERS];
} f4_model;

/* Validate blob and fill *model. Never reads outside [blob, blob + blob_size). */
f4_status f4_prepare(const uint8_t* blob, size_t blob_size, f4_model* model);

/* Run a prepared model: input has model->input_features int8, output model->output_features. */
f4_status f4_invoke(const f4_model* model, const int8_t* input, int8_t* output, int8_t* scratch,
                    size_t scratch_size);

/* f4_prepare + f4_invoke. */
f4_status f4_run(const uint8_t* blob, size_t blob_size, const int8_t* input, int8_t* output, int8_t* scratch,
                 size_t scratch_size);

/* Scratch bytes f4_invoke/f4_run need for this blob: 2 * widest intermediate activation, and with
 * CSC layers align4(that) + 4 * widest CSC layer (FORMAT.md section 8). */
f4_status f4_required_scratch(const uint8_t* blob, size_t blob_size, size_t* scratch_size);

/* "F4_OK", "F4_ERR_SIZE", ... ("F4_ERR_UNKNOWN" for other values). */
const char* f4_status_name(f4_status status);

/* One layer (exposed for tests and benchmarks): x has in_features int8, y out_features. */
void f4_dense_layer_dense4(const f4_layer* layer, const int8_t* x, int8_t* y);
void f4_dense_layer_bitmap(const f4_layer* layer, const int8_t* x, int8_t* y);
void f4_dense_layer_cer(const f4_layer* layer, const int8_t* x, int8_t* y);
/* acc: out_features words of workspace; int32 accumulators kept as uint32 (adds are modulo 2^32,
 * so a malformed blob cannot cause signed overflow; for a valid blob no sum leaves int32). */
void f4_dense_layer_csc(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc);
/* CSCI (layout 4): CSC with a column offset table and absolute row indices; same acc workspace. */
void f4_dense_layer_csci(const f4_layer* layer, const int8_t* x, int8_t* y, uint32_t* acc);

#ifdef __cplusplus
}
#endif

#endif /* F4_RUNTIME_H_ */
