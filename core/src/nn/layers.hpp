#pragma once
// The layers of the engine. Each works on a block of samples: a column-major matrix with one
// column per sample (features in C-H-W order), and on its own slice of the flat parameter
// vector. The engine (bound_batch.cpp) chains them; every formula here is exact.

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include <Eigen/Core>

#include <quadra/nn/network.hpp>

#include "../kernels/gemm.hpp"

namespace quadra::nn::detail {

// The layers' products all go through the dispatched kernels.
using kernels::gemm;
using kernels::gemm_packed;
using kernels::Op;
using kernels::PackedLhs;

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using MatMap = Eigen::Map<Mat<S>>;
template <class S>
using CMatMap = Eigen::Map<const Mat<S>>;

/// One term of a parameter reduction: Σ_n (∂y/∂θ at x_n)ᵀ dy_n, with dy and x full-batch
/// matrices (N columns). `bias` says whether the bias takes part (it does not in the R-term
/// g·ẋᵀ of the Hessian, whose x is a tangent).
template <class S>
struct Pair {
  const S* dy = nullptr;
  const S* x = nullptr;
  bool bias = true;
  const PackedLhs<S>* packed_x = nullptr;  ///< x packed for the GEMM kernel (Linear, kSum), or null
  /// When x is a tangent ẋ: the forward input it is the tangent of (layers whose parameter
  /// derivative is nonlinear in their input need it for the R-term), or null.
  const S* x_primal = nullptr;
};

enum class ReduceMode {
  kSum,         ///< out += alpha Σ_pairs Σ_n (∂y/∂θ)ᵀ dy_n
  kSquared,     ///< out += alpha Σ_n ((∂y/∂θ)ᵀ dy_n)², one pair: per-sample squares
  kPreSquared,  ///< Linear only: dy holds Σ_c dy_c², out += alpha Σ_n dy_n ⊗ x_n² (and bias)
};

/// What a layer that couples the samples of a batch (BatchNorm with batch statistics) needs at
/// an engine barrier: its sums over samples are per-chunk partials of `chunk` samples added in
/// chunk order, then completed across ranks by `sum_over_ranks`, over `total` samples.
template <class S>
struct BatchContext {
  Index chunk = 1;
  Index total = 1;
  std::function<void(S*, Index)> sum_over_ranks;
};

template <class S>
class Layer {
 public:
  Layer(const LayerSpec& spec, const TensorShape& in, const TensorShape& out, Index offset)
      : spec_(spec), in_(in), out_(out), offset_(offset), in_size_(in.size()),
        out_size_(out.size()) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  [[nodiscard]] const LayerSpec& spec() const { return spec_; }
  [[nodiscard]] Index in_size() const { return in_size_; }
  [[nodiscard]] Index out_size() const { return out_size_; }
  [[nodiscard]] Index offset() const { return offset_; }
  [[nodiscard]] virtual Index num_params() const { return 0; }

  /// y = f(x).
  virtual void forward(const S* theta, CMatMap<S> x, MatMap<S> y) const = 0;
  /// dx = (∂y/∂x)ᵀ dy; x and y are the forward values.
  virtual void backward(const S* theta, CMatMap<S> x, CMatMap<S> y, CMatMap<S> dy,
                        MatMap<S> dx) const = 0;
  /// ẏ = (∂y/∂x) ẋ + (∂y/∂θ) v. `xdot` null: ẋ = 0. `v` is the whole direction vector.
  virtual void tangent(const S* theta, const S* v, CMatMap<S> x, CMatMap<S> y, const S* xdot,
                       MatMap<S> ydot) const = 0;
  /// Pre-packed left operands for tangent (Linear layers; see PackedLhs): the weights W of
  /// y = W x (fixed while a batch is bound) and a direction's block V, valid only in calls with
  /// the direction `v` it was packed from. Null: each call packs its own.
  virtual void use_packed(const PackedLhs<S>* weights, const PackedLhs<S>* direction, const S* v) {
    (void)weights, (void)direction, (void)v;
  }
  /// dx += R{(∂y/∂x)ᵀ} g: the terms of the R-operator on the backward pass that involve the
  /// first-order adjoint g (∂ℓ/∂y): σ''(x) ⊙ ẋ ⊙ g for activations, V-part for linear maps.
  virtual void backward_second(const S* theta, const S* v, CMatMap<S> x, CMatMap<S> y,
                               const S* xdot, CMatMap<S> g, MatMap<S> dx) const {
    (void)theta, (void)v, (void)x, (void)y, (void)xdot, (void)g, (void)dx;
  }

  // ---- layers that couple samples (the engine's barriers) -----------------------------------
  // Such a layer sees the whole bound batch at once (columns of all samples); the per-chunk
  // calls above then act with the statistics of the last batch_forward / batch_tangent, which is
  // what parameter reductions need. Each call is parallel inside and thread-count independent.
  [[nodiscard]] virtual bool couples_samples() const { return false; }
  /// y = f(x) over the batch; keeps the batch statistics.
  virtual void batch_forward(const BatchContext<S>& ctx, const S* theta, CMatMap<S> x,
                             MatMap<S> y) {
    (void)ctx, (void)theta, (void)x, (void)y;
  }
  /// ẏ over the batch (as tangent); keeps the tangent's batch statistics for reduce.
  virtual void batch_tangent(const BatchContext<S>& ctx, const S* theta, const S* v, CMatMap<S> x,
                             const S* xdot, MatMap<S> ydot) {
    (void)ctx, (void)theta, (void)v, (void)x, (void)xdot, (void)ydot;
  }
  /// dx (= or, with `add`, +=) (∂y/∂x)ᵀ g over the batch; with v also the R-operator's terms
  /// of backward_second, with the first-order adjoint `delta` and the input tangent `xdot`
  /// (null: ẋ = 0).
  virtual void batch_backward(const BatchContext<S>& ctx, const S* theta, const S* v,
                              CMatMap<S> x, CMatMap<S> g, const S* xdot, const S* delta,
                              MatMap<S> dx, bool add) {
    (void)ctx, (void)theta, (void)v, (void)x, (void)g, (void)xdot, (void)delta, (void)dx,
        (void)add;
  }
  /// The batch mean and biased variance of the last batch_forward, per channel (null when the
  /// layer keeps none).
  [[nodiscard]] virtual const Eigen::Matrix<S, Eigen::Dynamic, 1>* batch_mean() const {
    return nullptr;
  }
  [[nodiscard]] virtual const Eigen::Matrix<S, Eigen::Dynamic, 1>* batch_variance() const {
    return nullptr;
  }

  // ---- parameter reductions (layers with parameters) ----------------------------------------
  /// Number of independent tasks of a reduction over n samples split in chunks of `chunk`.
  [[nodiscard]] virtual Index reduce_tasks(Index n, Index chunk) const {
    (void)n, (void)chunk;
    return 0;
  }
  /// True: task t handles sample chunk t and writes a partial of num_params() entries (summed
  /// by the engine in chunk order). False: task t writes a disjoint part of the output.
  [[nodiscard]] virtual bool tasks_are_chunks() const { return false; }
  /// Runs task t. `out` is this layer's parameter slice (or the task's partial, zeroed). With
  /// `overwrite` (only for tasks that write disjoint parts, not chunk partials) the task sets its
  /// part of `out` instead of adding to it, so the engine needs no zeroing pass first. For chunk
  /// tasks it is reduce_block on the chunk's samples.
  virtual void reduce(Index task, Index n, Index chunk, const std::vector<Pair<S>>& pairs,
                      ReduceMode mode, S alpha, bool overwrite, S* out) const {
    (void)overwrite;  // chunk partials are always added to
    const Index begin = task * chunk;
    std::vector<Pair<S>> block = pairs;
    for (Pair<S>& p : block) {
      p.dy += begin * out_size_;
      p.x += begin * in_size_;
      if (p.x_primal != nullptr) p.x_primal += begin * in_size_;
    }
    reduce_block(std::min(chunk, n - begin), block, mode, alpha, out);
  }
  /// Layers whose tasks are chunks: out += the reduction over `count` consecutive samples, with
  /// the pairs' pointers at the first of them (the engine also calls it on a chunk's adjoints
  /// while they are in cache, see bound_batch.cpp).
  virtual void reduce_block(Index count, const std::vector<Pair<S>>& pairs, ReduceMode mode,
                            S alpha, S* out) const {
    (void)count, (void)pairs, (void)mode, (void)alpha, (void)out;
  }
  /// Per-sample gradients of a block of samples: column j of `out` (leading dimension ld)
  /// receives (∂y/∂θ at x_j)ᵀ dy_j in this layer's slice (out points at the slice's first row).
  virtual void per_sample(CMatMap<S> dy, CMatMap<S> x, S* out, Index ld) const {
    (void)dy, (void)x, (void)out, (void)ld;
  }
  /// K-FAC input factor dimension (with the bias augmentation).
  [[nodiscard]] virtual Index kfac_a_dim() const { return 0; }
  /// Conv2d K-FAC partials of a sample block: a += Σ_j P̄_jᵀ P̄_j over the unfolded patches
  /// (with a ones column for the bias), s += Σ_j D_jᵀ D_j over output positions.
  virtual void kfac_a_partial(CMatMap<S> x, S* a) const { (void)x, (void)a; }
  virtual void kfac_s_partial(CMatMap<S> dy, S* s) const { (void)dy, (void)s; }
  /// Conv2d: number of output positions T (1 for Linear).
  [[nodiscard]] virtual Index positions() const { return 1; }
  [[nodiscard]] bool is_conv() const { return spec_.kind == LayerKind::kConv2d; }

 protected:
  LayerSpec spec_;
  TensorShape in_;
  TensorShape out_;
  Index offset_;
  Index in_size_;
  Index out_size_;
};

template <class S>
std::vector<std::unique_ptr<Layer<S>>> make_layers(const Network& network);

/// Row tile of Linear reductions: fixed, so that results do not depend on the thread count. Each
/// tile's GEMM re-packs the layer's whole input (in × N), so tiles are as wide as still leaves
/// several tasks per layer for the threads (64 spent 12 % of a gradient on that packing).
inline constexpr Index kRowTile = 128;

/// out[:, tile] = alpha · X X[tile, :]ᵀ for the tile-th column tile of kRowTile columns (K-FAC
/// Gram matrices); X is rows × n column-major, out rows × rows.
template <class S>
void gram_tile(const S* x, Index rows, Index n, S alpha, Index tile, S* out);

}  // namespace quadra::nn::detail
