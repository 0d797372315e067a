#pragma once
/// \file
/// Checkpoint state: solvers and damping strategies save a flat vector of doubles whose first
/// entry is their own layout version (see save_state() in solver.hpp and damping.hpp).
/// StateWriter lays one out; StateReader reads it back front to back and refuses a malformed
/// one with a complete message: the component, the entry index, what was found and what was
/// expected, e.g.
///
///   kfac: checkpoint state entry 7 (layer 0 input size) is 3.5; expected a non-negative integer
///   levenberg-marquardt: checkpoint state has layout version 2; expected 1 (layout: {version,
///   lambda})
///
///   Status load_state(const std::vector<double>& state) override {
///     quadra::StateReader reader("my-damping", state, kLayoutVersion, "{version, lambda}");
///     double lambda = 0.0;
///     reader.real("lambda", lambda, quadra::StateRange::kPositive);
///     if (Status s = reader.finish(); !s.is_ok()) return s;  // the first refusal, if any
///     lambda_ = lambda;  // commit only a state that was read completely
///     return Status::ok();
///   }
///
/// Counts (sizes, steps, flags) are stored as doubles, which hold every integer up to 2^53
/// exactly. Vectors are stored as their entries only (their size usually comes from a count
/// shared by several of them); matrices as rows, columns and the entries in column-major order.
/// Nothing here throws: load_state() must not.

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "quadra/sdk/format.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {

/// Lays out a checkpoint state in `out`, which it clears and starts with the layout version.
class StateWriter {
 public:
  StateWriter(std::vector<double>& out, int layout_version) : out_(out) {
    out_.clear();
    out_.push_back(static_cast<double>(layout_version));
  }

  StateWriter& real(double value) {
    out_.push_back(value);
    return *this;
  }
  /// A non-negative integer below 2^53 (sizes, steps, flags).
  template <class Int>
  StateWriter& count(Int value) {
    static_assert(std::is_integral_v<Int>, "count() stores integers");
    out_.push_back(static_cast<double>(value));
    return *this;
  }
  /// The entries only; write the size as a count where the layout needs it.
  StateWriter& vector(ConstVectorRef<double> v) {
    out_.insert(out_.end(), v.data(), v.data() + v.size());
    return *this;
  }
  /// Rows, columns, then the entries in column-major order.
  StateWriter& matrix(const Matrix<double>& m) {
    count(m.rows());
    count(m.cols());
    out_.insert(out_.end(), m.data(), m.data() + m.size());
    return *this;
  }

 private:
  std::vector<double>& out_;
};

/// Which values a real, vector or matrix entry may hold.
enum class StateRange {
  kAny,          ///< anything, NaN and infinities included
  kFinite,       ///< a finite number
  kNonNegative,  ///< a finite number >= 0
  kPositive,     ///< a finite number > 0
};

/// Reads a checkpoint state front to back. Each read returns a Status; the first refusal sticks,
/// so subsequent reads (and finish()) return it again and leave their outputs untouched, and a
/// caller may read everything and check finish() alone. Outputs are written only by successful
/// reads; commit them to the component only after finish() succeeded.
class StateReader {
 public:
  /// `component` prefixes every message; `layout` is a one-line description of the layout,
  /// quoted in messages about the state's size or version, e.g. "{version, lambda}". The
  /// reader refers to `state`, which must outlive it.
  StateReader(std::string component, const std::vector<double>& state, int layout_version,
              std::string layout)
      : component_(std::move(component)), layout_(std::move(layout)), state_(state) {
    if (state_.empty()) {
      first_refusal_ = refuse("checkpoint state is empty; expected layout version " +
                              std::to_string(layout_version) + " first" + layout_note());
    } else if (state_[0] != static_cast<double>(layout_version)) {
      first_refusal_ = refuse("checkpoint state has layout version " + format_number(state_[0]) +
                              "; expected " + std::to_string(layout_version) + layout_note());
    } else {
      at_ = 1;
    }
  }

  /// A non-negative integer no larger than `at_most` (and than 2^53, what a double holds
  /// exactly), e.g. a size, a step counter or a 0/1 flag.
  template <class Int>
  Status count(std::string_view what, Int& out, Int at_most = std::numeric_limits<Int>::max()) {
    static_assert(std::is_integral_v<Int>, "count() reads integers");
    if (Status s = need(1, what); !s.is_ok()) return s;
    constexpr double kExactIntegers = 9007199254740992.0;  // 2^53
    const double value = state_[at_];
    const double limit = std::fmin(static_cast<double>(at_most), kExactIntegers);
    if (!(value >= 0.0) || !(value <= limit) || value != std::floor(value)) {
      const std::string expected =
          static_cast<double>(at_most) >= kExactIntegers
              ? std::string("a non-negative integer")
              : "an integer from 0 to " + std::to_string(static_cast<std::uint64_t>(at_most));
      return stick(entry_refusal(at_, what, value, expected));
    }
    out = static_cast<Int>(value);
    ++at_;
    return Status::ok();
  }

  Status real(std::string_view what, double& out, StateRange range = StateRange::kFinite) {
    if (Status s = need(1, what); !s.is_ok()) return s;
    if (!admits(range, state_[at_])) {
      return stick(entry_refusal(at_, what, state_[at_], range_text(range)));
    }
    out = state_[at_];
    ++at_;
    return Status::ok();
  }

  /// `size` entries, no size stored before them.
  Status vector(std::string_view what, Index size, Vector<double>& out,
                StateRange range = StateRange::kFinite) {
    assert(size >= 0);
    if (Status s = need(size, what); !s.is_ok()) return s;
    for (Index i = 0; i < size; ++i) {
      const std::size_t entry = at_ + static_cast<std::size_t>(i);
      if (!admits(range, state_[entry])) {
        return stick(entry_refusal(entry,
                                   "element " + std::to_string(i) + " of the " + std::string(what),
                                   state_[entry], range_text(range)));
      }
    }
    out = Eigen::Map<const Vector<double>>(state_.data() + at_, size);
    at_ += static_cast<std::size_t>(size);
    return Status::ok();
  }

  /// Stored rows and columns that must equal `rows` and `cols`, then the entries column-major.
  Status matrix(std::string_view what, Index rows, Index cols, Matrix<double>& out,
                StateRange range = StateRange::kFinite) {
    assert(rows >= 0 && cols >= 0);
    if (Status s = need(2, "shape of the " + std::string(what)); !s.is_ok()) return s;
    const double stored_rows = state_[at_], stored_cols = state_[at_ + 1];
    if (stored_rows != static_cast<double>(rows) || stored_cols != static_cast<double>(cols)) {
      return stick(refuse("checkpoint state entries " + std::to_string(at_) + " and " +
                          std::to_string(at_ + 1) + " (shape of the " + std::string(what) +
                          ") are " + format_number(stored_rows) + " x " +
                          format_number(stored_cols) + "; expected " + std::to_string(rows) +
                          " x " + std::to_string(cols)));
    }
    const std::size_t first = at_ + 2;
    // Shapes come from the state itself (a layer's sizes), so rows * cols may not fit an Index;
    // no state that long exists.
    if (rows > 0 && cols > std::numeric_limits<Index>::max() / rows) {
      return stick(refuse("checkpoint state ends after " + entries(state_.size()) + "; expected " +
                          std::to_string(rows) + " x " + std::to_string(cols) +
                          " entries from entry " + std::to_string(first) + " for the " +
                          std::string(what) + layout_note()));
    }
    const Index size = rows * cols;
    if (state_.size() - first < static_cast<std::size_t>(size)) {
      at_ = first;  // so that the message names the entries of the matrix itself
      return need(size, what);
    }
    for (Index k = 0; k < size; ++k) {
      const std::size_t entry = first + static_cast<std::size_t>(k);
      if (!admits(range, state_[entry])) {
        return stick(entry_refusal(entry,
                                   "element (" + std::to_string(k % rows) + ", " +
                                       std::to_string(k / rows) + ") of the " + std::string(what),
                                   state_[entry], range_text(range)));
      }
    }
    out = Eigen::Map<const Matrix<double>>(state_.data() + first, rows, cols);
    at_ = first + static_cast<std::size_t>(size);
    return Status::ok();
  }

  /// The first refusal, or one if entries are left over; ok if the state was read exactly.
  Status finish() {
    if (!first_refusal_.is_ok()) return first_refusal_;
    if (at_ != state_.size()) {
      return stick(refuse("checkpoint state has " + entries(state_.size()) + "; expected " +
                          std::to_string(at_) + layout_note()));
    }
    return Status::ok();
  }

  /// Index of the next entry to read.
  [[nodiscard]] std::size_t position() const { return at_; }

  /// A refusal in the reader's words for what it cannot check itself (bounds other than its
  /// ranges, relations between entries): "<component>: checkpoint state entry <entry> (<what>)
  /// is <found>; expected <expected>". It sticks like the reader's own refusals.
  Status refuse_entry(std::size_t entry, std::string_view what, double found,
                      std::string_view expected) {
    return stick(entry_refusal(entry, what, found, expected));
  }

 private:
  static bool admits(StateRange range, double value) {
    switch (range) {
      case StateRange::kAny:
        return true;
      case StateRange::kFinite:
        return std::isfinite(value);
      case StateRange::kNonNegative:
        return std::isfinite(value) && value >= 0.0;
      case StateRange::kPositive:
        return std::isfinite(value) && value > 0.0;
    }
    return false;
  }
  static const char* range_text(StateRange range) {
    switch (range) {
      case StateRange::kAny:
        return "any number";
      case StateRange::kFinite:
        return "a finite number";
      case StateRange::kNonNegative:
        return "a finite number >= 0";
      case StateRange::kPositive:
        return "a finite number > 0";
    }
    return "?";
  }
  static std::string entries(std::size_t n) {
    return std::to_string(n) + (n == 1 ? " entry" : " entries");
  }

  std::string layout_note() const { return " (layout: " + layout_ + ")"; }
  Status refuse(const std::string& message) const {
    return Status::invalid_argument(component_ + ": " + message);
  }
  Status entry_refusal(std::size_t entry, std::string_view what, double found,
                       std::string_view expected) const {
    return refuse("checkpoint state entry " + std::to_string(entry) + " (" + std::string(what) +
                  ") is " + format_number(found) + "; expected " + std::string(expected));
  }
  Status stick(Status status) {
    if (first_refusal_.is_ok()) first_refusal_ = status;
    return status;
  }
  /// `n` more entries for `what`, or the sticky refusal.
  Status need(Index n, std::string_view what) {
    if (!first_refusal_.is_ok()) return first_refusal_;
    const std::size_t left = state_.size() - at_;
    if (static_cast<std::size_t>(n) > left) {
      const std::string wanted = n == 1 ? "entry " + std::to_string(at_)
                                        : "entries " + std::to_string(at_) + ".." +
                                              std::to_string(at_ + static_cast<std::size_t>(n) - 1);
      return stick(refuse("checkpoint state ends after " + entries(state_.size()) + "; expected " +
                          wanted + " for the " + std::string(what) + layout_note()));
    }
    return Status::ok();
  }

  std::string component_;
  std::string layout_;
  const std::vector<double>& state_;
  std::size_t at_ = 0;
  Status first_refusal_;
};

}  // namespace quadra
