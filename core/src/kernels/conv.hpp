#pragma once
// Direct 3×3 convolutions with stride 1 and padding 1 (the shape of most of a ResNet's
// convolutions) on blocks of samples in C-H-W layout, without unfolding the input into patches
// (im2col: 9× the input, written and packed again by the GEMM in every pass). Each sample's
// input is copied once into a zero-bordered plane; the kernels then run register tiles of
// output channels × row segments over all 9 taps and input channels. The input gradient is the
// same convolution of the padded output gradient with the weights flipped and transposed; the
// weight gradient accumulates per-tap vector sums over the positions. Compiled like the GEMM for
// baseline x86-64, x86-64-v3 and -v4 and chosen by the same CPUID test. Single-threaded; every
// result depends on the arguments only (never on the threads).
//
// Weights are in the engine's layout: out × (c·9) row-major ([o][c][ki][kj], PyTorch's).

#include <Eigen/Core>

namespace quadra::kernels {

using Index = Eigen::Index;

/// Whether the direct kernels apply to a convolution with these settings.
[[nodiscard]] constexpr bool conv3x3_applies(Index kernel, Index stride, Index padding) {
  return kernel == 3 && stride == 1 && padding == 1;
}

/// For each of the n samples (x: c·h·w apart, y: out·h·w apart): y = conv(x, w), or y += with
/// `accumulate`.
template <class T>
void conv3x3_forward(Index n, const T* x, Index c, Index h, Index w, const T* weights, Index out,
                     T* y, bool accumulate);

/// For each sample: dx = (∂y/∂x)ᵀ dy (dy: out·h·w apart, dx: c·h·w apart), or dx += with
/// `accumulate`.
template <class T>
void conv3x3_input_grad(Index n, const T* dy, Index out, Index h, Index w, const T* weights,
                        Index c, T* dx, bool accumulate);

/// Weight gradient: with ld = 0, dw += alpha Σ_samples (∂y/∂w)ᵀ dy (dw: out·c·9 entries); with
/// ld > 0, sample j's term is written to dw + j·ld instead (per-sample gradients; assigned, not
/// added).
template <class T>
void conv3x3_weight_grad(Index n, const T* x, Index c, Index h, Index w, const T* dy, Index out,
                         T alpha, T* dw, Index ld);

}  // namespace quadra::kernels
