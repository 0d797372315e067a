#pragma once
/// \file
/// Vocabulary types that cross the plugin boundary: indices and non-owning Eigen views.
/// Views are over dynamic-size types only (fixed-size types carry alignment requirements that
/// would make the ABI depend on flags; see Eigen's "passing by value" pitfalls).

#include <Eigen/Core>

namespace quadra {
inline namespace abi_v4 {

using Index = Eigen::Index;

template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using VectorRef = Eigen::Ref<Vector<Scalar>>;
template <class Scalar>
using ConstVectorRef = Eigen::Ref<const Vector<Scalar>>;
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;
template <class Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;

}  // namespace abi_v4
}  // namespace quadra
