// Direct 3×3 convolution kernels for x86-64-v3 (AVX2, 16 vector registers), chosen at run time
// by conv.cpp.
#define QUADRA_CONV_SUFFIX avx2
#define QUADRA_CONV_OB 4
#define QUADRA_CONV_WB 1
#include "conv_kernel.inc"
