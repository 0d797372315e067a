#pragma once
/// \file
/// The GGN through its Gram matrix (the function-space or "dual" form; cf. ViViT, Dangel et al.
/// 2022). With Λ_n = Q_n Q_nᵀ the factor of sample n's loss Hessian (C × C) and J_n the Jacobian
/// of its outputs, G = (1/N) Σ_n J_nᵀ Λ_n J_n = (1/N) Bᵀ B, where B (N·C × P) stacks the rows
/// Q_n[:, c]ᵀ J_n (row index n·C + c). The Gram matrix K = (1/N) B Bᵀ (N·C × N·C) has the same
/// nonzero eigenvalues as G; K w = λ w gives G's eigenvector u = Bᵀ w / ‖Bᵀ w‖; tr G = tr K.
///
/// For a Linear layer, row (n, c) of B restricted to the layer is g ⊗ [a; 1], g the factor
/// column backpropagated to the layer's output and a the layer's input, so
///     K[(n,c), (m,c')] = (1/N) Σ_l (g_nc · g_mc') (a_n · a_m + [layer has a bias]),
/// i.e. C backward passes and one Gram GEMM per layer, never a P-sized row. For cross-entropy a
/// thin factor with C − 1 columns is used (Λ_n annihilates the all-ones vector), so K has
/// N(C − 1) rows (for C = 10, 19 % fewer entries); "N·C" below stands for the row count.
/// K is stored once (its lower triangle, in tiles, in the model's precision: 0.17 GB in float32 at
/// N = 1024, C = 10) and Lanczos (quadra/linalg/lanczos.hpp, in double) runs on it: a product reads
/// the triangle once instead of running a forward and a backward pass through the network, and the
/// reorthogonalisation works on N·C-vectors instead of P-vectors (1152 against 535,818 for the
/// MLP 784-512-256-10 at N = 128). Eigenvectors: Bᵀ w from the stored backpropagated factor
/// columns, one GEMM per layer (no pass through the network). Float32 models multiply by K in
/// float32 within a tile and add tiles in double.
/// Needs every parameter layer to be Linear (Conv2d rows are sums over positions: use Lanczos).
/// Deterministic: fixed tiles, bitwise the same result with any number of threads.
///
/// Several processes (a batch split across ranks, quadra/nn/bound_batch.hpp): collective. Each
/// rank backpropagates the factor columns of its own samples, then the ranks all-gather them and
/// the layers' inputs (Communicator::all_gather; Σ_l d_out,l · N·m + Σ_l d_in,l · N values), so
/// every rank builds the whole K from the same bits and returns the same eigenpairs: bitwise the
/// same on every rank and run to run for a given number of ranks, and those of one process up
/// to the roundoff of the per-sample passes. Building K and the eigensolver are not divided.

#include <cstdint>

#include <quadra/nn/bound_batch.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::curvature {

/// Throws quadra::Error naming the first parameter layer that is not Linear.
void check_gram_supported(const nn::Network& network);

/// Bytes of the packed Gram matrix (its lower triangle in tiles) for N samples, C outputs and
/// scalars of `scalar_bytes`: at most about scalar_bytes (N·C)² / 2.
[[nodiscard]] double gram_bytes(Index samples, Index outputs, std::size_t scalar_bytes) noexcept;

/// K = (1/N) B Bᵀ (index n·m + k for the factor's m columns) as a dense double matrix (its entries
/// rounded to the model's precision, as stored for the eigensolver): for tests and small batches.
template <class S>
[[nodiscard]] Matrix<double> ggn_gram_matrix(nn::BoundBatch<S>& batch);

struct GramEigenOptions {
  /// Lanczos residual tolerance in Gram space, ‖K w − λ w‖ ≤ tolerance · ‖K‖ (estimate).
  double tolerance = 1e-6;
  /// Budget of Gram-matrix products, one per vector (capped at the Gram matrix's size).
  Index max_products = 300;
  std::uint64_t seed = 0;
  /// Vectors per Lanczos step. 1: thick-restart Lanczos (quadra/linalg/lanczos.hpp). >= 2: block
  /// Lanczos, whose product streams K from memory once for several vectors at little more than
  /// the time of one: fewer passes over K (at N = 1024, top 20 in float32: 53 of 4 vectors
  /// against 136 of 1) at dearer bookkeeping. 0: when K exceeds 64 MiB (it streams from memory)
  /// 4 for float32 models, 2 for float64 (the vectors one pass of the tile kernel serves), else
  /// 1. Every size finds the same eigenpairs to the tolerance.
  Index block_size = 0;
};

template <class S>
struct GramEigenResult {
  Vector<double> eigenvalues;     ///< k largest, descending
  Matrix<S> eigenvectors;         ///< P × k, unit columns (orthogonal to working precision)
  Vector<double> residual_norms;  ///< ‖K w_i − λ_i w_i‖ in Gram space
  double trace = 0.0;             ///< tr G = tr K, exact
  Index gram_size = 0;            ///< N·C
  Index num_products = 0;         ///< Gram-matrix products (Lanczos steps)
  bool converged = false;
};

/// The k largest GGN eigenpairs through the Gram matrix. Throws quadra::Error when the network
/// is not supported, k is outside [1, N·C], or an eigenvalue among the k is zero to roundoff
/// (the GGN's range is smaller than k: its eigenvectors are then not determined by B).
template <class S>
[[nodiscard]] GramEigenResult<S> ggn_top_eigenpairs_gram(nn::BoundBatch<S>& batch, Index k,
                                                         const GramEigenOptions& options = {});

}  // namespace quadra::curvature
