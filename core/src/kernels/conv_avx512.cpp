// Direct 3×3 convolution kernels for x86-64-v4 (AVX-512, 32 vector registers), chosen at run
// time by conv.cpp.
#define QUADRA_CONV_SUFFIX avx512
#define QUADRA_CONV_OB 8
#define QUADRA_CONV_WB 2
#include "conv_kernel.inc"
