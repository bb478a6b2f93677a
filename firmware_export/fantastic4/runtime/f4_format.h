/* FantastIC4 blob format version 1: constants and little-endian field readers.
 * The byte-level spec is firmware_export/fantastic4/FORMAT.md; names follow its fields and the
 * Python writer/reader format.py (HEADER_FIELDS, LAYER_FIELDS, LAYOUTS). Header-only, no state. */
#ifndef F4_FORMAT_H_
#define F4_FORMAT_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define F4_MAGIC0 'F'
#define F4_MAGIC1 '4'
#define F4_MAGIC2 'N'
#define F4_MAGIC3 'N'
#define F4_VERSION 1u
#define F4_HEADER_SIZE 24u
#define F4_ENTRY_SIZE 56u
#define F4_MAX_LAYERS 16u
#define F4_MAX_VALUES 16u
/* |x| <= 128 and |w| <= 128: the largest accumulator contribution of one input for the layouts
 * with a folded bias (DENSE4, BITMAP, CER, which add raw int8 x). CSC adds w * (x - zp_in):
 * 128 * max(127 - zp_in, zp_in + 128) per input (f4_acc_per_input in f4_runtime.c). */
#define F4_ACC_PER_INPUT 16384
/* The int32 accumulators of a CSC layer start at a multiple of 4 bytes of the scratch buffer. */
#define F4_ACC_ALIGN 4u

/* Header field offsets (FORMAT.md section 1). */
#define F4_HDR_MAGIC 0u
#define F4_HDR_VERSION 4u
#define F4_HDR_HEADER_SIZE 5u
#define F4_HDR_ENTRY_SIZE 6u
#define F4_HDR_RESERVED0 7u
#define F4_HDR_N_LAYERS 8u
#define F4_HDR_RESERVED1 10u
#define F4_HDR_TOTAL_SIZE 12u
#define F4_HDR_CRC32 16u
#define F4_HDR_RESERVED2 20u

/* Layer table entry field offsets (FORMAT.md section 2). */
#define F4_ENT_LAYOUT 0u
#define F4_ENT_N_VALUES 1u
#define F4_ENT_INPUT_ZERO_POINT 2u
#define F4_ENT_OUTPUT_ZERO_POINT 3u
#define F4_ENT_ACTIVATION_MIN 4u
#define F4_ENT_ACTIVATION_MAX 5u
#define F4_ENT_OUTPUT_SHIFT 6u
#define F4_ENT_RESERVED 7u
#define F4_ENT_IN_FEATURES 8u
#define F4_ENT_OUT_FEATURES 10u
#define F4_ENT_OUTPUT_MULTIPLIER 12u
#define F4_ENT_NNZ 16u
#define F4_ENT_BIAS_OFFSET 20u
#define F4_ENT_BIAS_SIZE 24u
#define F4_ENT_WEIGHTS_OFFSET 28u
#define F4_ENT_WEIGHTS_SIZE 32u
#define F4_ENT_RESERVED_U32 36u
#define F4_ENT_CODEBOOK 40u

/* Weight layouts (FORMAT.md section 4). */
#define F4_LAYOUT_DENSE4 0u
#define F4_LAYOUT_BITMAP 1u
#define F4_LAYOUT_CER 2u
#define F4_LAYOUT_CSC 3u
#define F4_LAYOUT_CSCI 4u
#define F4_N_LAYOUTS 5u

/* CSCI section (FORMAT.md section 4, layout 4): header bytes, rows per chunk. */
#define F4_CSCI_HEADER 4u
#define F4_CSCI_CHUNK 15u

static inline uint16_t f4_read_u16(const uint8_t* p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

static inline uint32_t f4_read_u32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline int32_t f4_read_i32(const uint8_t* p) {
  const uint32_t u = f4_read_u32(p);
  return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}

static inline int8_t f4_read_i8(const uint8_t* p) { return (int8_t)(p[0] <= 127u ? (int)p[0] : (int)p[0] - 256); }

/* Little-endian loads that compile to one LDRH / LDR on a little-endian target (GCC and Clang
 * define __BYTE_ORDER__; a fixed-size memcpy is a plain load there), byte by byte elsewhere. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline uint16_t f4_load_u16le(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}
static inline uint32_t f4_load_u32le(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}
#else
static inline uint16_t f4_load_u16le(const uint8_t* p) { return f4_read_u16(p); }
static inline uint32_t f4_load_u32le(const uint8_t* p) { return f4_read_u32(p); }
#endif

/* Nibble k of a nibble stream: element 2k in the low nibble, 2k+1 in the high nibble. */
static inline uint8_t f4_read_nibble(const uint8_t* stream, uint32_t k) {
  const uint8_t b = stream[k >> 1];
  return (uint8_t)((k & 1u) ? (b >> 4) : (b & 0x0Fu));
}

/* vu8 (FORMAT.md section 4, CER and CSC) from a validated stream: 0xFF bytes add 255, the next byte ends. */
static inline uint32_t f4_read_vu8(const uint8_t** p) {
  uint32_t v = 0;
  while (**p == 0xFFu) {
    v += 255u;
    (*p)++;
  }
  v += **p;
  (*p)++;
  return v;
}

#endif /* F4_FORMAT_H_ */
