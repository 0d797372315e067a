#pragma once
/// \file
/// Seeded training augmentation of image batches (`[data] augment`): a random crop after
/// padding by P pixels, and a random horizontal flip.
///
/// Syntax: "none", or a comma-separated list of "crop:P" (P >= 1) and "flip", each at most once,
/// e.g. "crop:4,flip" (the usual CIFAR augmentation).
///
/// Per sample of shape {C, H, W}: the image is padded by P pixels of value 0 on every side (0 in
/// the network's input space, i.e. after normalisation: the training mean under standardize-
/// channel), an H x W window at a uniform offset in [0, 2P] x [0, 2P] is cut out, and then,
/// with probability 1/2, mirrored left to right. Every channel gets the same crop and flip.
///
/// Randomness: sample i of a draw is augmented by a stream seeded from (run seed, step, the
/// draw's stream key, i) alone, never from a running generator state. The same step therefore
/// augments the same way however the run got there (a resumed run draws what an uninterrupted
/// one draws) and whatever the number of threads. Augmentation applies to the training draws
/// of a step only; evaluation, validation and test sets are never augmented.

#include <cstdint>
#include <quadra/data/dataset.hpp>
#include <quadra/data/sampler.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quadra::data {

struct Augmentation {
  std::int64_t crop_padding = 0;  ///< P; 0: no crop
  bool flip = false;              ///< random horizontal flip
  [[nodiscard]] bool enabled() const noexcept { return crop_padding > 0 || flip; }
};

/// Parses the syntax above; throws quadra::Error naming the text, the part found and what is
/// expected.
Augmentation parse_augmentation(std::string_view text);
/// "none", "crop:4", "flip" or "crop:4,flip".
std::string to_string(const Augmentation& augmentation);

/// Throws quadra::Error (naming `source`) unless `data` holds images of shape {C, H, W} when
/// `augmentation` is enabled.
void check_augmentation(const Augmentation& augmentation, const Dataset& data,
                        const std::string& source);

/// The seed of one sample's stream: (run seed, step, stream key, sample index).
std::uint64_t augmentation_seed(std::uint64_t seed, std::int64_t step, std::uint64_t stream,
                                std::int64_t sample) noexcept;

/// Crops and flips one image {C, H, W} from `in` to `out` (distinct buffers of C*H*W floats)
/// with the stream seeded by `sample_seed`.
void augment_image(const Augmentation& augmentation, std::span<const std::int64_t> shape,
                   const float* in, float* out, std::uint64_t sample_seed) noexcept;

/// The stream key of draw `d` of a step: its primary role (the first of gradient, directions,
/// estimate, acceptance it serves), or kNumBatchRoles + d for a draw serving none, as the
/// sampler keys its permutations.
std::uint64_t augmentation_stream(const StepBatches& draws, int d) noexcept;

/// The samples `view` gathered for the whole of `draw` (draw `d` of `draws`, from `data`),
/// augmented into `out`: sample k gets the stream of (seed, draws.step(), the draw's stream
/// key, draw.sample(k)). Returns `view` with its features pointing into `out`.
BatchView augment_draw(const Augmentation& augmentation, const Dataset& data,
                       const StepBatches& draws, int d, const BatchView& view, std::uint64_t seed,
                       std::vector<float>& out);

}  // namespace quadra::data
