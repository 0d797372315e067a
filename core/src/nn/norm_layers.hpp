#pragma once
// Normalization layers: BatchNorm with running statistics, LayerNorm and GroupNorm map one
// sample on its own (running statistics are fixed buffers), so every engine quantity stays a sum
// over samples; BatchNorm with batch statistics couples the samples and works at the engine's
// barriers (Layer::batch_forward and the like). See norm_layers.cpp for the formulas.

#include <memory>

#include <quadra/nn/network.hpp>

#include "layers.hpp"

namespace quadra::nn::detail {

/// The layer for token `index` of `network`, a BatchNorm, LayerNorm or GroupNorm spec. BatchNorm
/// takes its running statistics from network.buffer_values() as they are now.
template <class S>
std::unique_ptr<Layer<S>> make_norm_layer(const Network& network, Index index);

}  // namespace quadra::nn::detail
