/* The golden vectors of the export, embedded in flash as they are (raw int8 files): the harness
 * reads g_f4_golden_inputs[samples * input_features] and g_f4_golden_outputs[samples * output_features]. */
    .section .rodata.f4_golden, "a"
    .balign 16
    .global g_f4_golden_inputs
g_f4_golden_inputs:
    .incbin "golden_inputs.bin"
    .global g_f4_golden_inputs_end
g_f4_golden_inputs_end:
    .balign 16
    .global g_f4_golden_outputs
g_f4_golden_outputs:
    .incbin "golden_outputs.bin"
    .global g_f4_golden_outputs_end
g_f4_golden_outputs_end:
