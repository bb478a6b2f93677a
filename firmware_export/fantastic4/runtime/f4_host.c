/* Host harness for the FantastIC4 runtime (not for the device: it uses stdio and malloc; the
 * runtime itself allocates nothing).
 *
 *   f4_host [-b BLOB] [-r] INPUTS EXPECTED|- [OUTPUTS]
 *       Runs every sample of INPUTS (raw int8, n * input_features bytes) and compares with
 *       EXPECTED (raw int8, n * output_features; "-" = do not compare); writes the outputs to
 *       OUTPUTS if given. The blob is read from BLOB, or is the array compiled in with
 *       -DF4_EMBEDDED_MODEL (f4_model_data.h defines F4_MODEL_DATA and F4_MODEL_DATA_SIZE).
 *       Default: f4_prepare once, f4_invoke per sample; -r: f4_run per sample.
 *       Exit: 0 all equal, 1 mismatches, 2 usage or I/O error, 3 blob rejected.
 *   f4_host --fuzz RECORDS
 *       RECORDS holds blobs as [u32 little-endian length][bytes]...; each is copied into a buffer
 *       of exactly its length (so AddressSanitizer sees any out-of-range read), then
 *       f4_required_scratch and, if the blob is accepted, f4_run on two inputs (also with a
 *       scratch one byte short, and for blobs with CSC layers with a misaligned scratch: prints
 *       SCRATCH_NOT_CHECKED / ALIGNMENT_NOT_CHECKED if the runtime accepts those). Prints one
 *       status name per blob. Exit 0 unless I/O fails. The scratch buffers come from malloc,
 *       so they are aligned as the CSC accumulators need. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "f4_runtime.h"

#ifdef F4_EMBEDDED_MODEL
#include "f4_model_data.h"
#endif

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* buf;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  buf = (unsigned char*)malloc(n > 0 ? (size_t)n : 1u);
  if (buf == NULL || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static int fuzz(const char* path) {
  size_t size = 0, pos = 0;
  unsigned char* records = read_file(path, &size);
  if (records == NULL) {
    fprintf(stderr, "cannot read %s\n", path);
    return 2;
  }
  while (pos + 4u <= size) {
    const size_t len = (size_t)records[pos] | ((size_t)records[pos + 1] << 8) | ((size_t)records[pos + 2] << 16) |
                       ((size_t)records[pos + 3] << 24);
    unsigned char* blob;
    size_t scratch_size = 0;
    f4_status st;
    pos += 4u;
    if (len > size - pos) {
      fprintf(stderr, "truncated record file\n");
      free(records);
      return 2;
    }
    blob = (unsigned char*)malloc(len > 0 ? len : 1u);
    if (blob == NULL) return 2;
    if (len > 0) memcpy(blob, records + pos, len);
    pos += len;
    st = f4_required_scratch(blob, len, &scratch_size);
    if (st == F4_OK) {
      f4_model model;
      int8_t *in, *out, *scratch;
      int v;
      f4_prepare(blob, len, &model);
      in = (int8_t*)malloc(model.input_features);
      out = (int8_t*)malloc(model.output_features);
      scratch = (int8_t*)malloc(scratch_size + 1u); /* malloc'd: aligned for the CSC accumulators */
      if (in == NULL || out == NULL || scratch == NULL) return 2;
      for (v = 0; v < 2 && st == F4_OK; ++v) {
        memset(in, v == 0 ? 0x80 : 0x7F, model.input_features);
        st = f4_run(blob, len, in, out, scratch_size > 0 ? scratch : NULL, scratch_size);
      }
      if (st == F4_OK && scratch_size > 0 && f4_run(blob, len, in, out, scratch, scratch_size - 1u) != F4_ERR_SCRATCH) {
        printf("SCRATCH_NOT_CHECKED\n");
      }
      if (st == F4_OK && model.scratch_acc > 0u && f4_run(blob, len, in, out, scratch + 1, scratch_size) != F4_ERR_ARGUMENT) {
        printf("ALIGNMENT_NOT_CHECKED\n");
      }
      free(in);
      free(out);
      free(scratch);
    }
    printf("%s\n", f4_status_name(st));
    free(blob);
  }
  free(records);
  return 0;
}

int main(int argc, char** argv) {
  const unsigned char* blob = NULL;
  unsigned char* blob_file = NULL;
  size_t blob_size = 0, in_size = 0, exp_size = 0, n, i, j, scratch_size = 0, bad_samples = 0, bad_values = 0;
  unsigned char *inputs, *expected = NULL;
  int8_t *outputs, *scratch;
  int arg = 1, use_run = 0, rc;
  f4_model model;
  f4_status st;
  FILE* out_file = NULL;

  if (argc == 3 && strcmp(argv[1], "--fuzz") == 0) return fuzz(argv[2]);
  while (arg < argc && argv[arg][0] == '-' && argv[arg][1] != '\0') {
    if (strcmp(argv[arg], "-b") == 0 && arg + 1 < argc) {
      blob_file = read_file(argv[arg + 1], &blob_size);
      if (blob_file == NULL) {
        fprintf(stderr, "cannot read blob %s\n", argv[arg + 1]);
        return 2;
      }
      blob = blob_file;
      arg += 2;
    } else if (strcmp(argv[arg], "-r") == 0) {
      use_run = 1;
      arg += 1;
    } else {
      break;
    }
  }
#ifdef F4_EMBEDDED_MODEL
  if (blob == NULL) {
    blob = F4_MODEL_DATA;
    blob_size = (size_t)F4_MODEL_DATA_SIZE;
  }
#endif
  if (blob == NULL || argc - arg < 2 || argc - arg > 3) {
    fprintf(stderr, "usage: %s [-b BLOB] [-r] INPUTS EXPECTED|- [OUTPUTS]\n       %s --fuzz RECORDS\n", argv[0], argv[0]);
    return 2;
  }
  st = f4_prepare(blob, blob_size, &model);
  printf("blob: %lu bytes, status %s\n", (unsigned long)blob_size, f4_status_name(st));
  if (st != F4_OK) return 3;
  st = f4_required_scratch(blob, blob_size, &scratch_size);
  if (st != F4_OK) return 3;
  inputs = read_file(argv[arg], &in_size);
  if (inputs == NULL || in_size % model.input_features != 0u) {
    fprintf(stderr, "cannot read %s as n x %u int8 inputs\n", argv[arg], (unsigned)model.input_features);
    return 2;
  }
  n = in_size / model.input_features;
  if (strcmp(argv[arg + 1], "-") != 0) {
    expected = read_file(argv[arg + 1], &exp_size);
    if (expected == NULL || exp_size != n * model.output_features) {
      fprintf(stderr, "cannot read %s as %lu x %u int8 outputs\n", argv[arg + 1], (unsigned long)n,
              (unsigned)model.output_features);
      return 2;
    }
  }
  outputs = (int8_t*)malloc(n * model.output_features + 1u);
  scratch = (int8_t*)malloc(scratch_size + 1u);
  if (outputs == NULL || scratch == NULL) return 2;
  printf("layers %u, %u -> %u, scratch %lu bytes, f4_model %lu bytes, %lu samples\n", (unsigned)model.n_layers,
         (unsigned)model.input_features, (unsigned)model.output_features, (unsigned long)scratch_size,
         (unsigned long)sizeof(f4_model), (unsigned long)n);
  for (i = 0; i < n; ++i) {
    const int8_t* x = (const int8_t*)inputs + i * model.input_features;
    int8_t* y = outputs + i * model.output_features;
    st = use_run ? f4_run(blob, blob_size, x, y, scratch, scratch_size) : f4_invoke(&model, x, y, scratch, scratch_size);
    if (st != F4_OK) {
      printf("sample %lu: status %s\n", (unsigned long)i, f4_status_name(st));
      return 3;
    }
    if (expected != NULL) {
      int bad = 0;
      for (j = 0; j < model.output_features; ++j) {
        const int e = (int)(int8_t)expected[i * model.output_features + j];
        if ((int)y[j] != e) {
          if (bad_values < 20u) {
            printf("mismatch: sample %lu output %lu: got %d expected %d\n", (unsigned long)i, (unsigned long)j,
                   (int)y[j], e);
          }
          ++bad_values;
          bad = 1;
        }
      }
      bad_samples += (size_t)bad;
    }
  }
  if (argc - arg == 3) {
    out_file = fopen(argv[arg + 2], "wb");
    if (out_file == NULL || fwrite(outputs, 1, n * model.output_features, out_file) != n * model.output_features) {
      fprintf(stderr, "cannot write %s\n", argv[arg + 2]);
      return 2;
    }
    fclose(out_file);
  }
  if (expected != NULL) {
    printf("checked %lu samples: %lu mismatching samples, %lu mismatching values\n", (unsigned long)n,
           (unsigned long)bad_samples, (unsigned long)bad_values);
  }
  rc = bad_samples == 0u ? 0 : 1;
  free(inputs);
  free(expected);
  free(outputs);
  free(scratch);
  free(blob_file);
  return rc;
}
