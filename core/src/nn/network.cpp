// Layer-spec parsing, shape inference, the parameter layout and the memory a model needs. See
// quadra/nn/network.hpp.

#include <quadra/nn/network.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>
#include <span>
#include <system_error>

#include <fmt/format.h>

#include <quadra/error.hpp>

#include "rng.hpp"

namespace quadra::nn {
namespace {

constexpr Index kMaxIndex = std::numeric_limits<Index>::max();

// Sizes come from user text and files; every product and sum of them is checked, so that a
// huge spec is reported rather than wrapped around into a small (or negative) allocation.
bool mul_overflows(Index a, Index b, Index& out) { return __builtin_mul_overflow(a, b, &out); }
bool add_overflows(Index a, Index b, Index& out) { return __builtin_add_overflow(a, b, &out); }

/// Product of `dims`, or -1 when it exceeds the int64 range.
Index checked_product(const std::vector<Index>& dims) {
  Index n = 1;
  for (Index d : dims) {
    if (mul_overflows(n, d, n)) return -1;
  }
  return n;
}

std::string trim(std::string_view s) {
  std::size_t b = 0;
  std::size_t e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b])) != 0) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])) != 0) --e;
  return std::string(s.substr(b, e - b));
}

// ---- the layer kinds ---------------------------------------------------------------------------

/// What an argument accepts; its messages say so.
enum class ArgType {
  kCount,  ///< an integer >= 1 (features, channels, kernel, stride)
  kSize,   ///< an integer >= 0 (padding)
  kBool,   ///< true|false (or 1|0)
  kReal,   ///< a finite number
};

/// How the canonical text (LayerSpec::str) writes an argument.
enum class Print {
  kPositional,    ///< always, by position
  kNamed,         ///< always, as key=value
  kIfNotDefault,  ///< as key=value when it differs from LayerSpec's default
};

/// One argument of a layer kind: where it may appear, what it accepts and which LayerSpec field
/// it sets (exactly one of the three member pointers).
struct Arg {
  const char* label;  ///< in messages about a positional value, e.g. "output channels"
  const char* key;    ///< key of the key=value form, or nullptr (positional only)
  const char* alias;  ///< a second accepted key, or nullptr
  bool positional;    ///< may be given by position (positional arguments come first, in order)
  bool required;
  ArgType type;
  Print print;
  Index LayerSpec::*integer = nullptr;
  bool LayerSpec::*flag = nullptr;
  double LayerSpec::*real = nullptr;
};

class TokenParser;

/// Which arguments a token gave, for defaults that depend on other arguments.
struct Given {
  std::span<const Arg> args;
  std::vector<bool> given;
  [[nodiscard]] bool has(std::string_view key) const {
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (args[i].key != nullptr && key == args[i].key) return given[i];
    }
    return false;
  }
};

/// Everything shape inference knows about one layer; fail() names the layer, its position and
/// the shape it received.
class LayerContext {
 public:
  /// `path`: the layer's module path ("3", "2.branch.0"); `number`: its token number.
  LayerContext(const std::string& path, std::size_t number, const LayerSpec& layer,
               const TensorShape& input)
      : path_(path), number_(number), spec_(layer), in_(input) {}
  [[nodiscard]] const LayerSpec& spec() const { return spec_; }
  [[nodiscard]] const TensorShape& in() const { return in_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("layer {} '{}' (token {}) receives shape {}: {}", path_, spec_.str(),
                            number_, in_.str(), what));
  }

 private:
  const std::string& path_;
  std::size_t number_;
  const LayerSpec& spec_;
  const TensorShape& in_;
};

/// One layer kind: its names, help text, arguments and shape rule. Adding a kind is one entry
/// here plus its implementation in layers.cpp.
struct KindEntry {
  LayerKind kind;
  std::string_view name;   ///< canonical name (LayerSpec::str)
  std::string_view alias;  ///< a second accepted name, or empty
  const char* usage;       ///< help text, quoted in every message about the token
  std::span<const Arg> args;
  bool has_parameters;  ///< a weight (and a bias unless bias=false)
  /// Defaults that depend on other arguments and checks across arguments, or nullptr.
  void (*finish)(LayerSpec& spec, const Given& given, const TokenParser& parser);
  /// The output shape; sets `weight` to the weight's PyTorch shape for a kind with parameters
  /// (the bias, when present, has shape {weight[0]}).
  TensorShape (*infer)(const LayerContext& layer, std::vector<Index>& weight);
};

// The argument shapes layer kinds use.
constexpr Arg positional_count(const char* label, Index LayerSpec::*field) {
  return {label, nullptr, nullptr, true, true, ArgType::kCount, Print::kPositional,
          field, nullptr, nullptr};
}
constexpr Arg named_count(const char* key, Index LayerSpec::*field) {
  return {key, key, nullptr, false, false, ArgType::kCount, Print::kNamed, field, nullptr, nullptr};
}
constexpr Arg named_size(const char* key, const char* alias, Index LayerSpec::*field) {
  return {key, key, alias, false, false, ArgType::kSize, Print::kNamed, field, nullptr, nullptr};
}
constexpr Arg named_flag(const char* key, bool LayerSpec::*field) {
  return {key,     key,   nullptr, false, false, ArgType::kBool, Print::kIfNotDefault,
          nullptr, field, nullptr};
}
constexpr Arg optional_real(const char* label, const char* key, const char* alias,
                            double LayerSpec::*field) {
  return {label,   key,     alias, true, false, ArgType::kReal, Print::kPositional,
          nullptr, nullptr, field};
}

constexpr Arg named_real(const char* key, double LayerSpec::*field) {
  return {key,     key,     nullptr, false, false, ArgType::kReal, Print::kIfNotDefault,
          nullptr, nullptr, field};
}

constexpr Arg kLinearArgs[] = {
    positional_count("output features", &LayerSpec::out),
    named_flag("bias", &LayerSpec::bias),
};
constexpr Arg kConvArgs[] = {
    positional_count("output channels", &LayerSpec::out),
    positional_count("kernel size", &LayerSpec::kernel),
    named_count("stride", &LayerSpec::stride),
    named_size("pad", "padding", &LayerSpec::padding),
    named_flag("bias", &LayerSpec::bias),
};
constexpr Arg kPoolArgs[] = {
    positional_count("kernel size", &LayerSpec::kernel),
    named_count("stride", &LayerSpec::stride),
    named_size("pad", "padding", &LayerSpec::padding),
};
constexpr Arg kLeakyReluArgs[] = {
    optional_real("negative slope", "slope", "negative_slope", &LayerSpec::negative_slope),
};
constexpr Arg kDropoutArgs[] = {
    optional_real("drop probability", "p", nullptr, &LayerSpec::dropout),
};

constexpr Arg kBatchNormArgs[] = {
    named_real("eps", &LayerSpec::eps),
    named_real("momentum", &LayerSpec::momentum),
    named_flag("affine", &LayerSpec::affine),
};
constexpr Arg kLayerNormArgs[] = {
    named_real("eps", &LayerSpec::eps),
    named_flag("affine", &LayerSpec::affine),
};
constexpr Arg kGroupNormArgs[] = {
    positional_count("number of groups", &LayerSpec::groups),
    named_real("eps", &LayerSpec::eps),
    named_flag("affine", &LayerSpec::affine),
};

void finish_pool(LayerSpec& spec, const Given& given, const TokenParser& parser);
void finish_dropout(LayerSpec& spec, const Given& given, const TokenParser& parser);
void finish_norm(LayerSpec& spec, const Given& given, const TokenParser& parser);

TensorShape infer_linear(const LayerContext& layer, std::vector<Index>& weight) {
  const TensorShape& in = layer.in();
  if (!in.is_flat()) layer.fail("a linear layer needs a flat input; insert 'flatten' before it");
  weight = {layer.spec().out, in.dims[0]};
  return TensorShape{{layer.spec().out}};
}

/// Conv2d and pools: the PyTorch output size floor((in + 2 pad - kernel) / stride) + 1.
TensorShape infer_spatial(const LayerContext& layer, Index channels) {
  const LayerSpec& spec = layer.spec();
  const TensorShape& in = layer.in();
  if (!in.is_image()) layer.fail("needs a CxHxW input");
  TensorShape out{{channels, 0, 0}};
  for (std::size_t d = 1; d < 3; ++d) {
    Index padded = 0;
    if (mul_overflows(spec.padding, 2, padded) || add_overflows(padded, in.dims[d], padded)) {
      layer.fail(fmt::format("padding {} makes the input larger than {} values per side",
                             spec.padding, kMaxIndex));
    }
    const Index span = padded - spec.kernel;
    if (span < 0) {
      layer.fail(fmt::format("kernel {} with padding {} is larger than the input", spec.kernel,
                             spec.padding));
    }
    out.dims[d] = span / spec.stride + 1;
  }
  return out;
}

TensorShape infer_conv(const LayerContext& layer, std::vector<Index>& weight) {
  const LayerSpec& spec = layer.spec();
  TensorShape out = infer_spatial(layer, spec.out);
  weight = {spec.out, layer.in().dims[0], spec.kernel, spec.kernel};
  return out;
}

TensorShape infer_pool(const LayerContext& layer, std::vector<Index>& /*weight*/) {
  return infer_spatial(layer, layer.in().dims[0]);
}

TensorShape infer_flatten(const LayerContext& layer, std::vector<Index>& /*weight*/) {
  return TensorShape{{layer.in().size()}};
}

TensorShape infer_same(const LayerContext& layer, std::vector<Index>& /*weight*/) {
  return layer.in();
}

TensorShape infer_global_pool(const LayerContext& layer, std::vector<Index>& /*weight*/) {
  if (!layer.in().is_image()) layer.fail("needs a CxHxW input");
  return TensorShape{{layer.in().dims[0], 1, 1}};
}

/// BatchNorm: one γ, β per feature (flat input) or per channel (CxHxW).
TensorShape infer_batchnorm(const LayerContext& layer, std::vector<Index>& weight) {
  if (layer.spec().affine) weight = {layer.in().dims[0]};
  return layer.in();
}

/// LayerNorm: elementwise γ, β of the sample's shape.
TensorShape infer_layernorm(const LayerContext& layer, std::vector<Index>& weight) {
  if (layer.spec().affine) weight = layer.in().dims;
  return layer.in();
}

/// GroupNorm: per-channel γ, β; the channels must split into the groups evenly.
TensorShape infer_groupnorm(const LayerContext& layer, std::vector<Index>& weight) {
  const Index channels = layer.in().dims[0];
  if (channels % layer.spec().groups != 0) {
    layer.fail(fmt::format("its {} channels do not split into {} groups; expected a number of "
                           "groups that divides {}",
                           channels, layer.spec().groups, channels));
  }
  if (layer.spec().affine) weight = {channels};
  return layer.in();
}

constexpr KindEntry kKinds[] = {
    {LayerKind::kLinear, "linear", "", "linear(OUT[,bias=true|false])", kLinearArgs, true, nullptr,
     infer_linear},
    {LayerKind::kConv2d, "conv", "conv2d", "conv(OUT,KERNEL[,stride=S][,pad=P][,bias=true|false])",
     kConvArgs, true, nullptr, infer_conv},
    {LayerKind::kMaxPool2d, "maxpool", "maxpool2d", "maxpool(KERNEL[,stride=S][,pad=P])", kPoolArgs,
     false, finish_pool, infer_pool},
    {LayerKind::kAvgPool2d, "avgpool", "avgpool2d", "avgpool(KERNEL[,stride=S][,pad=P])", kPoolArgs,
     false, finish_pool, infer_pool},
    {LayerKind::kFlatten, "flatten", "", "flatten", {}, false, nullptr, infer_flatten},
    {LayerKind::kRelu, "relu", "", "relu", {}, false, nullptr, infer_same},
    {LayerKind::kLeakyRelu, "leakyrelu", "leaky_relu", "leakyrelu([SLOPE])", kLeakyReluArgs, false,
     nullptr, infer_same},
    {LayerKind::kTanh, "tanh", "", "tanh", {}, false, nullptr, infer_same},
    {LayerKind::kSigmoid, "sigmoid", "", "sigmoid", {}, false, nullptr, infer_same},
    {LayerKind::kGelu, "gelu", "", "gelu", {}, false, nullptr, infer_same},
    {LayerKind::kSoftplus, "softplus", "", "softplus", {}, false, nullptr, infer_same},
    // The join of a residual block: written as residual(...), never as a token of its own; its
    // shape rule (both inputs alike) is Network::append's.
    {LayerKind::kAdd, "add", "", "residual(BRANCH...[,shortcut=SHORTCUT...])", {}, false, nullptr,
     infer_same},
    {LayerKind::kGlobalAvgPool, "globalavgpool", "", "globalavgpool", {}, false, nullptr,
     infer_global_pool},
    {LayerKind::kDropout, "dropout", "", "dropout([P])", kDropoutArgs, false, finish_dropout,
     infer_same},
    {LayerKind::kBatchNorm, "batchnorm", "batchnorm2d", "batchnorm([eps=E][,momentum=M][,affine=true|false])",
     kBatchNormArgs, true, finish_norm, infer_batchnorm},
    {LayerKind::kLayerNorm, "layernorm", "", "layernorm([eps=E][,affine=true|false])", kLayerNormArgs,
     true, finish_norm, infer_layernorm},
    {LayerKind::kGroupNorm, "groupnorm", "", "groupnorm(GROUPS[,eps=E][,affine=true|false])",
     kGroupNormArgs, true, finish_norm, infer_groupnorm},
};

constexpr std::string_view kResidual = "residual";
constexpr const char* kResidualUsage = "residual(BRANCH...[,shortcut=SHORTCUT...])";

constexpr bool in_enum_order() {
  for (std::size_t i = 0; i < std::size(kKinds); ++i) {
    if (static_cast<std::size_t>(kKinds[i].kind) != i) return false;
  }
  return true;
}
static_assert(in_enum_order(), "kKinds has one entry per LayerKind, in the enum's order");

const KindEntry& entry_of(LayerKind kind) {
  const auto i = static_cast<std::size_t>(kind);
  assert(i < std::size(kKinds));
  return kKinds[i];
}

const KindEntry* entry_named(std::string_view name) {
  for (const KindEntry& entry : kKinds) {
    if (name == entry.name || (!entry.alias.empty() && name == entry.alias)) return &entry;
  }
  return nullptr;
}

std::string known_layers() {
  std::vector<std::string_view> names;
  for (const KindEntry& entry : kKinds) {
    if (entry.kind != LayerKind::kAdd) names.push_back(entry.name);
  }
  names.push_back(kResidual);
  return fmt::format("{}", fmt::join(names, ", "));
}

/// Parses one token's arguments and reports errors with the token's position.
class TokenParser {
 public:
  TokenParser(std::string token, std::size_t number, std::size_t offset, const KindEntry& entry)
      : token_(std::move(token)), number_(number), offset_(offset), entry_(entry) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("layer spec: token {} '{}' at character {}: {}; expected {}", number_,
                            token_, offset_ + 1, what, entry_.usage));
  }

  /// `name` is how the message refers to the value: the key the token used, or the label of a
  /// positional argument.
  void set(LayerSpec& spec, const Arg& arg, const std::string& name,
           const std::string& value) const {
    switch (arg.type) {
      case ArgType::kCount:
        spec.*arg.integer = integer(value, name, 1);
        break;
      case ArgType::kSize:
        spec.*arg.integer = integer(value, name, 0);
        break;
      case ArgType::kBool:
        spec.*arg.flag = boolean(value, name);
        break;
      case ArgType::kReal:
        spec.*arg.real = real(value, name);
        break;
    }
  }

 private:
  Index integer(const std::string& value, const std::string& name, Index min) const {
    Index out = 0;
    const char* end = value.data() + value.size();
    const auto [ptr, ec] = std::from_chars(value.data(), end, out);
    if (ec == std::errc::result_out_of_range && ptr == end) {
      fail(fmt::format("{} '{}' is too large; expected an integer from {} to {}", name, value, min,
                       kMaxIndex));
    }
    if (ec != std::errc() || ptr != end || out < min) {
      fail(fmt::format("{} '{}' is not an integer >= {}", name, value, min));
    }
    return out;
  }
  bool boolean(const std::string& value, const std::string& name) const {
    if (value == "true" || value == "1") return true;
    if (value == "false" || value == "0") return false;
    fail(fmt::format("{} '{}' is not true or false", name, value));
  }
  double real(const std::string& value, const std::string& name) const {
    double out = 0;
    const char* end = value.data() + value.size();
    const auto [ptr, ec] = std::from_chars(value.data(), end, out);
    if (ec != std::errc() || ptr != end || !std::isfinite(out)) {
      fail(fmt::format("{} '{}' is not a finite number", name, value));
    }
    return out;
  }

  std::string token_;
  std::size_t number_;
  std::size_t offset_;
  const KindEntry& entry_;
};

void finish_pool(LayerSpec& spec, const Given& given, const TokenParser& parser) {
  if (!given.has("stride")) spec.stride = spec.kernel;
  if (spec.padding > spec.kernel / 2) {
    parser.fail(
        fmt::format("pad {} is more than half the kernel size {}; a pool allows pad 0 to {}",
                    spec.padding, spec.kernel, spec.kernel / 2));
  }
}

void finish_dropout(LayerSpec& spec, const Given& /*given*/, const TokenParser& parser) {
  if (spec.dropout < 0 || spec.dropout > 1) {
    parser.fail(fmt::format("drop probability {} is outside [0, 1]", spec.dropout));
  }
}

/// A module path given as name=: non-empty parts of letters, digits, '_', '-' and ':' joined by
/// '.', as state_dict keys are (ONNX initializer names such as onnx::Conv_7 included).
std::string module_name(const std::string& value, const TokenParser& p) {
  const bool valid_chars = std::all_of(value.begin(), value.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == ':' ||
           c == '.';
  });
  if (value.empty() || !valid_chars || value.front() == '.' || value.back() == '.' ||
      value.find("..") != std::string::npos) {
    p.fail(fmt::format("name '{}' is not a module path (parts of letters, digits, _, - and : "
                       "joined by '.')",
                       value));
  }
  return value;
}

void finish_norm(LayerSpec& spec, const Given& /*given*/, const TokenParser& parser) {
  if (!(spec.eps > 0)) parser.fail(fmt::format("eps {} is not positive; expected eps > 0", spec.eps));
  if (!(spec.momentum >= 0 && spec.momentum <= 1)) {
    parser.fail(fmt::format("momentum {} is outside [0, 1]", spec.momentum));
  }
  spec.bias = spec.affine;  // the affine parameters are a weight γ and a bias β
}

LayerSpec parse_token(const std::string& name, const std::vector<std::string>& args,
                      const TokenParser& p, const KindEntry& entry) {
  LayerSpec spec;
  spec.kind = entry.kind;
  spec.bias = entry.has_parameters;  // kinds without parameters have no bias
  if (entry.args.empty()) {
    if (!args.empty()) p.fail(fmt::format("'{}' takes no arguments", name));
    return spec;
  }
  std::vector<std::size_t> by_position;  // entry.args indices of the positional arguments
  for (std::size_t i = 0; i < entry.args.size(); ++i) {
    if (entry.args[i].positional) by_position.push_back(i);
  }
  for (const std::string& arg : args) {
    if (arg.empty()) p.fail("empty argument");
  }
  const auto num_positional = static_cast<std::size_t>(std::count_if(
      args.begin(), args.end(), [](const std::string& a) { return a.find('=') == a.npos; }));
  if (num_positional > by_position.size()) {
    p.fail(fmt::format("{} positional arguments given, at most {} allowed", num_positional,
                       by_position.size()));
  }
  Given given{entry.args, std::vector<bool>(entry.args.size(), false)};
  std::size_t position = 0;
  bool named_seen = false;
  for (const std::string& arg : args) {
    const auto eq = arg.find('=');
    std::size_t index = 0;
    std::string what;
    std::string value;
    if (eq == std::string::npos) {
      if (named_seen) p.fail(fmt::format("positional argument '{}' after a named one", arg));
      index = by_position[position++];
      what = entry.args[index].label;
      value = arg;
    } else {
      named_seen = true;
      what = trim(arg.substr(0, eq));
      value = trim(arg.substr(eq + 1));
      if (what == "name" && entry.has_parameters) {
        if (!spec.name.empty()) p.fail("name is given twice");
        spec.name = module_name(value, p);
        continue;
      }
      index = entry.args.size();
      for (std::size_t i = 0; i < entry.args.size(); ++i) {
        const Arg& a = entry.args[i];
        if ((a.key != nullptr && what == a.key) || (a.alias != nullptr && what == a.alias)) {
          index = i;
        }
      }
      if (index == entry.args.size()) {
        std::vector<const char*> keys;
        for (const Arg& a : entry.args) {
          if (a.key != nullptr) keys.push_back(a.key);
        }
        p.fail(fmt::format("unknown argument '{}' (valid: {})", what, fmt::join(keys, ", ")));
      }
    }
    // pad=1,padding=2 or leakyrelu(0.1,slope=0.2) would otherwise keep one value silently.
    if (given.given[index]) p.fail(fmt::format("{} is given twice", entry.args[index].label));
    given.given[index] = true;
    p.set(spec, entry.args[index], what, value);
  }
  std::vector<const char*> missing;
  for (std::size_t i = 0; i < entry.args.size(); ++i) {
    if (entry.args[i].required && !given.given[i]) missing.push_back(entry.args[i].label);
  }
  if (!missing.empty()) p.fail(fmt::format("missing the {}", fmt::join(missing, " and the ")));
  if (entry.finish != nullptr) entry.finish(spec, given, p);
  return spec;
}

// ---- memory ------------------------------------------------------------------------------------

constexpr const char* kMemoryVariable = "QUADRA_MEMORY_LIMIT";
constexpr const char* kPhysicalMemory = "physical memory";

const char* scalar_name(std::size_t scalar_bytes) {
  switch (scalar_bytes) {
    case 4:
      return "float32";
    case 8:
      return "float64";
    default:
      return "scalars";
  }
}

/// a·b + c, saturated at the int64 maximum (all non-negative).
Index saturating_fma(Index a, Index b, Index c) {
  Index out = 0;
  if (mul_overflows(a, b, out) || add_overflows(out, c, out)) return kMaxIndex;
  return out;
}

}  // namespace

// ---- shapes and specs --------------------------------------------------------------------------

Index TensorShape::size() const noexcept {
  Index n = 1;
  for (Index d : dims) n *= d;
  return dims.empty() ? 0 : n;
}

std::string TensorShape::str() const { return fmt::format("{}", fmt::join(dims, "x")); }

TensorShape parse_shape(std::string_view text) {
  TensorShape shape;
  std::string s = trim(text);
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t stop = s.find_first_of("x,", start);
    if (stop == std::string::npos) stop = s.size();
    const std::string part = trim(std::string_view(s).substr(start, stop - start));
    Index value = 0;
    const char* end = part.data() + part.size();
    const auto [ptr, ec] = std::from_chars(part.data(), end, value);
    if (part.empty() || ec != std::errc() || ptr != end || value <= 0) {
      throw Error(
          fmt::format("input shape '{}': '{}' is not a positive integer; expected F (e.g. "
                      "784) or CxHxW (e.g. 1x28x28)",
                      text, part));
    }
    shape.dims.push_back(value);
    start = stop + 1;
  }
  if (shape.dims.size() != 1 && shape.dims.size() != 3) {
    throw Error(
        fmt::format("input shape '{}' has {} dimensions; expected F (e.g. 784) or CxHxW "
                    "(e.g. 1x28x28)",
                    text, shape.dims.size()));
  }
  if (checked_product(shape.dims) < 0) {
    throw Error(
        fmt::format("input shape '{}' has more than {} values per sample", text, kMaxIndex));
  }
  return shape;
}

bool LayerSpec::has_parameters() const noexcept {
  return entry_of(kind).has_parameters && (!is_normalization() || affine);
}

bool LayerSpec::is_normalization() const noexcept {
  return kind == LayerKind::kBatchNorm || kind == LayerKind::kLayerNorm ||
         kind == LayerKind::kGroupNorm;
}

std::string LayerSpec::str() const {
  const KindEntry& entry = entry_of(kind);
  if (entry.args.empty()) return std::string(entry.name);
  const LayerSpec defaults;
  std::vector<std::string> parts;
  for (const Arg& arg : entry.args) {
    std::string value;
    bool is_default = false;
    if (arg.integer != nullptr) {
      value = fmt::format("{}", this->*arg.integer);
      is_default = this->*arg.integer == defaults.*arg.integer;
    } else if (arg.flag != nullptr) {
      value = this->*arg.flag ? "true" : "false";
      is_default = this->*arg.flag == defaults.*arg.flag;
    } else {
      value = fmt::format("{}", this->*arg.real);
      is_default = this->*arg.real == defaults.*arg.real;
    }
    switch (arg.print) {
      case Print::kPositional:
        parts.push_back(value);
        break;
      case Print::kNamed:
        parts.push_back(fmt::format("{}={}", arg.key, value));
        break;
      case Print::kIfNotDefault:
        if (!is_default) parts.push_back(fmt::format("{}={}", arg.key, value));
        break;
    }
  }
  if (!name.empty()) parts.push_back(fmt::format("name={}", name));
  if (parts.empty()) return std::string(entry.name);  // e.g. batchnorm with its defaults
  return fmt::format("{}({})", entry.name, fmt::join(parts, ","));
}

namespace {

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

/// Recursive-descent reader of a spec: items are whitespace-separated tokens, a residual
/// token's parentheses hold further items. Positions are offsets into the whole text, so
/// messages about nested tokens point at them.
class SpecReader {
 public:
  explicit SpecReader(std::string_view text) : text_(text) {}

  /// The items in [begin, end).
  std::vector<SpecItem> items(std::size_t begin, std::size_t end) {
    std::vector<SpecItem> out;
    std::size_t i = begin;
    while (true) {
      while (i < end && is_space(text_[i])) ++i;
      if (i >= end) break;
      out.push_back(item(i, end));
    }
    return out;
  }

 private:
  /// One token starting at i (advanced past it).
  SpecItem item(std::size_t& i, std::size_t end) {
    const std::size_t number = ++number_;
    const std::size_t start = i;
    while (i < end && !is_space(text_[i]) && text_[i] != '(' && text_[i] != ')') ++i;
    const std::string name(text_.substr(start, i - start));
    if (i < end && text_[i] == ')') {
      throw Error(fmt::format("layer spec: token {} '{}' at character {}: ')' without a matching "
                              "'('; expected e.g. linear(10) or residual(linear(10) tanh)",
                              number, text_.substr(start, i + 1 - start), i + 1));
    }
    std::size_t inner_begin = 0;
    std::size_t inner_end = 0;
    bool has_args = false;
    if (i < end && text_[i] == '(') {
      const std::size_t close = matching(i, end);
      if (close == std::string_view::npos) {
        throw Error(
            fmt::format("layer spec: token {} '{}' at character {}: '(' is never closed; "
                        "expected e.g. linear(10)",
                        number, text_.substr(start, end - start), start + 1));
      }
      has_args = true;
      inner_begin = i + 1;
      inner_end = close;
      i = close + 1;
      if (i < end && !is_space(text_[i])) {
        throw Error(
            fmt::format("layer spec: token {} '{}' at character {}: unexpected '{}' after "
                        "')'; expected whitespace between layers",
                        number, text_.substr(start, i - start), start + 1, text_[i]));
      }
    }
    const std::string token(text_.substr(start, i - start));
    if (name.empty()) {
      throw Error(
          fmt::format("layer spec: token {} '{}' at character {}: the layer name before "
                      "'(' is missing; expected one of {}",
                      number, token, start + 1, known_layers()));
    }
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    SpecItem out;
    out.number = number;
    out.offset = start;
    if (lower == kResidual) {
      residual(out, token, has_args, inner_begin, inner_end);
      return out;
    }
    const KindEntry* entry = entry_named(lower);
    if (entry == nullptr || entry->kind == LayerKind::kAdd) {
      const std::string what =
          entry == nullptr ? fmt::format("unknown layer '{}'", name)
                           : std::string("'add' is the join of a residual block, written "
                                         "residual(BRANCH...[,shortcut=SHORTCUT...])");
      throw Error(fmt::format("layer spec: token {} '{}' at character {}: {}; expected one of {}",
                              number, token, start + 1, what, known_layers()));
    }
    std::vector<std::string> args;
    if (has_args) {
      const std::string inner(text_.substr(inner_begin, inner_end - inner_begin));
      if (!trim(inner).empty()) {
        std::size_t a = 0;
        while (true) {
          const std::size_t comma = inner.find(',', a);
          args.push_back(trim(std::string_view(inner).substr(
              a, comma == std::string::npos ? std::string::npos : comma - a)));
          if (comma == std::string::npos) break;
          a = comma + 1;
        }
      }
    }
    const TokenParser parser(token, number, start, *entry);
    out.layer = parse_token(name, args, parser, *entry);
    return out;
  }

  /// residual(BRANCH...[, shortcut=SHORTCUT...]) with its inner text in [begin, end).
  void residual(SpecItem& out, const std::string& token, bool has_args, std::size_t begin,
                std::size_t end) {
    const auto fail = [&](const std::string& what) {
      throw Error(fmt::format("layer spec: token {} '{}' at character {}: {}; expected {}",
                              out.number, token, out.offset + 1, what, kResidualUsage));
    };
    out.layer.kind = LayerKind::kAdd;
    out.layer.bias = false;
    if (!has_args) fail("a residual block needs its branch in parentheses");
    // Arguments are separated by the commas outside nested parentheses.
    std::vector<std::pair<std::size_t, std::size_t>> parts;
    std::size_t depth = 0;
    std::size_t part = begin;
    for (std::size_t k = begin; k < end; ++k) {
      if (text_[k] == '(') ++depth;
      if (text_[k] == ')') --depth;
      if (text_[k] == ',' && depth == 0) {
        parts.emplace_back(part, k);
        part = k + 1;
      }
    }
    parts.emplace_back(part, end);
    const auto blank = [&](std::size_t b, std::size_t e) {
      return trim(text_.substr(b, e - b)).empty();
    };
    if (blank(parts[0].first, parts[0].second)) {
      fail("the branch is empty; a residual block needs at least one layer in its branch");
    }
    if (top_level_equals(parts[0].first, parts[0].second) != std::string_view::npos) {
      fail("the first argument must be the branch's layers, not a key=value");
    }
    bool has_shortcut = false;
    std::pair<std::size_t, std::size_t> shortcut{0, 0};
    for (std::size_t k = 1; k < parts.size(); ++k) {
      const auto [b, e] = parts[k];
      const std::size_t eq = top_level_equals(b, e);
      if (eq == std::string_view::npos) {
        fail(fmt::format("'{}' after the branch is not key=value; separate the branch's layers "
                         "by whitespace, not commas",
                         trim(text_.substr(b, e - b))));
      }
      const std::string key = trim(text_.substr(b, eq - b));
      if (key != "shortcut") fail(fmt::format("unknown argument '{}' (valid: shortcut)", key));
      if (has_shortcut) fail("shortcut is given twice");
      if (blank(eq + 1, e)) fail("shortcut is empty; omit it for the identity");
      has_shortcut = true;
      shortcut = {eq + 1, e};
    }
    // Reading recurses per level: a bound keeps a hostile spec (or model file) from exhausting
    // the stack.
    if (depth_ == kMaxNesting) {
      fail(fmt::format("residual blocks nest more than {} deep", kMaxNesting));
    }
    ++depth_;
    // Branch first, then shortcut: tokens are numbered in reading order.
    out.branch = items(parts[0].first, parts[0].second);
    if (has_shortcut) out.shortcut = items(shortcut.first, shortcut.second);
    --depth_;
  }

  /// The first '=' outside parentheses in [begin, end), or npos.
  [[nodiscard]] std::size_t top_level_equals(std::size_t begin, std::size_t end) const {
    std::size_t depth = 0;
    for (std::size_t k = begin; k < end; ++k) {
      if (text_[k] == '(') ++depth;
      if (text_[k] == ')') --depth;
      if (text_[k] == '=' && depth == 0) return k;
    }
    return std::string_view::npos;
  }

  /// The ')' matching the '(' at `open`, or npos.
  [[nodiscard]] std::size_t matching(std::size_t open, std::size_t end) const {
    std::size_t depth = 0;
    for (std::size_t k = open; k < end; ++k) {
      if (text_[k] == '(') ++depth;
      if (text_[k] == ')' && --depth == 0) return k;
    }
    return std::string_view::npos;
  }

  static constexpr std::size_t kMaxNesting = 64;
  std::string_view text_;
  std::size_t number_ = 0;
  std::size_t depth_ = 0;
};

void flatten_items(const std::vector<SpecItem>& items, std::vector<LayerSpec>& out) {
  for (const SpecItem& item : items) {
    if (item.is_residual()) {
      flatten_items(item.branch, out);
      flatten_items(item.shortcut, out);
    }
    out.push_back(item.layer);
  }
}

std::string join_items(const std::vector<SpecItem>& items) {
  std::vector<std::string> parts;
  parts.reserve(items.size());
  for (const SpecItem& item : items) parts.push_back(item.str());
  return fmt::format("{}", fmt::join(parts, " "));
}

}  // namespace

std::string SpecItem::str() const {
  if (!is_residual()) return layer.str();
  if (shortcut.empty()) return fmt::format("{}({})", kResidual, join_items(branch));
  return fmt::format("{}({},shortcut={})", kResidual, join_items(branch), join_items(shortcut));
}

std::vector<SpecItem> parse_spec(std::string_view text) {
  std::vector<SpecItem> items = SpecReader(text).items(0, text.size());
  if (items.empty()) {
    throw Error("layer spec is empty; expected layers such as 'linear(512) tanh linear(10)'");
  }
  return items;
}

std::vector<LayerSpec> parse_layer_spec(std::string_view text) {
  std::vector<LayerSpec> layers;
  flatten_items(parse_spec(text), layers);
  return layers;
}

// ---- the network -------------------------------------------------------------------------------

Network::Network(std::string_view spec, TensorShape input_shape) {
  const std::vector<SpecItem> items = parse_spec(spec);
  spec_ = join_items(items);
  if (!input_shape.is_flat() && !input_shape.is_image()) {
    throw Error(fmt::format("input shape '{}' has {} dimensions; expected F or CxHxW",
                            input_shape.str(), input_shape.dims.size()));
  }
  for (Index d : input_shape.dims) {
    if (d <= 0) {
      throw Error(
          fmt::format("input shape '{}' has a size {}; expected sizes >= 1", input_shape.str(), d));
    }
  }
  activations_per_sample_ = checked_product(input_shape.dims);
  if (activations_per_sample_ < 0) {
    throw Error(fmt::format("input shape '{}' has more than {} values per sample",
                            input_shape.str(), kMaxIndex));
  }
  shapes_.push_back(std::move(input_shape));
  append(items, 0, "");
  if (!shapes_.back().is_flat()) {
    throw Error(
        fmt::format("the network's output has shape {}; end the spec with 'flatten' or a "
                    "linear layer so that each sample's output is a vector",
                    shapes_.back().str()));
  }
  // The smallest run of the model, one float32 sample, must fit before anything is allocated.
  check_memory(1, sizeof(float));
}

Index Network::append(const std::vector<SpecItem>& items, Index value, const std::string& prefix) {
  for (std::size_t i = 0; i < items.size(); ++i) {
    const SpecItem& item = items[i];
    std::string path = !item.layer.name.empty() ? item.layer.name
                       : prefix.empty()         ? std::to_string(i)
                                                : fmt::format("{}.{}", prefix, i);
    if (item.is_residual()) {
      const Index branch = append(item.branch, value, path + ".branch");
      const Index shortcut =
          item.shortcut.empty() ? value : append(item.shortcut, value, path + ".shortcut");
      const TensorShape& a = shapes_[static_cast<std::size_t>(branch)];
      const TensorShape& b = shapes_[static_cast<std::size_t>(shortcut)];
      if (a != b) {
        const std::string what =
            item.shortcut.empty()
                ? fmt::format("its shortcut (the identity) passes its input of shape {}; expected "
                              "the same shape for the sum (add a shortcut=... that maps the "
                              "input to the branch's shape, e.g. shortcut=conv(C,1,stride=S,"
                              "bias=false))",
                              b.str())
                : fmt::format("its shortcut gives shape {}; expected the same shape for the sum",
                              b.str());
        throw Error(fmt::format("layer {} '{}' (token {}): its branch gives shape {} but {}", path,
                                item.str(), item.number, a.str(), what));
      }
      add_node(item, {branch, shortcut}, std::move(path));
    } else {
      add_node(item, {value}, std::move(path));
    }
    value = static_cast<Index>(layers_.size());
  }
  return value;
}

void Network::add_node(const SpecItem& item, std::vector<Index> inputs, std::string path) {
  const LayerSpec& layer = item.layer;
  const auto l = static_cast<Index>(layers_.size());
  const TensorShape& in = shapes_[static_cast<std::size_t>(inputs.front())];
  const LayerContext context(path, item.number, layer, in);
  std::vector<Index> weight;
  TensorShape out = entry_of(layer.kind).infer(context, weight);
  const Index out_size = checked_product(out.dims);
  if (out_size < 0) {
    context.fail(fmt::format("its output {} has more than {} values per sample",
                             fmt::join(out.dims, "x"), kMaxIndex));
  }
  if (add_overflows(activations_per_sample_, out_size, activations_per_sample_)) {
    context.fail(
        fmt::format("the activations up to it have more than {} values per sample", kMaxIndex));
  }
  offsets_.push_back(num_parameters_);
  if (!weight.empty()) {
    const Index weight_size = checked_product(weight);
    // A normalization layer's β has γ's shape; other biases one entry per output.
    const std::vector<Index> bias_shape =
        layer.is_normalization() ? weight : std::vector<Index>{weight[0]};
    const Index bias_size = layer.bias ? checked_product(bias_shape) : 0;
    Index total = 0;
    if (weight_size < 0 || add_overflows(num_parameters_, weight_size, total) ||
        add_overflows(total, bias_size, total)) {
      context.fail(fmt::format("its weight of shape {} brings the parameters to more than {}",
                               fmt::join(weight, "x"), kMaxIndex));
    }
    // Positions are unique by construction; names given with name= might not be.
    for (const ParameterInfo& p : params_) {
      if (p.name == path + ".weight") {
        context.fail(fmt::format("its parameters are named '{}', as those of layer {} are; "
                                 "expected unique names",
                                 path, layers_[static_cast<std::size_t>(p.layer)].str()));
      }
    }
    params_.push_back({path + ".weight", weight, num_parameters_, weight_size, l, false});
    num_parameters_ += weight_size;
    if (layer.bias) {
      params_.push_back({path + ".bias", bias_shape, num_parameters_, bias_size, l, true});
      num_parameters_ += bias_size;
    }
  }
  if (layer.kind == LayerKind::kBatchNorm) {
    const Index features = in.dims[0];
    const auto add = [&](const char* name, std::vector<Index> shape, Index size, bool integer,
                         double initial) {
      buffers_.push_back({path + "." + name, std::move(shape),
                          static_cast<Index>(buffer_values_.size()), size, l, integer});
      buffer_values_.insert(buffer_values_.end(), static_cast<std::size_t>(size), initial);
    };
    add("running_mean", {features}, features, false, 0.0);
    add("running_var", {features}, features, false, 1.0);
    add("num_batches_tracked", {}, 1, true, 0.0);
  }
  if (inputs.size() != 1 || inputs.front() != l) sequential_ = false;
  layers_.push_back(layer);
  shapes_.push_back(std::move(out));
  inputs_.push_back(std::move(inputs));
  paths_.push_back(std::move(path));
}

std::string Network::spec() const { return spec_; }

std::string to_string(NormMode mode) {
  return mode == NormMode::kBatchStatistics ? "batch" : "running";
}

NormMode parse_norm_mode(std::string_view text, std::string_view option) {
  if (text == "running") return NormMode::kRunningStatistics;
  if (text == "batch") return NormMode::kBatchStatistics;
  throw Error(fmt::format("{} '{}'; expected running (running statistics, PyTorch's eval mode) or "
                          "batch (batch statistics, train mode)",
                          option, text));
}

void Network::set_batch_norm(NormMode mode) {
  for (LayerSpec& layer : layers_) {
    if (layer.kind == LayerKind::kBatchNorm) layer.mode = mode;
  }
}

bool Network::has_batch_statistics() const noexcept {
  return std::any_of(layers_.begin(), layers_.end(), [](const LayerSpec& layer) {
    return layer.kind == LayerKind::kBatchNorm && layer.mode == NormMode::kBatchStatistics;
  });
}

void Network::set_buffer_values(std::vector<double> values) {
  if (values.size() != buffer_values_.size()) {
    throw Error(fmt::format("buffer values: {} given; the network '{}' has {} ({} buffers)",
                            values.size(), spec(), buffer_values_.size(), buffers_.size()));
  }
  for (const BufferInfo& b : buffers_) {
    for (Index i = 0; i < b.size; ++i) {
      const double v = values[static_cast<std::size_t>(b.offset + i)];
      const bool variance = b.name.ends_with(".running_var");
      if (!std::isfinite(v) || (variance && v < 0) ||
          (b.is_integer && (v < 0 || v != std::floor(v)))) {
        throw Error(fmt::format("buffer '{}' entry {} is {}; expected {}", b.name, i, v,
                                b.is_integer ? "a whole number >= 0"
                                : variance   ? "a finite variance >= 0"
                                             : "a finite number"));
      }
    }
  }
  buffer_values_ = std::move(values);
}

std::int64_t Network::forward_flops(Index layer) const noexcept {
  const LayerSpec& spec = layers_[static_cast<std::size_t>(layer)];
  const TensorShape& in = input_shape(layer);
  const TensorShape& out = shapes_[static_cast<std::size_t>(layer + 1)];
  const auto times = [](std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<std::int64_t>::max() : r;
  };
  switch (spec.kind) {
    case LayerKind::kLinear:
    case LayerKind::kConv2d: {
      // Each output: one multiply-add per weight it sees (in features, or in channels x
      // kernel area), and its bias.
      const std::int64_t fan_in =
          spec.kind == LayerKind::kLinear ? in.size() : in.dims[0] * spec.kernel * spec.kernel;
      return times(out.size(), times(2, fan_in) + (spec.bias ? 1 : 0));
    }
    case LayerKind::kMaxPool2d:
    case LayerKind::kAvgPool2d: return times(out.size(), spec.kernel * spec.kernel);
    case LayerKind::kFlatten:
    case LayerKind::kDropout: return 0;
    case LayerKind::kGlobalAvgPool: return in.size();
    // Running statistics fold into one multiply-add per value.
    case LayerKind::kBatchNorm: return times(out.size(), 2);
    // Mean (1), variance (2), normalisation (2) per value, and the affine multiply-add.
    case LayerKind::kLayerNorm:
    case LayerKind::kGroupNorm: return times(out.size(), spec.affine ? 7 : 5);
    default: return out.size();  // activations and the add of a residual block
  }
}

std::int64_t Network::memory_bytes(Index batch, std::size_t scalar_bytes) const noexcept {
  const auto scalar = static_cast<Index>(scalar_bytes);
  const Index values = saturating_fma(batch, activations_per_sample_, num_parameters_);
  return values == kMaxIndex ? kMaxIndex : saturating_fma(values, scalar, 0);
}

void Network::check_memory(Index batch, std::size_t scalar_bytes) const {
  const std::int64_t bytes = memory_bytes(batch, scalar_bytes);
  const MemoryLimit limit = memory_limit();
  if (bytes <= limit.bytes) return;
  const std::string activations =
      batch == 1 ? fmt::format("the activations of one sample ({} values)", activations_per_sample_)
                 : fmt::format("the activations of {0} samples ({0} x {1} values)", batch,
                               activations_per_sample_);
  std::string hint;
  if (limit.source == kMemoryVariable) {
    hint = fmt::format("raise {} to allow it", kMemoryVariable);
  } else if (limit.source == kPhysicalMemory) {
    hint = fmt::format("set {} (e.g. {}=64G) to raise it", kMemoryVariable, kMemoryVariable);
  } else {
    hint = fmt::format("raise that limit (ulimit -v) or set {} to override it", kMemoryVariable);
  }
  if (batch > 1) hint += ", or use a smaller batch";
  throw Error(fmt::format(
      "model '{}' on input {} needs {}{} for its {} parameters and {}, in {}; the memory limit "
      "({}) is {}; {}",
      spec(), input_shape().str(), bytes == kMaxIndex ? "more than " : "", format_bytes(bytes),
      num_parameters_, activations, scalar_name(scalar_bytes), limit.source,
      format_bytes(limit.bytes), hint));
}

template <class Scalar>
Vector<Scalar> Network::initial_parameters(std::uint64_t seed) const {
  check_memory(1, sizeof(Scalar));
  Vector<Scalar> theta(num_parameters_);
  detail::Rng rng(seed);
  for (const ParameterInfo& p : params_) {
    if (layers_[static_cast<std::size_t>(p.layer)].is_normalization()) {
      // PyTorch's reset_parameters: γ = 1, β = 0 (no random draw).
      for (Index i = 0; i < p.size; ++i) theta[p.offset + i] = static_cast<Scalar>(p.is_bias ? 0 : 1);
      continue;
    }
    // fan_in of the layer's weight: product of all but the first dimension.
    const ParameterInfo& weight = p.is_bias ? *(&p - 1) : p;
    Index fan_in = 1;
    for (std::size_t d = 1; d < weight.shape.size(); ++d) fan_in *= weight.shape[d];
    // kaiming_uniform(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) = 1/sqrt(fan_in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    for (Index i = 0; i < p.size; ++i) {
      theta[p.offset + i] = static_cast<Scalar>(bound * (2.0 * rng.uniform() - 1.0));
    }
  }
  return theta;
}

template Vector<float> Network::initial_parameters<float>(std::uint64_t) const;
template Vector<double> Network::initial_parameters<double>(std::uint64_t) const;

// ---- memory limit and model files ---------------------------------------------------------------

std::int64_t parse_memory_size(std::string_view text, std::string_view name) {
  const std::string s = trim(text);
  const auto expected = [&](const std::string& what) {
    return Error(
        fmt::format("{}='{}' {}; expected a whole number of bytes >= 1 with an optional "
                    "K, M, G or T suffix (powers of 1024), e.g. 16G",
                    name, text, what));
  };
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0])) == 0) {
    throw expected("is not a memory size");
  }
  Index value = 0;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, value);
  int shift = 0;
  if (ptr != end) {
    if (ptr + 1 != end) throw expected("is not a memory size");
    switch (std::toupper(static_cast<unsigned char>(*ptr))) {
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      default:
        throw expected("is not a memory size");
    }
  }
  Index bytes = 0;
  if (ec == std::errc::result_out_of_range || mul_overflows(value, Index{1} << shift, bytes)) {
    throw expected(fmt::format("is more than {} bytes", kMaxIndex));
  }
  if (bytes < 1) throw expected("is zero");
  return bytes;
}

MemoryLimit memory_limit() {
  const char* variable = std::getenv(kMemoryVariable);
  if (variable != nullptr && !trim(variable).empty()) {
    return {parse_memory_size(variable, kMemoryVariable), kMemoryVariable};
  }
  MemoryLimit limit{kMaxIndex, "no limit known"};
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  Index physical = 0;
  if (pages > 0 && page_size > 0 && !mul_overflows(pages, page_size, physical)) {
    limit = {physical, kPhysicalMemory};
  }
  rlimit address_space{};
  if (::getrlimit(RLIMIT_AS, &address_space) == 0 && address_space.rlim_cur != RLIM_INFINITY &&
      address_space.rlim_cur < static_cast<rlim_t>(limit.bytes)) {
    limit = {static_cast<Index>(address_space.rlim_cur),
             "the process's address-space limit, RLIMIT_AS"};
  }
  return limit;
}

std::string format_bytes(std::int64_t bytes) {
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  value /= 1024;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {} ({} bytes)", value, kUnits[unit], bytes);
}

bool looks_like_model_file(const std::string& arg) {
  std::error_code ec;
  const auto status = std::filesystem::status(arg, ec);
  // Anything there but a directory (a device, a FIFO) was meant as a file: the model reader
  // then refuses it as what it is, instead of the spec parser as an unknown layer.
  if (!ec) return std::filesystem::exists(status) && !std::filesystem::is_directory(status);
  // A spec is not a path: too long for one, or naming nothing.
  if (ec == std::errc::filename_too_long || ec == std::errc::no_such_file_or_directory ||
      ec == std::errc::not_a_directory) {
    return false;
  }
  throw Error(
      fmt::format("model '{}': cannot tell whether it is a model file: {}; expected a "
                  "layer spec or a readable model file",
                  arg, ec.message()));
}

}  // namespace quadra::nn
