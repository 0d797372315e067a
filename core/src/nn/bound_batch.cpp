// The engine. See quadra/nn/bound_batch.hpp for the quantities and the memory of each product.
//
// Every query is built from two kinds of parallel step:
//  1. a chunk pass: for each fixed chunk of samples, one task runs the per-sample propagation
//     (tangents forward, adjoints backward) through all layers and writes the chunk's columns
//     of full-batch buffers;
//  2. a reduction to parameter space: Linear layers run one GEMM over all N samples per fixed
//     row tile of W; Conv2d layers write one partial per chunk, summed in chunk order.
// Neither depends on the thread count, hence bitwise reproducibility. The gradient and the
// per-sample gradients of a batch whose backward pass is not stored take the per-chunk terms of
// step 2 (all but the Linear GEMMs) inside step 1 instead (a transient pass: chunk-local
// adjoints, see transient_backward), with the same arithmetic, so the same bits.
//
// Graphs (residual blocks): buffers are per value (value 0 the input, value l + 1 node l's
// output) and every pass visits the nodes in topological order, adjoints in reverse. A value
// read by several nodes (the fork of a residual block) receives the adjoint of each: the last
// reader, visited first, writes it, earlier readers add theirs. A value computed from no
// parameter has zero tangent and needs no adjoint ("live" below: the values after the first
// parameter node in a chain). Chains keep the plain loops, with no test per node.
//
// BatchNorm with batch statistics couples the samples: each such node is a barrier. Passes run
// in stages, the chunk passes over the nodes between barriers, and at a barrier the node sees
// the whole batch (Layer::batch_forward, batch_tangent, batch_backward: sums per chunk added in
// chunk order and across ranks). Every quantity of the batch loss stays exact: the tangents and
// adjoints are those of the whole batch's outputs, so J below is the Jacobian of all outputs,
// and the per-sample factorisations (per-sample gradients, the diagonals, K-FAC) are refused.
// Networks without such a node run the passes of one stage, the loops they always ran.

#include <quadra/nn/bound_batch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <utility>

#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

#include "../kernels/gemm.hpp"
#include "layers.hpp"
#include "rng.hpp"

namespace quadra::nn {

Loss parse_loss(std::string_view name) {
  if (name == "cross-entropy" || name == "ce" || name == "cross_entropy") return Loss::kCrossEntropy;
  if (name == "mse") return Loss::kMse;
  throw Error(fmt::format("unknown loss '{}'; expected cross-entropy or mse", name));
}

std::string to_string(Loss loss) { return loss == Loss::kCrossEntropy ? "cross-entropy" : "mse"; }

namespace {

using detail::CMatMap;
using detail::Layer;
using detail::Mat;
using detail::MatMap;
using detail::Pair;
using detail::ReduceMode;

/// Samples per chunk: a function of the batch size and the network only (never of the thread
/// count). Large enough that a layer's weights are packed for GEMM rarely (once per chunk: 256
/// rather than 128 saved 7-10 % of a gradient at batch 1024), small enough that a batch of 128
/// still splits in two and one of 1024 in four. Each pass writes a value for the whole chunk and
/// the next reads it back, so the chunk's largest value is also kept to about the L2 cache (a
/// power of two of samples, at least 8): on the ResNet-8 (64 kB values) 16 samples rather than
/// 64 gave its gradient and per-sample gradients the same speed or up to 3 % more, on the small
/// CNN every product the same speed or more. Narrow networks (the benchmarks' MLP: 784 values
/// and fewer) never meet that cap: their chunks depend on the batch size alone.
template <class S>
Index chunk_size_for(Index n, const Network& net) {
  Index chunk = std::clamp<Index>((n + 1) / 2, 16, 256);
  Index largest = 1;
  for (const TensorShape& shape : net.shapes()) largest = std::max(largest, shape.size());
  constexpr Index kValueBytes = Index(1) << 20;
  const Index fits = kValueBytes / (largest * static_cast<Index>(sizeof(S)));
  Index cap = 8;
  while (cap * 2 <= fits) cap *= 2;
  return std::min(chunk, cap);
}

template <class S>
MatMap<S> cols(Mat<S>& m, const ChunkRange& r) {
  return MatMap<S>(m.data() + r.begin * m.rows(), m.rows(), r.size());
}
template <class S>
CMatMap<S> ccols(const Mat<S>& m, const ChunkRange& r) {
  return CMatMap<S>(m.data() + r.begin * m.rows(), m.rows(), r.size());
}

/// The adjoint buffers of one backward pass, one per value. A whole-batch buffer holds N
/// columns; a pass whose adjoints are needed only while their chunk is processed (a transient
/// pass, see Impl::transient_backward) keeps the values without a whole-batch buffer in
/// chunk-local ones, whose first column is the chunk's first sample.
template <class S>
struct Adjoints {
  std::vector<Mat<S>>* whole = nullptr;
  std::vector<Mat<S>>* local = nullptr;  // chunk-local buffers, for values with no whole one
  Index local_begin = 0;                 // the sample of the local buffers' first column

  Adjoints(std::vector<Mat<S>>& buffers) : whole(&buffers) {}  // NOLINT: whole-batch buffers
  Adjoints(std::vector<Mat<S>>& buffers, std::vector<Mat<S>>& chunk_local, Index begin)
      : whole(&buffers), local(&chunk_local), local_begin(begin) {}

  [[nodiscard]] bool is_local(Index v) const {
    return local != nullptr && (*whole)[static_cast<std::size_t>(v)].size() == 0;
  }
  [[nodiscard]] Mat<S>& buffer(Index v) const {
    return (is_local(v) ? *local : *whole)[static_cast<std::size_t>(v)];
  }
  /// Sample s's column of value v.
  [[nodiscard]] S* col(Index v, Index s) const {
    Mat<S>& m = buffer(v);
    return m.data() + (s - (is_local(v) ? local_begin : 0)) * m.rows();
  }
  [[nodiscard]] MatMap<S> cols(Index v, const ChunkRange& r) const {
    return MatMap<S>(col(v, r.begin), buffer(v).rows(), r.size());
  }
  [[nodiscard]] CMatMap<S> ccols(Index v, const ChunkRange& r) const {
    return CMatMap<S>(col(v, r.begin), buffer(v).rows(), r.size());
  }
};

/// Called for a node once the adjoint at its output is complete for a chunk (transient passes).
template <class S>
using NodeHook = std::function<void(Index node, const ChunkRange&, const Adjoints<S>&)>;

/// What acts on the output tangent at the top of a product.
enum class Top { kLossHessian, kMcFisher, kEmpiricalFisher };

}  // namespace

template <class S>
struct BoundBatch<S>::Impl {
  Network net;
  Loss loss;
  Index n = 0;
  Index p = 0;
  Index c = 0;
  Index chunk = 0;
  Index depth = 0;  // number of layers L
  Index first = 0;  // first layer with parameters (depth when none)
  bool graph = false;         // some node reads other than the previous node's output
  std::vector<Index> source;  // source[l]: the (first) value node l reads
  std::vector<char> live;     // live[v]: value v depends on parameters
  std::vector<std::array<char, 2>> accumulate;  // a later node also reads node l's input k
  std::vector<Index> barriers;  // nodes that couple samples (batch statistics), in order
  Vector<S> theta;
  std::vector<std::unique_ptr<Layer<S>>> layers;
  std::vector<Mat<S>> act;    // act[v]: value v (in a chain: layer v's input; act[depth]: outputs)
  std::vector<Mat<S>> delta;  // ∂ℓ_n/∂act[l], per sample (not divided by N), l > first
  bool have_delta = false;
  Vector<S> gradient_cache;   // ∇L once computed (a transient pass stores no adjoints to reuse)
  std::vector<Mat<S>> tan;    // work area: tangents ẋ_l, l > first
  std::vector<Mat<S>> adj;    // work area: adjoints, l > first
  Mat<S> prob;                // softmax probabilities (cross-entropy)
  Mat<S> resid;               // r_n = ∂ℓ_n/∂f_n
  Vector<S> losses;
  S mean_loss = 0;
  std::vector<std::int64_t> labels;
  Mat<S> values;
  Mat<S> mc;                  // sampled residuals, column n*mc_m + m
  int mc_m = 0;
  // Split across ranks: this batch holds samples [offset, offset + n) of `total`, and sums over
  // samples are completed by `comm` (null: one process, total = n).
  const dist::Communicator* comm = nullptr;
  Index total = 0;
  Index offset = 0;

  Impl(const Network& network, Loss l) : net(network), loss(l) {}

  [[nodiscard]] bool has_params(Index l) const {
    return layers[static_cast<std::size_t>(l)]->num_params() > 0;
  }
  Layer<S>& layer(Index l) { return *layers[static_cast<std::size_t>(l)]; }
  Mat<S>& a(Index l) { return act[static_cast<std::size_t>(l)]; }
  /// Node l's (first) input value.
  Mat<S>& x(Index l) { return act[static_cast<std::size_t>(source[static_cast<std::size_t>(l)])]; }
  [[nodiscard]] bool is_add(Index l) const {
    return net.layers()[static_cast<std::size_t>(l)].kind == LayerKind::kAdd;
  }
  [[nodiscard]] bool is_live(Index v) const { return live[static_cast<std::size_t>(v)] != 0; }
  Mat<S>& d(Index l) { return delta[static_cast<std::size_t>(l)]; }
  Mat<S>& t(Index l) { return tan[static_cast<std::size_t>(l)]; }
  Mat<S>& j(Index l) { return adj[static_cast<std::size_t>(l)]; }

  /// 1/N for the whole batch's mean.
  [[nodiscard]] S inv_total() const { return S(1) / static_cast<S>(total); }

  /// Completes a sum over samples across ranks (in place; nothing in one process).
  void sum_over_ranks(S* data, Index size) const {
    if (comm != nullptr) comm->sum(std::span<S>(data, static_cast<std::size_t>(size)));
  }

  void for_chunks(const std::function<void(const ChunkRange&)>& body) const {
    parallel_for_chunks(n, chunk, body);
  }

  void allocate(std::vector<Mat<S>>& buffers) {
    if (!buffers.empty()) return;
    buffers.resize(static_cast<std::size_t>(depth + 1));
    for (Index l = first + 1; l <= depth; ++l) {
      if (is_live(l)) buffers[static_cast<std::size_t>(l)].resize(a(l).rows(), n);
    }
  }

  // ---- chunk passes -----------------------------------------------------------------------

  [[nodiscard]] Index input(Index l, std::size_t k) const { return net.inputs(l)[k]; }

  void forward_chunk(const ChunkRange& r, const S* params, Index lo, Index hi) {
    if (!graph) {
      for (Index l = lo; l < hi; ++l) layer(l).forward(params, ccols(a(l), r), cols(a(l + 1), r));
      return;
    }
    for (Index l = lo; l < hi; ++l) {
      if (is_add(l)) {
        cols(a(l + 1), r) = ccols(a(input(l, 0)), r) + ccols(a(input(l, 1)), r);
      } else {
        layer(l).forward(params, ccols(x(l), r), cols(a(l + 1), r));
      }
    }
  }

  /// ẋ for layers first..depth given the direction v (nodes [lo, hi) of them).
  void tangent_chunk(const ChunkRange& r, const S* v) { tangent_chunk(r, v, first, depth); }
  void tangent_chunk(const ChunkRange& r, const S* v, Index lo, Index hi) {
    if (!graph) {
      for (Index l = lo; l < hi; ++l) {
        const S* xdot = l == first ? nullptr : ccols(t(l), r).data();
        layer(l).tangent(theta.data(), v, ccols(a(l), r), ccols(a(l + 1), r), xdot, cols(t(l + 1), r));
      }
      return;
    }
    for (Index l = lo; l < hi; ++l) {
      if (!is_live(l + 1)) continue;
      if (is_add(l)) {
        // The sum of the live inputs' tangents (at least one is live, as the output is).
        const Index u = input(l, 0);
        const Index w = input(l, 1);
        if (is_live(u) && is_live(w)) {
          cols(t(l + 1), r) = ccols(t(u), r) + ccols(t(w), r);
        } else {
          cols(t(l + 1), r) = ccols(t(is_live(u) ? u : w), r);
        }
        continue;
      }
      const Index u = input(l, 0);
      const S* xdot = is_live(u) ? ccols(t(u), r).data() : nullptr;
      layer(l).tangent(theta.data(), v, ccols(a(u), r), ccols(a(l + 1), r), xdot,
                       cols(t(l + 1), r));
    }
  }

  /// Adjoints from buf[depth] down to buf[first + 1]; with v, the R-operator's extra terms
  /// (needs tangents in `tan` and the first-order adjoints in `delta`).
  void adjoint_chunk(const ChunkRange& r, const Adjoints<S>& buf, const S* v) {
    adjoint_chunk(r, buf, v, first + 1, depth);
  }
  /// The same for nodes [lo, hi) (lo > first). `hook` (first-order passes) runs for each node of
  /// [lo, hi) once its output's adjoint is complete; the caller runs it for nodes below lo.
  void adjoint_chunk(const ChunkRange& r, const Adjoints<S>& buf, const S* v, Index lo, Index hi,
                     const NodeHook<S>* hook = nullptr) {
    if (graph) {
      graph_adjoint_chunk(r, buf, v, lo, hi, hook);
      return;
    }
    for (Index l = hi - 1; l >= lo; --l) {
      if (v == nullptr && l - 1 > first && relu_after_norm(l, lo)) {
        backward_relu_norm(r, buf, l, buf.cols(l - 1, r));
        if (hook != nullptr) (*hook)(l - 1, r, buf);  // the BatchNorm's output adjoint is done
        --l;
        continue;
      }
      if (hook != nullptr) (*hook)(l, r, buf);
      layer(l).backward(theta.data(), ccols(a(l), r), ccols(a(l + 1), r), buf.ccols(l + 1, r),
                        buf.cols(l, r));
      if (v != nullptr) {
        layer(l).backward_second(theta.data(), v, ccols(a(l), r), ccols(a(l + 1), r),
                                 ccols(t(l), r).data(), ccols(d(l + 1), r), buf.cols(l, r));
      }
    }
  }

  /// Whether node l is a ReLU whose input is the output of node l − 1 (>= lo), a BatchNorm with
  /// running statistics read by nothing else: backward_relu_norm then runs the two.
  [[nodiscard]] bool relu_after_norm(Index l, Index lo) const {
    if (l - 1 < lo) return false;
    const auto& specs = net.layers();
    if (specs[static_cast<std::size_t>(l)].kind != LayerKind::kRelu ||
        specs[static_cast<std::size_t>(l - 1)].kind != LayerKind::kBatchNorm ||
        layers[static_cast<std::size_t>(l - 1)]->couples_samples()) {
      return false;
    }
    return net.inputs(l).front() == l && accumulate[static_cast<std::size_t>(l)][0] == 0;
  }

  /// The first-order backward of a ReLU (node l) and the BatchNorm before it, in blocks of a few
  /// samples: the BatchNorm reads the ReLU's adjoint (still written to buf[l], which reductions
  /// read) from cache rather than from a pass over the chunk. Per-sample operations, so the
  /// results are those of the two passes. `dst`: the BatchNorm's input adjoint for the chunk.
  void backward_relu_norm(const ChunkRange& r, const Adjoints<S>& buf, Index l, MatMap<S> dst) {
    const Index u = l;  // the ReLU's input, the BatchNorm's output
    const Index xb = source[static_cast<std::size_t>(l - 1)];
    const Index rows = a(u).rows();
    const Index in_rows = a(xb).rows();
    const Index block =
        std::max<Index>(1, (Index(128) << 10) / (rows * static_cast<Index>(sizeof(S))));
    for (Index k = 0; k < r.size(); k += block) {
      const Index b = std::min(block, r.size() - k);
      const Index col = r.begin + k;
      const CMatMap<S> y(a(u).data() + col * rows, rows, b);
      const MatMap<S> dy(buf.col(u, col), rows, b);
      layer(l).backward(theta.data(), y, CMatMap<S>(a(l + 1).data() + col * rows, rows, b),
                        CMatMap<S>(buf.col(l + 1, col), rows, b), dy);
      layer(l - 1).backward(theta.data(), CMatMap<S>(a(xb).data() + col * in_rows, in_rows, b), y,
                            CMatMap<S>(dy.data(), rows, b),
                            MatMap<S>(dst.data() + k * in_rows, in_rows, b));
    }
  }

  /// adjoint_chunk on a graph. A node that is not the last reader of its input computes its
  /// contribution in a scratch block of the chunk and adds it.
  void graph_adjoint_chunk(const ChunkRange& r, const Adjoints<S>& buf, const S* v, Index lo,
                           Index hi, const NodeHook<S>* hook) {
    Mat<S> scratch;
    for (Index l = hi - 1; l >= lo; --l) {
      const auto& adds = accumulate[static_cast<std::size_t>(l)];
      if (v == nullptr && relu_after_norm(l, lo)) {
        const Index u = input(l - 1, 0);
        if (is_live(u)) {
          MatMap<S> into = buf.cols(u, r);
          const bool add = accumulate[static_cast<std::size_t>(l - 1)][0] != 0;
          if (add) scratch.resize(into.rows(), into.cols());
          backward_relu_norm(r, buf, l,
                             add ? MatMap<S>(scratch.data(), into.rows(), into.cols()) : into);
          if (add) into += scratch;
          if (hook != nullptr) (*hook)(l - 1, r, buf);
          --l;
          continue;
        }
      }
      if (hook != nullptr) (*hook)(l, r, buf);
      if (is_add(l)) {
        for (std::size_t k = 0; k < 2; ++k) {
          const Index u = input(l, k);
          if (!is_live(u)) continue;
          if (adds[k] != 0) {
            buf.cols(u, r) += buf.ccols(l + 1, r);
          } else {
            buf.cols(u, r) = buf.ccols(l + 1, r);
          }
        }
        continue;
      }
      const Index u = input(l, 0);
      if (!is_live(u)) continue;
      MatMap<S> into = buf.cols(u, r);
      if (adds[0] != 0) scratch.resize(into.rows(), into.cols());
      MatMap<S> dst(adds[0] != 0 ? scratch.data() : into.data(), into.rows(), into.cols());
      layer(l).backward(theta.data(), ccols(a(u), r), ccols(a(l + 1), r), buf.ccols(l + 1, r), dst);
      if (v != nullptr) {
        layer(l).backward_second(theta.data(), v, ccols(a(u), r), ccols(a(l + 1), r),
                                 ccols(t(u), r).data(), ccols(d(l + 1), r), dst);
      }
      if (adds[0] != 0) into += scratch;
    }
  }

  // ---- staged passes (nodes that couple samples) -------------------------------------------

  [[nodiscard]] bool staged() const { return !barriers.empty(); }

  [[nodiscard]] detail::BatchContext<S> context() const {
    return {chunk, total, [this](S* data, Index size) { sum_over_ranks(data, size); }};
  }
  static MatMap<S> whole(Mat<S>& m) { return MatMap<S>(m.data(), m.rows(), m.cols()); }
  static CMatMap<S> cwhole(const Mat<S>& m) { return CMatMap<S>(m.data(), m.rows(), m.cols()); }

  /// The forward pass of every node, in stages.
  void staged_forward(const S* params) {
    Index lo = 0;
    for (Index b : barriers) {
      for_chunks([&](const ChunkRange& r) { forward_chunk(r, params, lo, b); });
      layer(b).batch_forward(context(), params, cwhole(x(b)), whole(a(b + 1)));
      lo = b + 1;
    }
    for_chunks([&](const ChunkRange& r) { forward_chunk(r, params, lo, depth); });
  }

  /// tangent_chunk in stages; `after` runs per chunk once the outputs' tangents are complete.
  void staged_tangent(const S* v, const std::function<void(const ChunkRange&)>& after) {
    Index lo = first;
    for (Index b : barriers) {
      if (b < first) continue;  // no parameter before it: no tangent
      for_chunks([&](const ChunkRange& r) { tangent_chunk(r, v, lo, b); });
      if (is_live(b + 1)) {
        const Index u = source[static_cast<std::size_t>(b)];
        layer(b).batch_tangent(context(), theta.data(), v, cwhole(a(u)),
                               is_live(u) ? t(u).data() : nullptr, whole(t(b + 1)));
      }
      lo = b + 1;
    }
    for_chunks([&](const ChunkRange& r) {
      tangent_chunk(r, v, lo, depth);
      after(r);
    });
  }

  /// adjoint_chunk in stages; `before` runs per chunk first (it sets buf[depth]).
  void staged_adjoint(std::vector<Mat<S>>& buf, const S* v,
                      const std::function<void(const ChunkRange&)>& before) {
    Index hi = depth;
    bool started = false;
    for (auto it = barriers.rbegin(); it != barriers.rend() && *it > first; ++it) {
      const Index b = *it;
      for_chunks([&](const ChunkRange& r) {
        if (!started) before(r);
        adjoint_chunk(r, buf, v, b + 1, hi);
      });
      started = true;
      const Index u = source[static_cast<std::size_t>(b)];
      if (is_live(u)) {
        layer(b).batch_backward(context(), theta.data(), v, cwhole(a(u)),
                                cwhole(buf[static_cast<std::size_t>(b + 1)]),
                                v != nullptr ? t(u).data() : nullptr,
                                v != nullptr ? d(b + 1).data() : nullptr,
                                whole(buf[static_cast<std::size_t>(u)]),
                                accumulate[static_cast<std::size_t>(b)][0] != 0);
      }
      hi = b;
    }
    for_chunks([&](const ChunkRange& r) {
      if (!started) before(r);
      adjoint_chunk(r, buf, v, first + 1, hi);
    });
  }

  /// Throws for a query made of per-sample terms when samples are coupled.
  void refuse_coupled(std::string_view what, std::string_view why) const {
    if (!staged()) return;
    throw UnsupportedError(fmt::format(
        "{}: not defined for a network whose batchnorm normalises with batch statistics: the "
        "batch mean and variance couple every sample's output to the whole batch, so {}; pass "
        "--batch-norm running to normalise with the running statistics",
        what, why));
  }

  /// out (C × chunk) = M_n u_n for the top operator M_n of each sample.
  void apply_top(Top top, const ChunkRange& r, CMatMap<S> u, MatMap<S> out) const {
    for (Index k = 0; k < r.size(); ++k) {
      const Index s = r.begin + k;
      const auto uk = u.col(k);
      auto ok = out.col(k);
      switch (top) {
        case Top::kLossHessian:
          if (loss == Loss::kCrossEntropy) {
            const auto pk = prob.col(s);
            ok = pk.cwiseProduct(uk) - pk * pk.dot(uk);
          } else {
            ok = (S(2) / static_cast<S>(c)) * uk;
          }
          break;
        case Top::kMcFisher: {
          ok.setZero();
          for (int m = 0; m < mc_m; ++m) {
            const auto rk = mc.col(s * mc_m + m);
            ok += rk * rk.dot(uk);
          }
          ok /= static_cast<S>(mc_m);
          break;
        }
        case Top::kEmpiricalFisher: {  // r_n r_nᵀ
          const auto rk = resid.col(s);
          ok = rk * rk.dot(uk);
          break;
        }
      }
    }
  }

  /// Column `k` of the symmetric factor S_n of Λ_n = S_n S_nᵀ, for every sample of the chunk.
  void factor_column(Index k, const ChunkRange& r, MatMap<S> out) const {
    out.setZero();
    for (Index i = 0; i < r.size(); ++i) {
      const Index s = r.begin + i;
      if (loss == Loss::kCrossEntropy) {
        // S = diag(√p) − p √pᵀ: column k is √p_k (e_k − p).
        const S root = std::sqrt(prob(k, s));
        out.col(i) = -root * prob.col(s);
        out(k, i) += root;
      } else {
        out(k, i) = std::sqrt(S(2) / static_cast<S>(c));
      }
    }
  }

  // ---- reductions to parameter space --------------------------------------------------------

  /// out = alpha Σ ... over all parameter layers: every entry of `out` is written (layers
  /// without a term get zeros), so callers skip zeroing `out` first (a serial pass over P entries,
  /// 3-4 % of a batch-128 gradient).
  void reduce_into(std::vector<std::vector<Pair<S>>> pairs, ReduceMode mode, S alpha, S* out) {
    reduce(std::move(pairs), mode, alpha, out, all, true);
  }

  /// out[layer slices] += alpha Σ ... for every parameter layer accepted by `use` (with
  /// `overwrite`: = instead of +=, see reduce_into). Linear tiles write disjoint rows of `out`;
  /// Conv2d chunks write partials summed here in chunk order.
  void reduce(std::vector<std::vector<Pair<S>>> pairs, ReduceMode mode, S alpha, S* out,
              const std::function<bool(Index)>& use, bool overwrite = false) {
    if (mode == ReduceMode::kSum) attach_packed_inputs(pairs);
    struct Task {
      Index layer;
      Index task;
    };
    std::vector<Task> tasks;
    std::vector<Mat<S>> partials(static_cast<std::size_t>(depth));
    for (Index l = first; l < depth; ++l) {
      if (!has_params(l)) continue;
      if (!use(l) || pairs[static_cast<std::size_t>(l)].empty()) {
        if (overwrite) std::fill_n(out + layer(l).offset(), layer(l).num_params(), S(0));
        continue;
      }
      const Index count = layer(l).reduce_tasks(n, chunk);
      if (layer(l).tasks_are_chunks()) {
        partials[static_cast<std::size_t>(l)] = Mat<S>::Zero(layer(l).num_params(), count);
      }
      for (Index i = 0; i < count; ++i) tasks.push_back({l, i});
    }
    parallel_for_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i) {
      const Task& task = tasks[static_cast<std::size_t>(i)];
      Mat<S>& partial = partials[static_cast<std::size_t>(task.layer)];
      S* dst = partial.size() > 0 ? partial.col(task.task).data() : out + layer(task.layer).offset();
      layer(task.layer).reduce(task.task, n, chunk, pairs[static_cast<std::size_t>(task.layer)],
                               mode, alpha, overwrite && partial.size() == 0, dst);
    });
    add_chunk_partials(partials, overwrite, out);
  }

  /// out[layer l's slice] (= with `overwrite`, else +=) the sum of partials[l]'s columns, one
  /// per chunk, in chunk order; layers with no partials are skipped.
  void add_chunk_partials(const std::vector<Mat<S>>& partials, bool overwrite, S* out) {
    for (Index l = first; l < depth; ++l) {
      const Mat<S>& partial = partials[static_cast<std::size_t>(l)];
      if (partial.size() == 0) continue;
      MatMap<S> dst(out + layer(l).offset(), partial.rows(), 1);
      if (overwrite) dst.setZero();
      for (Index k = 0; k < partial.cols(); ++k) dst += partial.col(k);
    }
  }

  /// Linear layers' stored inputs packed for the GEMM kernel, once per bound batch (see
  /// PackedLhs): every kSum reduction against them then packs only its other operand.
  std::vector<kernels::PackedLhs<S>> packed_inputs;  // empty until the first such reduction

  /// A Linear layer (GEMM reductions over all samples); the other parameter layers (Conv2d,
  /// normalization) reduce by chunk partials and give per-sample gradients.
  [[nodiscard]] bool is_linear(Index l) const {
    return has_params(l) && layers[static_cast<std::size_t>(l)]->spec().kind == LayerKind::kLinear;
  }

  /// One left GEMM operand per Linear layer: op(A) (m × k) with A column-major at `a`.
  struct Operand {
    const S* a;
    Index lda;
    Index m;
    Index k;
  };

  /// Packs operand(l) for each Linear layer l in [from, depth) into dst[l], one parallel task
  /// per packed block.
  void pack_per_layer(Index from, detail::Op op, std::vector<kernels::PackedLhs<S>>& dst,
                      const std::function<Operand(Index)>& operand) {
    dst.resize(static_cast<std::size_t>(depth));
    struct Task {
      Index layer;
      Index block;
      Operand operand;
    };
    std::vector<Task> tasks;
    for (Index l = from; l < depth; ++l) {
      if (!is_linear(l)) continue;
      const Operand o = operand(l);
      const Index blocks = kernels::prepare_packing(op, o.m, o.k, dst[static_cast<std::size_t>(l)]);
      for (Index b = 0; b < blocks; ++b) tasks.push_back({l, b, o});
    }
    parallel_for_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i) {
      const Task& t = tasks[static_cast<std::size_t>(i)];
      kernels::pack_block(t.operand.a, t.operand.lda, t.block, dst[static_cast<std::size_t>(t.layer)]);
    });
  }

  void ensure_packed_inputs() {
    if (!packed_inputs.empty()) return;
    pack_per_layer(first, kernels::Op::kN, packed_inputs, [&](Index l) {
      return Operand{x(l).data(), x(l).rows(), x(l).rows(), n};
    });
  }

  /// For tangent passes: the weights of the Linear layers after `first` (the W of W ẋ), packed
  /// once per bound batch, and the current direction's blocks V, packed once per product instead
  /// of once per sample chunk.
  std::vector<kernels::PackedLhs<S>> packed_weights;  // empty until the first tangent product
  std::vector<kernels::PackedLhs<S>> packed_direction;

  /// The blocks W_l of `params` (out × in, row-major: op(A) = Aᵀ of the column-major in × out
  /// view) of the Linear layers in [from, depth), packed into dst[l].
  void pack_linear_blocks(const S* params, Index from, std::vector<kernels::PackedLhs<S>>& dst) {
    pack_per_layer(from, kernels::Op::kT, dst, [&](Index l) {
      const Layer<S>& lay = layer(l);
      return Operand{params + lay.offset(), lay.in_size(), lay.out_size(), lay.in_size()};
    });
  }

  /// The layers use packed operands for tangents in direction v while this lives (one product).
  class PackedTangents {
   public:
    PackedTangents(Impl& m, const S* v) : m_(m) {
      if (m.packed_weights.empty()) m.pack_linear_blocks(m.theta.data(), m.first + 1, m.packed_weights);
      m.pack_linear_blocks(v, m.first, m.packed_direction);
      for (Index l = m.first; l < m.depth; ++l) {
        if (!m.is_linear(l)) continue;
        const auto i = static_cast<std::size_t>(l);
        const bool moving_input = m.is_live(m.source[i]);  // ẋ ≠ 0: W ẋ is needed
        m.layer(l).use_packed(moving_input ? &m.packed_weights[i] : nullptr,
                              &m.packed_direction[i], v);
      }
    }
    ~PackedTangents() {
      for (Index l = m_.first; l < m_.depth; ++l) m_.layer(l).use_packed(nullptr, nullptr, nullptr);
    }
    PackedTangents(const PackedTangents&) = delete;
    PackedTangents& operator=(const PackedTangents&) = delete;

   private:
    Impl& m_;
  };

  void attach_packed_inputs(std::vector<std::vector<Pair<S>>>& pairs) {
    for (Index l = first; l < depth; ++l) {
      if (!is_linear(l)) continue;
      for (Pair<S>& pair : pairs[static_cast<std::size_t>(l)]) {
        if (pair.x != x(l).data()) continue;
        ensure_packed_inputs();
        pair.packed_x = &packed_inputs[static_cast<std::size_t>(l)];
      }
    }
  }

  std::vector<std::vector<Pair<S>>> pairs_with(std::vector<Mat<S>>& dys) {
    std::vector<std::vector<Pair<S>>> pairs(static_cast<std::size_t>(depth));
    for (Index l = first; l < depth; ++l) {
      if (has_params(l)) {
        pairs[static_cast<std::size_t>(l)].push_back(
            {dys[static_cast<std::size_t>(l + 1)].data(), x(l).data(), true});
      }
    }
    return pairs;
  }

  static bool all(Index) { return true; }

  // ---- transient backward passes ------------------------------------------------------------
  // The gradient and per-sample gradients of a batch whose backward pass is not stored: each
  // chunk's adjoints live in chunk-local buffers, reused from chunk to chunk, and each layer's
  // parameter term is taken while its output's adjoint is still in cache, instead of after the
  // pass from N·S stored adjoints. The queries that need the adjoints themselves (Hessian and
  // empirical Fisher products, K-FAC's empirical factors, ...) store the backward pass on their
  // first use, as before.

  /// Chunk-local adjoint buffers, one set per running chunk task: a pool rather than per-thread
  /// storage, so that no set is shared by two tasks that a thread interleaves.
  std::mutex local_mutex;
  std::vector<std::unique_ptr<std::vector<Mat<S>>>> local_free;

  class LocalLease {
   public:
    explicit LocalLease(Impl& m) : m_(m) {
      const std::lock_guard<std::mutex> lock(m.local_mutex);
      if (m.local_free.empty()) {
        set_ = std::make_unique<std::vector<Mat<S>>>(static_cast<std::size_t>(m.depth + 1));
      } else {
        set_ = std::move(m.local_free.back());
        m.local_free.pop_back();
      }
    }
    ~LocalLease() {
      const std::lock_guard<std::mutex> lock(m_.local_mutex);
      m_.local_free.push_back(std::move(set_));
    }
    LocalLease(const LocalLease&) = delete;
    LocalLease& operator=(const LocalLease&) = delete;
    std::vector<Mat<S>>& buffers() { return *set_; }

   private:
    Impl& m_;
    std::unique_ptr<std::vector<Mat<S>>> set_;
  };

  /// One backward pass of the residuals r_n in which value v's adjoint has a whole-batch buffer
  /// only where whole[v] is allocated (N columns) and is chunk-local elsewhere. `use` runs for
  /// every parameter node once its output's adjoint is complete for the chunk.
  void transient_backward(std::vector<Mat<S>>& whole, const NodeHook<S>& use) {
    const NodeHook<S> hook = [&](Index l, const ChunkRange& r, const Adjoints<S>& buf) {
      if (has_params(l)) use(l, r, buf);
    };
    for_chunks([&](const ChunkRange& r) {
      LocalLease lease(*this);
      std::vector<Mat<S>>& local = lease.buffers();
      for (Index v = first + 1; v <= depth; ++v) {
        Mat<S>& m = local[static_cast<std::size_t>(v)];
        if (is_live(v) && whole[static_cast<std::size_t>(v)].size() == 0 && m.size() == 0) {
          m.resize(a(v).rows(), chunk);
        }
      }
      const Adjoints<S> buf(whole, local, r.begin);
      buf.cols(depth, r) = ccols(resid, r);
      adjoint_chunk(r, buf, nullptr, first + 1, depth, &hook);
      use(first, r, buf);
    });
  }

  /// ∇L by a transient pass: Linear layers keep their output adjoints for the whole batch (their
  /// reduction is one GEMM over all samples, as in gradient's stored form); the other layers add
  /// one partial per chunk, summed in chunk order, so the result is bitwise the stored form's.
  void transient_gradient(S* out) {
    const S alpha = inv_total();
    std::vector<Mat<S>> whole(static_cast<std::size_t>(depth + 1));
    std::vector<Mat<S>> partials(static_cast<std::size_t>(depth));
    for (Index l = first; l < depth; ++l) {
      if (is_linear(l)) {
        whole[static_cast<std::size_t>(l + 1)].resize(a(l + 1).rows(), n);
      } else if (has_params(l)) {
        partials[static_cast<std::size_t>(l)] =
            Mat<S>::Zero(layer(l).num_params(), num_chunks(n, chunk));
      }
    }
    transient_backward(whole, [&](Index l, const ChunkRange& r, const Adjoints<S>& buf) {
      if (is_linear(l)) return;
      layer(l).reduce_block(r.size(), {Pair<S>{buf.col(l + 1, r.begin), x(l).col(r.begin).data()}},
                            ReduceMode::kSum, alpha,
                            partials[static_cast<std::size_t>(l)].col(r.index).data());
    });
    reduce(pairs_with(whole), ReduceMode::kSum, alpha, out, [&](Index l) { return is_linear(l); },
           /*overwrite=*/true);
    add_chunk_partials(partials, /*overwrite=*/true, out);
  }

  /// Per-sample gradients by a transient pass: every layer writes its rows of each sample's
  /// column from the chunk's adjoints.
  void transient_per_sample_gradients(S* base, Index ld) {
    std::vector<Mat<S>> whole(static_cast<std::size_t>(depth + 1));
    transient_backward(whole, [&](Index l, const ChunkRange& r, const Adjoints<S>& buf) {
      layer(l).per_sample(buf.ccols(l + 1, r), ccols(x(l), r),
                          base + r.begin * ld + layer(l).offset(), ld);
    });
  }

  /// Whether gradient-type queries take a transient pass: the backward pass is not stored, and
  /// no node couples the samples (there the stored pass runs in stages).
  [[nodiscard]] bool transient() const { return !have_delta && !staged() && first < depth; }

  // ---- cached state ----------------------------------------------------------------------

  void ensure_backward() {
    if (have_delta || first == depth) return;
    allocate(delta);
    if (staged()) {
      staged_adjoint(delta, nullptr,
                     [&](const ChunkRange& r) { cols(d(depth), r) = ccols(resid, r); });
      have_delta = true;
      return;
    }
    for_chunks([&](const ChunkRange& r) {
      cols(d(depth), r) = ccols(resid, r);
      adjoint_chunk(r, delta, nullptr);
    });
    have_delta = true;
  }

  void ensure_work() {
    allocate(tan);
    allocate(adj);
  }

  /// One "Jᵀ M J v" product: tangents, the top operator, adjoints, reduction.
  void outer_product(Top top, const S* v, S* out, bool second_order) {
    if (first == depth) return;  // no parameters
    ensure_work();
    const PackedTangents packed(*this, v);
    if (staged()) {
      staged_tangent(v, [&](const ChunkRange& r) {
        apply_top(top, r, ccols(t(depth), r), cols(j(depth), r));
      });
      staged_adjoint(adj, second_order ? v : nullptr, [](const ChunkRange&) {});
    } else {
      for_chunks([&](const ChunkRange& r) {
        tangent_chunk(r, v);
        apply_top(top, r, ccols(t(depth), r), cols(j(depth), r));
        adjoint_chunk(r, adj, second_order ? v : nullptr);
      });
    }
    auto pairs = pairs_with(adj);
    if (second_order) {
      for (Index l = first + 1; l < depth; ++l) {
        const Index u = source[static_cast<std::size_t>(l)];
        if (has_params(l) && is_live(u)) {
          pairs[static_cast<std::size_t>(l)].push_back(
              {d(l + 1).data(), t(u).data(), false, nullptr, a(u).data()});
        }
      }
    }
    reduce_into(pairs, ReduceMode::kSum, inv_total(), out);
    sum_over_ranks(out, p);
  }

  /// F_emp v = (1/N) Σ_n g_n (g_nᵀ v) from the stored backward pass. A parameter layer's block
  /// of g_n is its local derivative applied to the stored adjoint δ at its output, so
  /// g_nᵀ v = Σ_l δ_nᵀ (∂y_l/∂θ_l) v_l (each layer's tangent with ẋ = 0, on stored inputs) and
  /// the product is one reduction of the δ scaled per sample: no tangent or adjoint pass through
  /// the network (half the GEMMs of the Jᵀ r rᵀ J v form).
  /// (1/N) Σ_n g_n (g_nᵀ v). Linear layers: the slope g_nᵀ v from the layer's tangent, then one
  /// reduction of the deltas scaled by it. Conv2d layers have few parameters and many positions:
  /// their per-sample gradients (one GEMM per sample) give both the slope (a dot product) and
  /// the result (a matrix-vector product), where tangent and reduction would take two GEMMs and
  /// two unfoldings per sample.
  void empirical_fisher(const S* v, S* out) {
    if (first == depth) return;  // no parameters
    if (staged()) {
      // g_n = J_nᵀ r_n with J_n the Jacobian of f_n through the batch statistics: the product
      // is Jᵀ (r rᵀ) J v, an outer product like the GGN's.
      outer_product(Top::kEmpiricalFisher, v, out, false);
      return;
    }
    ensure_backward();
    ensure_work();
    const PackedTangents packed(*this, v);
    // Rows of `conv_grads` for each Conv2d layer's parameters, one column per sample.
    std::vector<Index> conv_row(static_cast<std::size_t>(depth), -1);
    Index conv_rows = 0;
    for (Index l = first; l < depth; ++l) {
      if (!has_params(l) || is_linear(l)) continue;
      conv_row[static_cast<std::size_t>(l)] = conv_rows;
      conv_rows += layer(l).num_params();
    }
    Mat<S> conv_grads(conv_rows, conv_rows > 0 ? n : 0);
    Vector<S> slope(n);  // g_nᵀ v
    for_chunks([&](const ChunkRange& r) {
      auto s = slope.segment(r.begin, r.size());
      s.setZero();
      for (Index l = first; l < depth; ++l) {
        if (!has_params(l)) continue;
        const Index row = conv_row[static_cast<std::size_t>(l)];
        if (row >= 0) {
          const Index count = layer(l).num_params();
          layer(l).per_sample(ccols(d(l + 1), r), ccols(x(l), r), conv_grads.col(r.begin).data() + row,
                              conv_rows);
          s.noalias() += conv_grads.block(row, r.begin, count, r.size()).transpose() *
                         CMatMap<S>(v + layer(l).offset(), count, 1);
          continue;
        }
        layer(l).tangent(theta.data(), v, ccols(x(l), r), ccols(a(l + 1), r), nullptr, cols(t(l + 1), r));
        s += ccols(t(l + 1), r).cwiseProduct(ccols(d(l + 1), r)).colwise().sum().transpose();
      }
      for (Index l = first; l < depth; ++l) {
        if (is_linear(l)) cols(j(l + 1), r) = ccols(d(l + 1), r) * s.asDiagonal();
      }
    });
    const S alpha = inv_total();
    reduce(pairs_with(adj), ReduceMode::kSum, alpha, out, [&](Index l) { return is_linear(l); },
           /*overwrite=*/true);
    for (Index l = first; l < depth; ++l) {
      const Index row = conv_row[static_cast<std::size_t>(l)];
      if (row < 0) continue;
      const Index count = layer(l).num_params();
      MatMap<S>(out + layer(l).offset(), count, 1).noalias() =
          alpha * (conv_grads.middleRows(row, count) * slope);
    }
    sum_over_ranks(out, p);
  }

  void draw_residuals(int samples, std::uint64_t seed, Mat<S>& out) const {
    out.resize(c, n * samples);
    detail::Rng rng(seed);
    // The draws of the samples other ranks hold come first in the one stream: make and discard
    // them, so every sample gets the labels it gets in one process.
    for (Index s = 0; s < offset * samples; ++s) {
      if (loss == Loss::kCrossEntropy) {
        (void)rng.uniform();
      } else {
        for (Index k = 0; k < c; ++k) (void)rng.normal();
      }
    }
    for (Index s = 0; s < n; ++s) {
      for (int m = 0; m < samples; ++m) {
        auto col = out.col(s * samples + m);
        if (loss == Loss::kCrossEntropy) {
          const double u = rng.uniform();
          double cumulative = 0;
          Index label = c - 1;
          for (Index k = 0; k < c; ++k) {
            cumulative += static_cast<double>(prob(k, s));
            if (u < cumulative) {
              label = k;
              break;
            }
          }
          col = prob.col(s);
          col(label) -= S(1);
        } else {
          // y ~ N(f, C/2): r = (2/C)(f − y) = −sqrt(2/C) ε.
          const double scale = std::sqrt(2.0 / static_cast<double>(c));
          for (Index k = 0; k < c; ++k) col(k) = static_cast<S>(-scale * rng.normal());
        }
      }
    }
  }

  /// The shape checks of binding, before anything is allocated; keeps the targets.
  void check(ConstVectorRef<S> params, ConstMatrixRef<S> inputs, Targets<S>& targets) {
    n = inputs.cols();
    p = net.num_parameters();
    c = net.num_outputs();
    depth = static_cast<Index>(net.layers().size());
    if (params.size() != p) {
      throw Error(fmt::format("parameter vector has {} entries; the network '{}' has {}",
                              params.size(), net.spec(), p));
    }
    if (inputs.rows() != net.num_inputs()) {
      throw Error(fmt::format("inputs have {} features per sample; the network expects {} (shape {})",
                              inputs.rows(), net.num_inputs(), net.input_shape().str()));
    }
    if (n == 0) throw Error("the batch is empty; expected at least one sample");
    // Binding stores every activation of every sample: refuse a batch that cannot fit before the
    // first buffer is allocated.
    net.check_memory(n, sizeof(S));
    if (loss == Loss::kCrossEntropy) {
      if (targets.labels.size() != static_cast<std::size_t>(n)) {
        throw Error(fmt::format("cross-entropy needs one class label per sample: {} labels for {} "
                                "samples",
                                targets.labels.size(), n));
      }
      if (c < 2) throw Error(fmt::format("cross-entropy needs at least 2 outputs; the network has {}", c));
      for (std::size_t i = 0; i < targets.labels.size(); ++i) {
        const std::int64_t y = targets.labels[i];
        if (y < 0 || y >= c) {
          throw Error(fmt::format("label {} of sample {} is outside [0, {}) (the network has {} "
                                  "outputs)",
                                  y, offset + static_cast<Index>(i), c, c));
        }
      }
      labels = std::move(targets.labels);
    } else {
      if (targets.values.rows() != c || targets.values.cols() != n) {
        throw Error(fmt::format("mse targets are {}x{} (outputs x samples); expected {}x{}",
                                targets.values.rows(), targets.values.cols(), c, n));
      }
      values = std::move(targets.values);
    }
  }

  /// Copies the parameters and inputs and runs the forward pass and the loss.
  void bind(ConstVectorRef<S> params, ConstMatrixRef<S> inputs) {
    Impl& m = *this;
    m.theta.resize(m.p);
    m.layers = detail::make_layers<S>(m.net);
    m.first = m.depth;
    for (Index l = 0; l < m.depth; ++l) {
      if (m.has_params(l)) {
        m.first = l;
        break;
      }
    }
    m.graph = !m.net.is_sequential();
    m.source.resize(static_cast<std::size_t>(m.depth));
    m.accumulate.assign(static_cast<std::size_t>(m.depth), {0, 0});
    m.live.assign(static_cast<std::size_t>(m.depth + 1), 0);
    for (Index l = 0; l < m.depth; ++l) {
      const std::vector<Index>& reads = m.net.inputs(l);
      m.source[static_cast<std::size_t>(l)] = reads.front();
      bool depends = m.has_params(l);
      for (Index u : reads) depends = depends || m.is_live(u);
      m.live[static_cast<std::size_t>(l + 1)] = depends ? 1 : 0;
    }
    // Adjoints run in reverse node order: a reader adds to what a later reader of the same
    // value wrote.
    std::vector<char> read_later(static_cast<std::size_t>(m.depth + 1), 0);
    for (Index l = m.depth - 1; l >= 0; --l) {
      const std::vector<Index>& reads = m.net.inputs(l);
      for (std::size_t k = 0; k < reads.size(); ++k) {
        m.accumulate[static_cast<std::size_t>(l)][k] =
            read_later[static_cast<std::size_t>(reads[k])];
      }
      for (Index u : reads) read_later[static_cast<std::size_t>(u)] = 1;
    }
    m.barriers.clear();
    for (Index l = 0; l < m.depth; ++l) {
      if (!m.layer(l).couples_samples()) continue;
      m.barriers.push_back(l);
      // PyTorch refuses it too: the variance of one value is 0 and its unbiased form undefined.
      const Index per_channel = m.total * (m.layer(l).in_size() / m.net.input_shape(l).dims[0]);
      if (per_channel < 2) {
        throw Error(fmt::format("batchnorm layer {} normalises with batch statistics and gets one "
                                "value per channel from a batch of {} sample{}; expected at least "
                                "2 values per channel (a larger batch, or --batch-norm running)",
                                l, m.total, m.total == 1 ? "" : "s"));
      }
    }
    m.chunk = chunk_size_for<S>(m.n, m.net);
    m.act.resize(static_cast<std::size_t>(m.depth + 1));
    for (Index l = 0; l <= m.depth; ++l) m.a(l).resize(m.net.shapes()[static_cast<std::size_t>(l)].size(), m.n);
    m.resid.resize(m.c, m.n);
    m.losses.resize(m.n);
    if (loss == Loss::kCrossEntropy) m.prob.resize(m.c, m.n);

    // The copies of the parameters and inputs are made inside the chunk tasks: in parallel, and
    // each chunk's inputs are still in cache for its forward pass (a serial copy of the 2 MB of
    // the benchmarks' MLP was 7-10 % of a batch-128 gradient). The forward reads the caller's
    // parameters, which stay valid for the duration of the constructor.
    const Index chunks = num_chunks(m.n, m.chunk);
    const auto copy = [&](const ChunkRange& r) {
      const Index begin = m.p * r.index / chunks;
      const Index end = m.p * (r.index + 1) / chunks;
      m.theta.segment(begin, end - begin) = params.segment(begin, end - begin);
      cols(m.a(0), r) = inputs.middleCols(r.begin, r.size());
    };
    const auto losses_of = [&](const ChunkRange& r) {
      const Mat<S>& f = m.a(m.depth);
      for (Index s = r.begin; s < r.end; ++s) {
        if (loss == Loss::kCrossEntropy) {
          const S top = f.col(s).maxCoeff();
          const S lse = top + std::log((f.col(s).array() - top).exp().sum());
          const auto y = static_cast<Index>(m.labels[static_cast<std::size_t>(s)]);
          m.losses[s] = lse - f(y, s);
          m.prob.col(s) = (f.col(s).array() - lse).exp().matrix();
          m.resid.col(s) = m.prob.col(s);
          m.resid(y, s) -= S(1);
        } else {
          const auto diff = f.col(s) - m.values.col(s);
          m.losses[s] = diff.squaredNorm() / static_cast<S>(m.c);
          m.resid.col(s) = (S(2) / static_cast<S>(m.c)) * diff;
        }
      }
    };
    if (m.staged()) {
      m.for_chunks(copy);
      m.staged_forward(params.data());
      m.for_chunks(losses_of);
    } else {
      m.for_chunks([&](const ChunkRange& r) {
        copy(r);
        m.forward_chunk(r, params.data(), 0, m.depth);
        losses_of(r);
      });
    }
    S sum = 0;
    for (Index s = 0; s < m.n; ++s) sum += m.losses[s];
    m.sum_over_ranks(&sum, 1);
    m.mean_loss = sum / static_cast<S>(m.total);
  }
};

template <class S>
BoundBatch<S>::BoundBatch(const Network& network, ConstVectorRef<S> params,
                          ConstMatrixRef<S> inputs, Targets<S> targets, Loss loss)
    : impl_(std::make_unique<Impl>(network, loss)) {
  impl_->check(params, inputs, targets);
  impl_->total = impl_->n;
  impl_->bind(params, inputs);
}

template <class S>
BoundBatch<S>::BoundBatch(const Network& network, ConstVectorRef<S> params,
                          ConstMatrixRef<S> inputs, Targets<S> targets, Loss loss,
                          const dist::Communicator& comm, dist::SampleShare share)
    : impl_(std::make_unique<Impl>(network, loss)) {
  Impl& m = *impl_;
  // The same on every rank, so every rank throws it without agreeing first.
  if (share.total < comm.size()) {
    throw Error(fmt::format("a batch of {} sample{} cannot be split across {} processes; expected "
                            "at least one sample per process",
                            share.total, share.total == 1 ? "" : "s", comm.size()));
  }
  m.comm = &comm;
  m.total = share.total;
  m.offset = share.begin;
  comm.run_agreed([&] {
    if (inputs.cols() != share.size()) {
      throw Error(fmt::format("this process's share of the batch is samples [{}, {}) ({} samples) "
                              "but it was given {}",
                              share.begin, share.end, share.size(), inputs.cols()));
    }
    m.check(params, inputs, targets);
  });
  m.bind(params, inputs);
}

template <class S>
BoundBatch<S>::~BoundBatch() = default;
template <class S>
BoundBatch<S>::BoundBatch(BoundBatch&&) noexcept = default;
template <class S>
BoundBatch<S>& BoundBatch<S>::operator=(BoundBatch&&) noexcept = default;

template <class S>
const Network& BoundBatch<S>::network() const noexcept { return impl_->net; }
template <class S>
Loss BoundBatch<S>::loss_kind() const noexcept { return impl_->loss; }
template <class S>
Index BoundBatch<S>::batch_size() const noexcept { return impl_->n; }
template <class S>
Index BoundBatch<S>::total_batch_size() const noexcept { return impl_->total; }
template <class S>
Index BoundBatch<S>::num_parameters() const noexcept { return impl_->p; }
template <class S>
Index BoundBatch<S>::num_outputs() const noexcept { return impl_->c; }
template <class S>
Index BoundBatch<S>::chunk_size() const noexcept { return impl_->chunk; }
template <class S>
S BoundBatch<S>::loss() const noexcept { return impl_->mean_loss; }
template <class S>
const Vector<S>& BoundBatch<S>::per_sample_losses() const noexcept { return impl_->losses; }
template <class S>
const Matrix<S>& BoundBatch<S>::outputs() const noexcept { return impl_->a(impl_->depth); }

namespace {
template <class S>
void check_vector(Index size, Index expected, const char* what) {
  if (size != expected) {
    throw Error(fmt::format("{} has {} entries; the network has {} parameters", what, size, expected));
  }
}
}  // namespace

template <class S>
void BoundBatch<S>::gradient(VectorRef<S> out) {
  Impl& m = *impl_;
  check_vector<S>(out.size(), m.p, "gradient output");
  if (m.gradient_cache.size() == m.p) {
    out = m.gradient_cache;
    return;
  }
  if (m.transient()) {
    m.transient_gradient(out.data());
  } else {
    m.ensure_backward();
    m.reduce_into(m.pairs_with(m.delta), ReduceMode::kSum, m.inv_total(), out.data());
  }
  m.sum_over_ranks(out.data(), m.p);
  m.gradient_cache = out;
}

template <class S>
void BoundBatch<S>::per_sample_gradients(MatrixRef<S> out) {
  Impl& m = *impl_;
  if (out.rows() != m.p || out.cols() != m.n) {
    throw Error(fmt::format("per-sample gradient output is {}x{}; expected {}x{} (parameters x "
                            "samples)",
                            out.rows(), out.cols(), m.p, m.n));
  }
  m.refuse_coupled("per-sample gradients", "a sample's loss depends on every sample and its "
                                           "gradient is not a term of the batch gradient");
  const Index ld = out.outerStride();
  S* base = out.data();
  if (m.transient()) {
    m.transient_per_sample_gradients(base, ld);
    return;
  }
  m.ensure_backward();
  m.for_chunks([&](const ChunkRange& r) {
    for (Index l = m.first; l < m.depth; ++l) {
      if (!m.has_params(l)) continue;
      m.layer(l).per_sample(ccols(m.d(l + 1), r), ccols(m.x(l), r), base + r.begin * ld + m.layer(l).offset(), ld);
    }
  });
}

template <class S>
void BoundBatch<S>::ggn_product(ConstVectorRef<S> v, VectorRef<S> out) {
  check_vector<S>(v.size(), impl_->p, "GGN product vector");
  check_vector<S>(out.size(), impl_->p, "GGN product output");
  impl_->outer_product(Top::kLossHessian, v.data(), out.data(), false);
}

template <class S>
void BoundBatch<S>::hessian_product(ConstVectorRef<S> v, VectorRef<S> out) {
  check_vector<S>(v.size(), impl_->p, "Hessian product vector");
  check_vector<S>(out.size(), impl_->p, "Hessian product output");
  impl_->ensure_backward();
  impl_->outer_product(Top::kLossHessian, v.data(), out.data(), true);
}

template <class S>
void BoundBatch<S>::empirical_fisher_product(ConstVectorRef<S> v, VectorRef<S> out) {
  check_vector<S>(v.size(), impl_->p, "empirical Fisher product vector");
  check_vector<S>(out.size(), impl_->p, "empirical Fisher product output");
  impl_->empirical_fisher(v.data(), out.data());
}

template <class S>
void BoundBatch<S>::set_mc_samples(int samples, std::uint64_t seed) {
  if (samples < 1) throw Error(fmt::format("MC-Fisher samples = {}; expected at least 1", samples));
  impl_->draw_residuals(samples, seed, impl_->mc);
  impl_->mc_m = samples;
}

template <class S>
void BoundBatch<S>::mc_fisher_product(ConstVectorRef<S> v, VectorRef<S> out) {
  check_vector<S>(v.size(), impl_->p, "MC-Fisher product vector");
  check_vector<S>(out.size(), impl_->p, "MC-Fisher product output");
  if (impl_->mc_m == 0) set_mc_samples(1, 0);
  impl_->outer_product(Top::kMcFisher, v.data(), out.data(), false);
}

template <class S>
void BoundBatch<S>::ggn_diagonal(VectorRef<S> out) {
  Impl& m = *impl_;
  check_vector<S>(out.size(), m.p, "GGN diagonal output");
  m.refuse_coupled("the exact GGN diagonal", "it is not a sum of per-sample blocks, from which "
                                             "quadra computes it");
  out.setZero();
  if (m.first == m.depth) return;
  m.ensure_work();
  // Linear layers: Σ_c (adjoint_c)², one GEMM at the end. Conv2d: per-sample squares per c.
  std::vector<Mat<S>> squares(static_cast<std::size_t>(m.depth + 1));
  bool any_conv = false;
  for (Index l = m.first; l < m.depth; ++l) {
    if (!m.has_params(l)) continue;
    if (!m.is_linear(l)) {
      any_conv = true;
    } else {
      squares[static_cast<std::size_t>(l + 1)] = Mat<S>::Zero(m.a(l + 1).rows(), m.n);
    }
  }
  const S alpha = m.inv_total();
  Vector<S> conv_part(any_conv ? m.p : 0);
  for (Index k = 0; k < m.c; ++k) {
    m.for_chunks([&](const ChunkRange& r) {
      m.factor_column(k, r, cols(m.j(m.depth), r));
      m.adjoint_chunk(r, m.adj, nullptr);
      for (Index l = m.first; l < m.depth; ++l) {
        Mat<S>& sq = squares[static_cast<std::size_t>(l + 1)];
        if (sq.size() > 0) cols(sq, r).array() += ccols(m.j(l + 1), r).array().square();
      }
    });
    if (any_conv) {
      conv_part.setZero();
      m.reduce(m.pairs_with(m.adj), ReduceMode::kSquared, alpha, conv_part.data(),
               [&](Index l) { return !m.is_linear(l); });
      for (Index l = m.first; l < m.depth; ++l) {
        if (m.has_params(l) && !m.is_linear(l)) {
          out.segment(m.layer(l).offset(), m.layer(l).num_params()) +=
              conv_part.segment(m.layer(l).offset(), m.layer(l).num_params());
        }
      }
    }
  }
  m.reduce(m.pairs_with(squares), ReduceMode::kPreSquared, alpha, out.data(),
           [&](Index l) { return m.is_linear(l); });
  m.sum_over_ranks(out.data(), m.p);
}

template <class S>
void BoundBatch<S>::empirical_fisher_diagonal(VectorRef<S> out) {
  Impl& m = *impl_;
  check_vector<S>(out.size(), m.p, "empirical Fisher diagonal output");
  m.refuse_coupled("the empirical Fisher diagonal", "it needs per-sample gradients, which quadra "
                                                    "does not form through batch statistics");
  m.ensure_backward();
  m.reduce_into(m.pairs_with(m.delta), ReduceMode::kSquared, m.inv_total(), out.data());
  m.sum_over_ranks(out.data(), m.p);
}

template <class S>
std::vector<KfacFactors<S>> BoundBatch<S>::kfac_factors(KfacType type, int mc_samples,
                                                       std::uint64_t seed,
                                                       S* normalization_diagonal) {
  Impl& m = *impl_;
  if (m.staged() && type == KfacType::kType2) {
    throw UnsupportedError(
        "type-2 K-FAC factors: not defined for a network whose batchnorm normalises with batch "
        "statistics: a column of one sample's loss-Hessian factor, backpropagated through the "
        "batch mean and variance, reaches every sample, so the columns of different samples "
        "mix; use the mc or empirical variant (their output gradients are the batch loss's), "
        "or --batch-norm running");
  }
  if (type == KfacType::kMc && mc_samples < 1) {
    throw Error(fmt::format("K-FAC MC samples = {}; expected at least 1", mc_samples));
  }
  std::vector<KfacFactors<S>> factors;
  std::vector<Index> index_of(static_cast<std::size_t>(m.depth), -1);
  // Linear and Conv2d layers only: normalization layers have no Kronecker factors.
  const auto has_factors = [&](Index l) { return m.has_params(l) && m.layer(l).kfac_a_dim() > 0; };
  for (Index l = m.first; l < m.depth; ++l) {
    if (!has_factors(l)) continue;
    index_of[static_cast<std::size_t>(l)] = static_cast<Index>(factors.size());
    KfacFactors<S> f;
    f.layer = l;
    f.augmented = m.layer(l).spec().bias;
    const Index dim = m.layer(l).kfac_a_dim();
    const Index out = m.a(l + 1).rows() / m.layer(l).positions();
    f.a = Mat<S>::Zero(dim, dim);
    f.s = Mat<S>::Zero(out, out);
    factors.push_back(std::move(f));
  }
  // With batch statistics the normalization layers' diagonal blocks are the same moment as S:
  // (1/N) Σ_n c_n ⊙ c_n of each sample's contribution c_n to the batch gradient.
  const bool norm_diagonal = m.staged() && normalization_diagonal != nullptr;
  if (norm_diagonal) std::fill_n(normalization_diagonal, m.p, S(0));
  const auto is_norm = [&](Index l) { return m.layer(l).spec().is_normalization(); };
  if (factors.empty() && !norm_diagonal) return factors;
  const auto num_chunks_n = num_chunks(m.n, m.chunk);

  // Runs, in one parallel loop, a Gram tile task per Linear layer tile and a partial per chunk
  // for Conv2d layers; `linear_source(l)` is the Linear matrix (rows × N), `conv_partial`
  // accumulates one chunk, `target(f)` the factor to add to.
  auto gram_phase = [&](const std::function<const Mat<S>&(Index)>& linear_source,
                        const std::function<void(Index, const ChunkRange&, S*)>& conv_partial,
                        const std::function<Mat<S>&(KfacFactors<S>&)>& target, S linear_alpha,
                        const std::function<S(Index)>& conv_alpha) {
    struct Task {
      Index layer;
      Index index;
    };
    std::vector<Task> tasks;
    std::vector<Mat<S>> partials(static_cast<std::size_t>(m.depth));
    std::vector<Mat<S>> grams(static_cast<std::size_t>(m.depth));
    for (Index l = m.first; l < m.depth; ++l) {
      if (!has_factors(l)) continue;
      const Mat<S>& tgt = target(factors[static_cast<std::size_t>(index_of[static_cast<std::size_t>(l)])]);
      if (m.layer(l).is_conv()) {
        partials[static_cast<std::size_t>(l)] = Mat<S>::Zero(tgt.size(), num_chunks_n);
        for (Index i = 0; i < num_chunks_n; ++i) tasks.push_back({l, i});
      } else {
        const Index rows = linear_source(l).rows();
        grams[static_cast<std::size_t>(l)] = Mat<S>::Zero(rows, rows);
        for (Index i = 0; i < (rows + detail::kRowTile - 1) / detail::kRowTile; ++i) tasks.push_back({l, i});
      }
    }
    parallel_for_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i) {
      const Task& task = tasks[static_cast<std::size_t>(i)];
      if (m.layer(task.layer).is_conv()) {
        conv_partial(task.layer, chunk_at(m.n, m.chunk, task.index),
                     partials[static_cast<std::size_t>(task.layer)].col(task.index).data());
      } else {
        const Mat<S>& x = linear_source(task.layer);
        detail::gram_tile(x.data(), x.rows(), m.n, linear_alpha, task.index,
                          grams[static_cast<std::size_t>(task.layer)].data());
      }
    });
    for (Index l = m.first; l < m.depth; ++l) {
      if (!has_factors(l)) continue;
      Mat<S>& tgt = target(factors[static_cast<std::size_t>(index_of[static_cast<std::size_t>(l)])]);
      if (m.layer(l).is_conv()) {
        const Mat<S>& partial = partials[static_cast<std::size_t>(l)];
        Mat<S> sum = Mat<S>::Zero(tgt.rows(), tgt.cols());
        for (Index k = 0; k < partial.cols(); ++k) {
          sum += CMatMap<S>(partial.col(k).data(), tgt.rows(), tgt.cols());
        }
        tgt += conv_alpha(l) * sum;
      } else {
        tgt.topLeftCorner(grams[static_cast<std::size_t>(l)].rows(), grams[static_cast<std::size_t>(l)].cols()) +=
            grams[static_cast<std::size_t>(l)];
      }
    }
  };

  const S inv_n = m.inv_total();
  // Input factors A: Linear (1/N) X Xᵀ plus the bias row; Conv2d (1/(N·T)) Σ P̄ᵀP̄.
  gram_phase([&](Index l) -> const Mat<S>& { return m.x(l); },
             [&](Index l, const ChunkRange& r, S* partial) {
               m.layer(l).kfac_a_partial(ccols(m.x(l), r), partial);
             },
             [](KfacFactors<S>& f) -> Mat<S>& { return f.a; }, inv_n,
             [&](Index l) { return inv_n / static_cast<S>(m.layer(l).positions()); });
  for (KfacFactors<S>& f : factors) {
    if (m.layer(f.layer).is_conv() || !f.augmented) continue;
    const Mat<S>& x = m.x(f.layer);
    const Index in = x.rows();
    Vector<S> mean = Vector<S>::Zero(in);
    for (Index s = 0; s < m.n; ++s) mean += x.col(s);
    mean *= inv_n;
    f.a.block(0, in, in, 1) = mean;
    f.a.block(in, 0, 1, in) = mean.transpose();
    f.a(in, in) = S(1);
  }

  // Output-gradient factors S: one adjoint pass per round.
  auto s_round = [&](std::vector<Mat<S>>& buf, S alpha) {
    if (norm_diagonal) {
      m.reduce(m.pairs_with(buf), ReduceMode::kSquared, alpha, normalization_diagonal, is_norm);
    }
    gram_phase([&](Index l) -> const Mat<S>& { return buf[static_cast<std::size_t>(l + 1)]; },
               [&](Index l, const ChunkRange& r, S* partial) {
                 m.layer(l).kfac_s_partial(ccols(buf[static_cast<std::size_t>(l + 1)], r), partial);
               },
               [](KfacFactors<S>& f) -> Mat<S>& { return f.s; }, alpha, [alpha](Index) { return alpha; });
  };
  if (type == KfacType::kEmpirical) {
    m.ensure_backward();
    s_round(m.delta, inv_n);
  } else {
    m.ensure_work();
    Mat<S> sampled;
    const Index rounds = type == KfacType::kType2 ? m.c : mc_samples;
    if (type == KfacType::kMc) m.draw_residuals(mc_samples, seed, sampled);
    for (Index k = 0; k < rounds; ++k) {
      const auto set_top = [&](const ChunkRange& r) {
        if (type == KfacType::kType2) {
          m.factor_column(k, r, cols(m.j(m.depth), r));
        } else {
          auto top = cols(m.j(m.depth), r);
          for (Index i = 0; i < r.size(); ++i) top.col(i) = sampled.col((r.begin + i) * mc_samples + k);
        }
      };
      if (m.staged()) {
        m.staged_adjoint(m.adj, nullptr, set_top);
      } else {
        m.for_chunks([&](const ChunkRange& r) {
          set_top(r);
          m.adjoint_chunk(r, m.adj, nullptr);
        });
      }
      s_round(m.adj, type == KfacType::kType2 ? inv_n : inv_n / static_cast<S>(mc_samples));
    }
  }
  if (norm_diagonal) m.sum_over_ranks(normalization_diagonal, m.p);
  if (m.comm != nullptr) {
    for (KfacFactors<S>& f : factors) {
      m.sum_over_ranks(f.a.data(), f.a.size());
      m.sum_over_ranks(f.s.data(), f.s.size());
      // The bias entry is 1, not a mean over samples: every rank set it.
      if (f.augmented && !m.layer(f.layer).is_conv()) f.a(f.a.rows() - 1, f.a.cols() - 1) = S(1);
    }
  }
  return factors;
}

template <class S>
void BoundBatch<S>::jvp(ConstVectorRef<S> v, MatrixRef<S> out) {
  Impl& m = *impl_;
  check_vector<S>(v.size(), m.p, "JVP direction");
  if (out.rows() != m.c || out.cols() != m.n) {
    throw Error(fmt::format("JVP output is {}x{}; expected {}x{} (outputs x samples)", out.rows(),
                            out.cols(), m.c, m.n));
  }
  if (m.first == m.depth) {
    out.setZero();
    return;
  }
  m.ensure_work();
  const typename Impl::PackedTangents packed(m, v.data());
  const auto copy = [&](const ChunkRange& r) {
    out.middleCols(r.begin, r.size()) = ccols(m.t(m.depth), r);
  };
  if (m.staged()) {
    m.staged_tangent(v.data(), copy);
    return;
  }
  m.for_chunks([&](const ChunkRange& r) {
    m.tangent_chunk(r, v.data());
    copy(r);
  });
}

template <class S>
void BoundBatch<S>::vjp(ConstMatrixRef<S> u, VectorRef<S> out) {
  Impl& m = *impl_;
  check_vector<S>(out.size(), m.p, "VJP output");
  if (u.rows() != m.c || u.cols() != m.n) {
    throw Error(fmt::format("VJP cotangent is {}x{}; expected {}x{} (outputs x samples)", u.rows(),
                            u.cols(), m.c, m.n));
  }
  if (m.first == m.depth) return;  // no parameters
  m.ensure_work();
  if (m.staged()) {
    m.staged_adjoint(m.adj, nullptr, [&](const ChunkRange& r) {
      cols(m.j(m.depth), r) = u.middleCols(r.begin, r.size());
    });
  } else {
    m.for_chunks([&](const ChunkRange& r) {
      cols(m.j(m.depth), r) = u.middleCols(r.begin, r.size());
      m.adjoint_chunk(r, m.adj, nullptr);
    });
  }
  m.reduce_into(m.pairs_with(m.adj), ReduceMode::kSum, S(1), out.data());
  m.sum_over_ranks(out.data(), m.p);
}

template <class S>
void BoundBatch<S>::backpropagate(ConstMatrixRef<S> u) {
  Impl& m = *impl_;
  if (u.rows() != m.c || u.cols() != m.n) {
    throw Error(fmt::format("backpropagated cotangent is {}x{}; expected {}x{} (outputs x samples)",
                            u.rows(), u.cols(), m.c, m.n));
  }
  m.refuse_coupled("per-sample backpropagation", "the adjoints of one sample's outputs reach "
                                                 "every sample");
  if (m.first == m.depth) return;
  m.ensure_work();
  m.for_chunks([&](const ChunkRange& r) {
    cols(m.j(m.depth), r) = u.middleCols(r.begin, r.size());
    m.adjoint_chunk(r, m.adj, nullptr);
  });
}

template <class S>
void BoundBatch<S>::per_sample_vjp(ConstMatrixRef<S> u, MatrixRef<S> out) {
  Impl& m = *impl_;
  if (out.rows() != m.p || out.cols() != m.n) {
    throw Error(fmt::format("per-sample VJP output is {}x{}; expected {}x{} (parameters x samples)",
                            out.rows(), out.cols(), m.p, m.n));
  }
  m.refuse_coupled("per-sample VJPs", "one sample's outputs depend on the parameters through "
                                      "every sample");
  backpropagate(u);
  if (m.first == m.depth) return;
  const Index ld = out.outerStride();
  S* base = out.data();
  m.for_chunks([&](const ChunkRange& r) {
    for (Index l = m.first; l < m.depth; ++l) {
      if (!m.has_params(l)) continue;
      m.layer(l).per_sample(ccols(m.j(l + 1), r), ccols(m.x(l), r), base + r.begin * ld + m.layer(l).offset(), ld);
    }
  });
}

template <class S>
const Matrix<S>& BoundBatch<S>::output_adjoints(Index layer) const {
  const Impl& m = *impl_;
  if (layer < m.first || layer >= m.depth || m.adj.empty() || !m.is_live(layer + 1)) {
    throw Error(fmt::format("output adjoints of layer {}: available after backpropagate() for layers "
                            "{} to {} whose output depends on parameters",
                            layer, m.first, m.depth - 1));
  }
  return m.adj[static_cast<std::size_t>(layer + 1)];
}

template <class S>
const Matrix<S>& BoundBatch<S>::layer_input(Index layer) const {
  const Impl& m = *impl_;
  if (layer < 0 || layer > m.depth) {
    throw Error(fmt::format("layer input {}: the network has layers 0 to {}", layer, m.depth - 1));
  }
  if (layer == m.depth) return m.act[static_cast<std::size_t>(layer)];
  return m.act[static_cast<std::size_t>(m.source[static_cast<std::size_t>(layer)])];
}

template <class S>
void BoundBatch<S>::loss_hessian_factor_column(Index k, MatrixRef<S> out) const {
  const Impl& m = *impl_;
  if (k < 0 || k >= m.c || out.rows() != m.c || out.cols() != m.n) {
    throw Error(fmt::format("loss Hessian factor column {} into {}x{}: expected a column in [0, {}) "
                            "and a {}x{} output",
                            k, out.rows(), out.cols(), m.c, m.c, m.n));
  }
  m.for_chunks([&](const ChunkRange& r) {
    Mat<S> column(m.c, r.size());
    m.factor_column(k, r, MatMap<S>(column.data(), m.c, r.size()));
    out.middleCols(r.begin, r.size()) = column;
  });
}

template <class S>
void BoundBatch<S>::update_running_statistics(Network& network) const {
  const Impl& m = *impl_;
  if (m.barriers.empty()) return;
  std::vector<double> values = network.buffer_values();
  for (Index b : m.barriers) {
    const Layer<S>& lay = *m.layers[static_cast<std::size_t>(b)];
    const Vector<S>& mean = *lay.batch_mean();
    const Vector<S>& variance = *lay.batch_variance();
    const double count = static_cast<double>(m.total) *
                         static_cast<double>(lay.in_size() / mean.size());  // M per channel
    const double momentum = m.net.layers()[static_cast<std::size_t>(b)].momentum;
    for (const BufferInfo& info : network.buffers()) {
      if (info.layer != b) continue;
      double* value = values.data() + info.offset;
      if (info.name.ends_with(".running_mean")) {
        for (Index c = 0; c < info.size; ++c) {
          value[c] = (1 - momentum) * value[c] + momentum * static_cast<double>(mean[c]);
        }
      } else if (info.name.ends_with(".running_var")) {
        for (Index c = 0; c < info.size; ++c) {
          const double unbiased = static_cast<double>(variance[c]) * count / (count - 1);
          value[c] = (1 - momentum) * value[c] + momentum * unbiased;
        }
      } else {
        value[0] += 1;  // num_batches_tracked
      }
    }
  }
  network.set_buffer_values(std::move(values));
}

const char* gemm_kernel_name() { return kernels::gemm_kernel_name(); }

template class BoundBatch<float>;
template class BoundBatch<double>;

// ---- Network::forward (declared in network.hpp; needs the layers) ----------------------

template <class S>
Matrix<S> Network::forward(ConstVectorRef<S> params, ConstMatrixRef<S> inputs) const {
  if (params.size() != num_parameters_) {
    throw Error(fmt::format("parameter vector has {} entries; the network '{}' has {}",
                            params.size(), spec(), num_parameters_));
  }
  if (inputs.rows() != num_inputs()) {
    throw Error(fmt::format("inputs have {} features per sample; the network expects {} (shape {})",
                            inputs.rows(), num_inputs(), input_shape().str()));
  }
  const auto layers = detail::make_layers<S>(*this);
  const Index n = inputs.cols();
  Matrix<S> outputs(num_outputs(), n);
  const Vector<S> theta = params;
  if (!sequential_) {
    // Every value of the chunk is kept: a residual block reads its input again at its end.
    parallel_for_chunks(n, chunk_size_for<S>(n, *this), [&](const ChunkRange& r) {
      std::vector<Mat<S>> values(shapes_.size());
      values[0] = inputs.middleCols(r.begin, r.size());
      for (std::size_t l = 0; l < layers.size(); ++l) {
        const std::vector<Index>& in = inputs_[l];
        const Mat<S>& x = values[static_cast<std::size_t>(in.front())];
        Mat<S>& y = values[l + 1];
        if (layers_[l].kind == LayerKind::kAdd) {
          y = x + values[static_cast<std::size_t>(in[1])];
          continue;
        }
        y.resize(layers[l]->out_size(), r.size());
        layers[l]->forward(theta.data(), CMatMap<S>(x.data(), x.rows(), x.cols()),
                           MatMap<S>(y.data(), y.rows(), y.cols()));
      }
      outputs.middleCols(r.begin, r.size()) = values.back();
    });
    return outputs;
  }
  parallel_for_chunks(n, chunk_size_for<S>(n, *this), [&](const ChunkRange& r) {
    Mat<S> x = inputs.middleCols(r.begin, r.size());
    Mat<S> y;
    for (const auto& layer : layers) {
      y.resize(layer->out_size(), r.size());
      layer->forward(theta.data(), CMatMap<S>(x.data(), x.rows(), x.cols()), MatMap<S>(y.data(), y.rows(), y.cols()));
      std::swap(x, y);
    }
    outputs.middleCols(r.begin, r.size()) = x;
  });
  return outputs;
}

template Matrix<float> Network::forward<float>(ConstVectorRef<float>, ConstMatrixRef<float>) const;
template Matrix<double> Network::forward<double>(ConstVectorRef<double>, ConstMatrixRef<double>) const;

}  // namespace quadra::nn
