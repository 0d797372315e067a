#pragma once
/// \file
/// The engine: a network, its parameters and one batch, bound together. Binding runs the
/// forward pass once; every product afterwards (GGN·v, Hessian·v, Fisher·v, JVP, VJP) reuses
/// the stored activations, and the first query that reuses the backward pass's adjoints stores
/// them too, so that Lanczos and CG can call products hundreds of times at the cost of the
/// product alone.
///
/// All quantities are exact (no finite differences):
///   loss          L = (1/N) Σ_n ℓ_n, ℓ_n = ℓ(f_n, y_n)
///   gradient      g = (1/N) Σ_n J_nᵀ r_n, r_n = ∂ℓ_n/∂f_n
///   GGN           G = (1/N) Σ_n J_nᵀ Λ_n J_n, Λ_n = ∂²ℓ_n/∂f_n²  (forward-mode JVP, Λ, VJP)
///   Hessian       H = ∇²L (Pearlmutter's R-operator through the backward pass, activations'
///                 second derivatives included)
///   empirical Fisher  (1/N) Σ_n g_n g_nᵀ with the per-sample gradients g_n = J_nᵀ r_n
///   MC-Fisher     (1/N) Σ_n (1/M) Σ_m g̃_nm g̃_nmᵀ, g̃ the gradient for a label sampled from
///                 the model's predictive (seeded; fixed once drawn, so the operator is fixed)
/// Losses: softmax cross-entropy, ℓ_n = logsumexp(f_n) − f_n[y_n]; mean squared error,
/// ℓ_n = (1/C) ‖f_n − y_n‖² (PyTorch's MSELoss with reduction='mean' is L). For MSE the
/// MC-Fisher samples y ~ N(f, C/2 · I), the Gaussian whose Fisher is the GGN.
///
/// Parallelism and determinism: samples are processed in fixed chunks of chunk_size() columns
/// (a function of the batch size only) and every reduction over samples is either one GEMM per
/// fixed output tile or a sum of per-chunk partials in chunk order, so every result is bitwise
/// the same for any thread count (quadra/parallel.hpp controls the count).
///
/// Memory (S = Σ_l activation size per sample, over the input and every layer output; N the
/// batch; P the parameters): binding stores the activations, N·S scalars. The stored backward
/// pass (Hessian and empirical Fisher products and diagonal, K-FAC-empirical) adds N·S. The
/// gradient and per-sample gradients need no stored pass: unless one is stored already (or
/// samples are coupled), they run a transient one, whose adjoints live in one chunk_size()·S block per running task (and, for
/// the gradient, the Linear layers' output adjoints for the whole batch, the operands of their
/// one-GEMM reductions), each layer's term taken while its chunk's adjoint is in cache.
/// Products use two reusable work areas of N·S each (tangents and adjoints), allocated on the
/// first product; GGN and EF diagonals add N·S for squared adjoints, and conv layers hold one
/// partial result of their own parameter count per chunk. The first reduction to parameter
/// space (gradient, GGN, Hessian, Fisher products, VJP) also packs the inputs of Linear layers
/// for the GEMM kernel, N·Σ_Linear in_l scalars kept for later reductions; products through
/// tangents (GGN, Hessian, Fisher products, JVP) keep the Linear weights packed (up to P
/// scalars) and pack each direction once (up to P more). No product copies the parameter vector
/// per sample; only per_sample_gradients writes N·P values, into the caller's matrix.
/// Graphs (residual blocks) keep one buffer per value, S summing every node's output once, so
/// the figures above hold with the same S; the buffers of values that depend on no parameter
/// (before the first parameter layer, or a shortcut of parameter-free layers from there) are not
/// allocated for tangents and adjoints. A value read by several layers (a residual block's input)
/// takes each one's adjoint in turn: every chunk task holds one extra block of that value's size
/// (rows × chunk_size()) while it adds a contribution, nothing per batch. Chains run exactly the
/// passes described above.
/// A BoundBatch is not safe for concurrent calls; each call is parallel inside.
///
/// Several processes (quadra/dist/communicator.hpp): a batch bound with a Communicator and a
/// SampleShare holds only this rank's samples of a batch of share.total, and every batch-level
/// quantity is the whole batch's: the loss, gradient, curvature products, diagonals, VJP and
/// K-FAC factors are summed over ranks (Communicator::sum, in rank order) and divided by the
/// total, so every rank receives the same bits and callers above the engine need no change.
/// Every such call is then collective: all ranks make it, in the same order. Per-sample queries
/// (per_sample_losses, outputs, per-sample gradients and VJPs, JVP, backpropagate) cover this
/// rank's samples only. MC labels are drawn as for the whole batch, so each sample gets the
/// labels it gets in one process. Results match one process to rounding (sums are associated
/// per rank), and are bitwise reproducible for a fixed number of ranks. A batchnorm with batch
/// statistics (NormMode) takes them over the whole batch, summed across ranks (SyncBatchNorm
/// semantics): binding, jvp and every product through it are then collective too.
///
/// Batch statistics couple the samples (NormMode::kBatchStatistics): the per-sample Jacobians
/// J_n above are those of f_n through the batch's mean and variance, the loss, gradient and
/// products are exact for the batch loss, jvp and vjp stay defined, and the queries built from
/// per-sample terms (per_sample_gradients, ggn_diagonal, empirical_fisher_diagonal,
/// per_sample_vjp, backpropagate, type-2 kfac_factors) throw quadra::Error naming
/// `--batch-norm running`. per_sample_losses are the terms ℓ_n of the batch loss.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <quadra/dist/communicator.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::nn {

enum class Loss { kCrossEntropy, kMse };

/// "cross-entropy" (also "ce") or "mse". Throws quadra::Error listing the valid names.
[[nodiscard]] Loss parse_loss(std::string_view name);
[[nodiscard]] std::string to_string(Loss loss);

/// Targets of a batch: class labels in [0, C) for cross-entropy, or C×N values for MSE.
template <class Scalar>
struct Targets {
  std::vector<std::int64_t> labels;
  Matrix<Scalar> values;
  [[nodiscard]] static Targets from_labels(std::vector<std::int64_t> labels) {
    Targets t;
    t.labels = std::move(labels);
    return t;
  }
  [[nodiscard]] static Targets from_values(Matrix<Scalar> values) {
    Targets t;
    t.values = std::move(values);
    return t;
  }
};

/// Which output-gradient second moment K-FAC uses.
enum class KfacType {
  kType2,      ///< exact: backpropagates the C columns of the loss Hessian's symmetric factor
  kMc,         ///< MC: backpropagates gradients for `mc_samples` labels sampled per sample
  kEmpirical,  ///< backpropagates the gradient for the true label
};

/// K-FAC factors of one Linear or Conv2d layer: its GGN block over the parameters of the
/// matrix [W b] (W flattened row-major, as PyTorch stores it; b appended as a last column when
/// the layer has a bias) is approximated by S ⊗ A, i.e. entry ((o,i),(o',i')) = S(o,o')·A(i,i').
///   Linear:  A = (1/N) Σ_n ā_n ā_nᵀ with ā = [a; 1] (just a without bias),
///            S = (1/N) Σ_n Σ_c s_nc s_ncᵀ with s_nc the backpropagated vectors at the layer
///            output (per-sample loss, not divided by N).
///   Conv2d:  patches unfolded (KFC, Grosse & Martens 2016): A = (1/(N·T)) Σ_n Σ_t ā_nt ā_ntᵀ
///            over the T output positions, S = (1/N) Σ_n Σ_t Σ_c s_ntc s_ntcᵀ.
/// For one Linear layer and one sample, S ⊗ A (type-2) equals the exact GGN block.
/// The weight-only factor of a layer with bias is A's leading (in × in) block.
template <class Scalar>
struct KfacFactors {
  Index layer = 0;         ///< node index (Network::layers(); in a chain, the token index)
  bool augmented = false;  ///< A includes the bias row/column (last)
  Matrix<Scalar> a;
  Matrix<Scalar> s;
};

template <class Scalar>
class BoundBatch {
 public:
  /// Binds and runs the forward pass. `inputs` is num_inputs × N (one column per sample);
  /// `params` is copied. Throws quadra::Error when the parameter count, input rows, target
  /// count, a label's range or the target matrix's shape does not fit, or when the batch's
  /// activations and the parameters exceed memory_limit() (Network::check_memory).
  BoundBatch(const Network& network, ConstVectorRef<Scalar> params, ConstMatrixRef<Scalar> inputs,
             Targets<Scalar> targets, Loss loss);
  /// This rank's share of a batch split across the ranks of `comm` (see the file comment):
  /// `inputs` and `targets` hold samples [share.begin, share.end) only. Collective; every rank
  /// throws the same quadra::Error when any rank's share does not fit, and all of them throw
  /// when a rank would get no sample.
  BoundBatch(const Network& network, ConstVectorRef<Scalar> params, ConstMatrixRef<Scalar> inputs,
             Targets<Scalar> targets, Loss loss, const dist::Communicator& comm,
             dist::SampleShare share);
  ~BoundBatch();
  BoundBatch(BoundBatch&&) noexcept;
  BoundBatch& operator=(BoundBatch&&) noexcept;
  BoundBatch(const BoundBatch&) = delete;
  BoundBatch& operator=(const BoundBatch&) = delete;

  [[nodiscard]] const Network& network() const noexcept;
  [[nodiscard]] Loss loss_kind() const noexcept;
  /// Samples bound here (this rank's share when split across ranks).
  [[nodiscard]] Index batch_size() const noexcept;
  /// Samples of the whole batch (batch_size() unless split across ranks).
  [[nodiscard]] Index total_batch_size() const noexcept;
  [[nodiscard]] Index num_parameters() const noexcept;
  [[nodiscard]] Index num_outputs() const noexcept;
  /// Samples per chunk; depends on the batch size only.
  [[nodiscard]] Index chunk_size() const noexcept;

  /// Mean loss over the batch (computed at binding).
  [[nodiscard]] Scalar loss() const noexcept;
  /// ℓ_n for every sample (N).
  [[nodiscard]] const Vector<Scalar>& per_sample_losses() const noexcept;
  /// Network outputs f_n (C × N).
  [[nodiscard]] const Matrix<Scalar>& outputs() const noexcept;

  /// out = ∇L (P). Kept once computed (later calls copy it). Stores the backward pass only where
  /// samples are coupled (batch statistics, whose backward pass runs in stages).
  void gradient(VectorRef<Scalar> out);
  /// out.col(n) = ∇ℓ_n (P × N, caller-allocated so that repeated calls reuse its pages). Stores
  /// no backward pass (it reuses one that is stored).
  void per_sample_gradients(MatrixRef<Scalar> out);

  /// out = G v. Peak extra memory: the two work areas.
  void ggn_product(ConstVectorRef<Scalar> v, VectorRef<Scalar> out);
  /// out = H v. Needs the backward pass (stored on first use) and the two work areas.
  void hessian_product(ConstVectorRef<Scalar> v, VectorRef<Scalar> out);
  /// out = F_emp v = (1/N) Σ_n g_n (g_nᵀ v), from the stored backward pass (stored on first
  /// use): per-layer tangents on the stored inputs give g_nᵀ v, then one reduction; no pass
  /// through the network. Peak extra memory: the two work areas.
  void empirical_fisher_product(ConstVectorRef<Scalar> v, VectorRef<Scalar> out);
  /// Draws `samples` labels per sample from the model's predictive with `seed` (one RNG
  /// stream, drawn in sample order, so independent of threads). Used by mc_fisher_product.
  void set_mc_samples(int samples, std::uint64_t seed);
  /// out = F_MC v with the labels of set_mc_samples (default: 1 sample, seed 0).
  void mc_fisher_product(ConstVectorRef<Scalar> v, VectorRef<Scalar> out);

  /// Exact diag(G): backpropagates the C columns of Λ_n's symmetric factor (C adjoint passes).
  void ggn_diagonal(VectorRef<Scalar> out);
  /// diag(F_emp) = (1/N) Σ_n g_n ⊙ g_n, without forming the g_n for Linear layers.
  void empirical_fisher_diagonal(VectorRef<Scalar> out);

  /// K-FAC factors for every Linear and Conv2d layer, in spec order (normalization layers have
  /// none; the curvature backend gives them diagonal blocks). kMc draws `mc_samples`
  /// labels per sample with `seed` (its own stream, independent of set_mc_samples).
  ///
  /// With batch statistics, kMc and kEmpirical take the output gradients of the coupled
  /// backward pass of the batch loss (the sampled or the true labels), as K-FAC
  /// implementations do in training mode; kType2 throws (its factor columns would mix across
  /// samples). There `normalization_diagonal` (P entries, if given) receives, at the
  /// normalization layers' parameters, the same moment (1/N) Σ_n c_n ⊙ c_n of each sample's
  /// contribution c_n to that backward pass's gradient, and zeros elsewhere; without batch
  /// statistics it is not touched.
  [[nodiscard]] std::vector<KfacFactors<Scalar>> kfac_factors(KfacType type, int mc_samples = 1,
                                                              std::uint64_t seed = 0,
                                                              Scalar* normalization_diagonal = nullptr);

  /// Parameter JVP of the outputs: out.col(n) = J_n v (C × N).
  void jvp(ConstVectorRef<Scalar> v, MatrixRef<Scalar> out);
  /// Parameter VJP of the outputs: out = Σ_n J_nᵀ u_n for u (C × N). Not divided by N.
  void vjp(ConstMatrixRef<Scalar> u, VectorRef<Scalar> out);

  // ---- Per-sample Jacobians (linearised Laplace predictive, EK-FAC eigenvalues) -------------
  // A Linear layer's block of J_nᵀ u_n is the outer product of the adjoint at its output and
  // its (bias-augmented) input, so callers that only need such blocks can work with the two
  // factors and never form P-sized rows.

  /// Per-sample VJPs: out.col(n) = J_nᵀ u_n for u (C × N); out is P × N, caller-allocated.
  void per_sample_vjp(ConstMatrixRef<Scalar> u, MatrixRef<Scalar> out);
  /// Backpropagates u (C × N) without reducing over samples; afterwards output_adjoints(l) holds,
  /// for every layer l from the first parameter layer on whose output depends on parameters
  /// (every such layer in a chain), ∂(u_nᵀ f_n)/∂z_nl for layer l's output z_nl, one column per
  /// sample.
  void backpropagate(ConstMatrixRef<Scalar> u);
  /// Adjoints at layer l's output from the last backpropagate() (or per_sample_vjp/vjp), rows ×
  /// N. Throws quadra::Error for a layer before the first parameter layer or before any pass.
  [[nodiscard]] const Matrix<Scalar>& output_adjoints(Index layer) const;
  /// Input of layer l (layer 0: the batch's inputs; in a graph, the value layer l reads, the
  /// first one for a residual block's add), rows × N, stored at binding. layer_input(L) for the
  /// number of layers L is the network's output.
  [[nodiscard]] const Matrix<Scalar>& layer_input(Index layer) const;
  /// PyTorch's train-mode update of the running statistics from this batch, for every batchnorm
  /// that normalises with batch statistics: running_mean ← (1 − m) running_mean + m μ_B,
  /// running_var ← (1 − m) running_var + m σ²_B M/(M − 1) (the unbiased variance; M values per
  /// channel in the whole batch, across ranks), num_batches_tracked + 1, with m the layer's
  /// momentum. `network` is the bound network or a copy of it; nothing changes without such
  /// layers.
  void update_running_statistics(Network& network) const;

  /// Column k of the symmetric factor Q_n of every sample's loss Hessian, Λ_n = Q_n Q_nᵀ
  /// (cross-entropy: √p_k (e_k − p); MSE: √(2/C) e_k); out is C × N.
  void loss_hessian_factor_column(Index k, MatrixRef<Scalar> out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The matrix-product kernel chosen for this CPU at run time, e.g. "eigen-avx512" (reports).
[[nodiscard]] const char* gemm_kernel_name();

extern template class BoundBatch<float>;
extern template class BoundBatch<double>;

}  // namespace quadra::nn
