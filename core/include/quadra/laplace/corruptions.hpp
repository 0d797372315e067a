#pragma once
/// \file
/// Distribution shift generated in-process: seeded corruptions of images (after Hendrycks &
/// Dietterich 2019, scaled to small grey-scale images such as Fashion-MNIST's 28 x 28) at five
/// severities, and clearly out-of-distribution image sets for OOD detection.
///
/// Images are the rows of a data::Dataset with sample_shape {C, H, W} and raw intensities in
/// [0, 1] (apply the normalisation afterwards). Every corruption clips its result to [0, 1].
///   gaussian-noise  x + sigma z, z ~ N(0, 1) per pixel (and channel); sigma = 0.08, 0.12,
///                   0.18, 0.26, 0.38
///   rotation        rotated about the image centre ((W-1)/2, (H-1)/2) by +-angle (sign drawn
///                   per image; + is counter-clockwise as displayed, row 0 at the top), all
///                   channels alike, bilinear interpolation, zero outside; angle = 15, 30, 45,
///                   60, 90 degrees (90 maps the grid of a square image exactly onto itself)
///   contrast        (x - m) c + m with m the image's mean over all its channels and pixels;
///                   c = 0.4, 0.3, 0.2, 0.1, 0.05
///   blur            separable Gaussian blur per channel, kernel radius ceil(3 sigma), weights
///                   normalised, edges clamped; sigma = 0.5, 0.8, 1.1, 1.5, 2.0 px
/// Out-of-distribution sets:
///   inverted        1 - x (negatives of the images)
///   uniform-noise   every pixel U[0, 1]
///
/// Determinism: image i's random numbers come from a stream seeded by (seed, corruption,
/// severity, i), with i the image's index in the given set, so results are the same for any
/// thread count, image i's result depends on image i alone, and a prefix of a set is corrupted
/// exactly as in the whole set. A reordered subset gets the streams of its new positions.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <quadra/data/dataset.hpp>

namespace quadra::laplace {

enum class Corruption { kGaussianNoise, kRotation, kContrast, kBlur };
enum class OodKind { kInverted, kUniformNoise };

/// "gaussian-noise", "rotation", "contrast", "blur".
[[nodiscard]] const char* to_string(Corruption corruption);
/// "inverted", "uniform-noise".
[[nodiscard]] const char* to_string(OodKind kind);
/// Parse the names above; throw quadra::Error naming the text and listing the valid names.
[[nodiscard]] Corruption parse_corruption(std::string_view text);
[[nodiscard]] OodKind parse_ood_kind(std::string_view text);
/// Every corruption, in the order above.
[[nodiscard]] std::vector<Corruption> all_corruptions();

inline constexpr int kMaxSeverity = 5;

/// A copy of `images` with every image corrupted; named "<images.name>+<corruption>-<severity>".
/// Throws quadra::Error when severity is outside [1, 5] or the samples are not images
/// ({C, H, W} shape), naming the value and what was expected, and as Dataset::validate() does
/// for an inconsistent data set.
[[nodiscard]] data::Dataset corrupt(const data::Dataset& images, Corruption corruption, int severity,
                                    std::uint64_t seed);

/// An out-of-distribution set of the same size, shape and labels as `images` (labels are kept
/// only so that the set is a valid Dataset; they carry no meaning); named "<name>+<kind>".
/// uniform-noise draws image i from a stream seeded by (seed, kind, i); inverted ignores the
/// seed. Throws quadra::Error as corrupt() does for samples that are not images.
[[nodiscard]] data::Dataset out_of_distribution(const data::Dataset& images, OodKind kind,
                                                std::uint64_t seed);

}  // namespace quadra::laplace
