// Layer-spec parsing, shape inference and the parameter layout. See quadra/nn/network.hpp.

#include <quadra/nn/network.hpp>

#include <cctype>
#include <charconv>
#include <cmath>
#include <random>

#include <fmt/format.h>

#include <quadra/error.hpp>

#include "rng.hpp"

namespace quadra::nn {
namespace {

struct KindInfo {
  const char* name;
  LayerKind kind;
  const char* usage;
};

constexpr KindInfo kKinds[] = {
    {"linear", LayerKind::kLinear, "linear(OUT[,bias=true|false])"},
    {"conv", LayerKind::kConv2d, "conv(OUT,KERNEL[,stride=S][,pad=P][,bias=true|false])"},
    {"conv2d", LayerKind::kConv2d, "conv(OUT,KERNEL[,stride=S][,pad=P][,bias=true|false])"},
    {"maxpool", LayerKind::kMaxPool2d, "maxpool(KERNEL[,stride=S][,pad=P])"},
    {"maxpool2d", LayerKind::kMaxPool2d, "maxpool(KERNEL[,stride=S][,pad=P])"},
    {"avgpool", LayerKind::kAvgPool2d, "avgpool(KERNEL[,stride=S][,pad=P])"},
    {"avgpool2d", LayerKind::kAvgPool2d, "avgpool(KERNEL[,stride=S][,pad=P])"},
    {"flatten", LayerKind::kFlatten, "flatten"},
    {"relu", LayerKind::kRelu, "relu"},
    {"leakyrelu", LayerKind::kLeakyRelu, "leakyrelu([SLOPE])"},
    {"leaky_relu", LayerKind::kLeakyRelu, "leakyrelu([SLOPE])"},
    {"tanh", LayerKind::kTanh, "tanh"},
    {"sigmoid", LayerKind::kSigmoid, "sigmoid"},
    {"gelu", LayerKind::kGelu, "gelu"},
    {"softplus", LayerKind::kSoftplus, "softplus"},
};

constexpr const char* kKnownLayers =
    "linear, conv, maxpool, avgpool, flatten, relu, leakyrelu, tanh, sigmoid, gelu, softplus";

const char* canonical_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::kLinear: return "linear";
    case LayerKind::kConv2d: return "conv";
    case LayerKind::kMaxPool2d: return "maxpool";
    case LayerKind::kAvgPool2d: return "avgpool";
    case LayerKind::kFlatten: return "flatten";
    case LayerKind::kRelu: return "relu";
    case LayerKind::kLeakyRelu: return "leakyrelu";
    case LayerKind::kTanh: return "tanh";
    case LayerKind::kSigmoid: return "sigmoid";
    case LayerKind::kGelu: return "gelu";
    case LayerKind::kSoftplus: return "softplus";
  }
  return "?";
}

std::string trim(std::string_view s) {
  std::size_t b = 0;
  std::size_t e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b])) != 0) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1])) != 0) --e;
  return std::string(s.substr(b, e - b));
}

/// Parses one token's arguments and reports errors with the token's position.
class TokenParser {
 public:
  TokenParser(std::string token, std::size_t number, std::size_t offset, const KindInfo& info)
      : token_(std::move(token)), number_(number), offset_(offset), info_(info) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("layer spec: token {} '{}' at character {}: {}; expected {}", number_,
                            token_, offset_ + 1, what, info_.usage));
  }

  Index positive(const std::string& value, const char* what) const {
    Index out = 0;
    const char* end = value.data() + value.size();
    const auto [ptr, ec] = std::from_chars(value.data(), end, out);
    if (ec != std::errc() || ptr != end || out <= 0) {
      fail(fmt::format("{} '{}' is not a positive integer", what, value));
    }
    return out;
  }
  Index non_negative(const std::string& value, const char* what) const {
    if (value == "0") return 0;
    return positive(value, what);
  }
  bool boolean(const std::string& value, const char* what) const {
    if (value == "true" || value == "1") return true;
    if (value == "false" || value == "0") return false;
    fail(fmt::format("{} '{}' is not true or false", what, value));
  }
  double real(const std::string& value, const char* what) const {
    double out = 0;
    const char* end = value.data() + value.size();
    const auto [ptr, ec] = std::from_chars(value.data(), end, out);
    if (ec != std::errc() || ptr != end || !std::isfinite(out)) {
      fail(fmt::format("{} '{}' is not a number", what, value));
    }
    return out;
  }

 private:
  std::string token_;
  std::size_t number_;
  std::size_t offset_;
  const KindInfo& info_;
};

LayerSpec parse_token(const std::string& name, const std::vector<std::string>& args,
                      bool has_parens, const TokenParser& p, const KindInfo& info) {
  LayerSpec spec;
  spec.kind = info.kind;
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> named;
  for (const std::string& arg : args) {
    if (arg.empty()) p.fail("empty argument");
    const auto eq = arg.find('=');
    if (eq == std::string::npos) {
      if (!named.empty()) p.fail(fmt::format("positional argument '{}' after a named one", arg));
      positional.push_back(arg);
    } else {
      named.emplace_back(trim(arg.substr(0, eq)), trim(arg.substr(eq + 1)));
    }
  }
  auto too_many = [&](std::size_t allowed) {
    if (positional.size() > allowed) {
      p.fail(fmt::format("{} positional arguments given, at most {} allowed", positional.size(),
                         allowed));
    }
  };
  auto unknown_key = [&](const std::string& key, const char* valid) {
    p.fail(fmt::format("unknown argument '{}' (valid: {})", key, valid));
  };
  (void)has_parens;
  switch (info.kind) {
    case LayerKind::kLinear:
      if (positional.empty()) p.fail("missing the number of output features");
      too_many(1);
      spec.out = p.positive(positional[0], "output features");
      for (const auto& [key, value] : named) {
        if (key == "bias") {
          spec.bias = p.boolean(value, "bias");
        } else {
          unknown_key(key, "bias");
        }
      }
      break;
    case LayerKind::kConv2d:
      if (positional.size() < 2) p.fail("missing the output channels or the kernel size");
      too_many(2);
      spec.out = p.positive(positional[0], "output channels");
      spec.kernel = p.positive(positional[1], "kernel size");
      for (const auto& [key, value] : named) {
        if (key == "stride") {
          spec.stride = p.positive(value, "stride");
        } else if (key == "pad" || key == "padding") {
          spec.padding = p.non_negative(value, "padding");
        } else if (key == "bias") {
          spec.bias = p.boolean(value, "bias");
        } else {
          unknown_key(key, "stride, pad, bias");
        }
      }
      break;
    case LayerKind::kMaxPool2d:
    case LayerKind::kAvgPool2d:
      if (positional.empty()) p.fail("missing the kernel size");
      too_many(1);
      spec.kernel = p.positive(positional[0], "kernel size");
      spec.stride = spec.kernel;
      spec.bias = false;
      for (const auto& [key, value] : named) {
        if (key == "stride") {
          spec.stride = p.positive(value, "stride");
        } else if (key == "pad" || key == "padding") {
          spec.padding = p.non_negative(value, "padding");
        } else {
          unknown_key(key, "stride, pad");
        }
      }
      if (2 * spec.padding > spec.kernel) {
        p.fail(fmt::format("padding {} is more than half the kernel size {}", spec.padding,
                           spec.kernel));
      }
      break;
    case LayerKind::kLeakyRelu:
      spec.bias = false;
      too_many(1);
      if (!positional.empty()) spec.negative_slope = p.real(positional[0], "negative slope");
      for (const auto& [key, value] : named) {
        if (key == "slope" || key == "negative_slope") {
          spec.negative_slope = p.real(value, "negative slope");
        } else {
          unknown_key(key, "slope");
        }
      }
      break;
    default:
      spec.bias = false;
      if (!args.empty()) p.fail(fmt::format("'{}' takes no arguments", name));
      break;
  }
  return spec;
}

}  // namespace

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
      throw Error(fmt::format("input shape '{}': '{}' is not a positive integer; expected F (e.g. "
                              "784) or CxHxW (e.g. 1x28x28)",
                              text, part));
    }
    shape.dims.push_back(value);
    start = stop + 1;
  }
  if (shape.dims.size() != 1 && shape.dims.size() != 3) {
    throw Error(fmt::format("input shape '{}' has {} dimensions; expected F (e.g. 784) or CxHxW "
                            "(e.g. 1x28x28)",
                            text, shape.dims.size()));
  }
  return shape;
}

std::string LayerSpec::str() const {
  const char* name = canonical_name(kind);
  switch (kind) {
    case LayerKind::kLinear:
      return bias ? fmt::format("{}({})", name, out) : fmt::format("{}({},bias=false)", name, out);
    case LayerKind::kConv2d:
      return fmt::format("{}({},{},stride={},pad={}{})", name, out, kernel, stride, padding,
                         bias ? "" : ",bias=false");
    case LayerKind::kMaxPool2d:
    case LayerKind::kAvgPool2d:
      return fmt::format("{}({},stride={},pad={})", name, kernel, stride, padding);
    case LayerKind::kLeakyRelu:
      return fmt::format("{}({})", name, negative_slope);
    default:
      return name;
  }
}

std::vector<LayerSpec> parse_layer_spec(std::string_view text) {
  std::vector<LayerSpec> layers;
  std::size_t i = 0;
  std::size_t number = 0;
  const auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (true) {
    while (i < text.size() && is_space(text[i])) ++i;
    if (i >= text.size()) break;
    ++number;
    const std::size_t start = i;
    while (i < text.size() && !is_space(text[i]) && text[i] != '(') ++i;
    const std::string name(text.substr(start, i - start));
    std::vector<std::string> args;
    bool has_parens = false;
    if (i < text.size() && text[i] == '(') {
      has_parens = true;
      const std::size_t close = text.find(')', i);
      if (close == std::string_view::npos) {
        throw Error(fmt::format("layer spec: token {} '{}' at character {}: '(' is never closed; "
                                "expected e.g. linear(10)",
                                number, text.substr(start), start + 1));
      }
      const std::string inner(text.substr(i + 1, close - i - 1));
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
      i = close + 1;
      if (i < text.size() && !is_space(text[i])) {
        throw Error(fmt::format("layer spec: token {} '{}' at character {}: unexpected '{}' after "
                                "')'; expected whitespace between layers",
                                number, text.substr(start, i - start), start + 1, text[i]));
      }
    }
    const std::string token(text.substr(start, i - start));
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const KindInfo* info = nullptr;
    for (const KindInfo& k : kKinds) {
      if (lower == k.name) info = &k;
    }
    if (info == nullptr) {
      throw Error(fmt::format("layer spec: token {} '{}' at character {}: unknown layer '{}'; "
                              "expected one of {}",
                              number, token, start + 1, name, kKnownLayers));
    }
    const TokenParser parser(token, number, start, *info);
    layers.push_back(parse_token(name, args, has_parens, parser, *info));
  }
  if (layers.empty()) {
    throw Error("layer spec is empty; expected layers such as 'linear(512) tanh linear(10)'");
  }
  return layers;
}

Network::Network(std::string_view spec, TensorShape input_shape) {
  layers_ = parse_layer_spec(spec);
  if (!input_shape.is_flat() && !input_shape.is_image()) {
    throw Error(fmt::format("input shape '{}' has {} dimensions; expected F or CxHxW",
                            input_shape.str(), input_shape.dims.size()));
  }
  for (Index d : input_shape.dims) {
    if (d <= 0) throw Error(fmt::format("input shape '{}' has a non-positive size", input_shape.str()));
  }
  shapes_.push_back(input_shape);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    const LayerSpec& layer = layers_[l];
    const TensorShape& in = shapes_.back();
    auto fail = [&](const std::string& what) {
      throw Error(fmt::format("layer {} '{}' (token {}) receives shape {}: {}", l, layer.str(),
                              l + 1, in.str(), what));
    };
    TensorShape out = in;
    offsets_.push_back(num_parameters_);
    const std::string index = std::to_string(l);
    switch (layer.kind) {
      case LayerKind::kLinear: {
        if (!in.is_flat()) fail("a linear layer needs a flat input; insert 'flatten' before it");
        out.dims = {layer.out};
        ParameterInfo w{index + ".weight", {layer.out, in.dims[0]}, num_parameters_,
                        layer.out * in.dims[0], static_cast<Index>(l), false};
        num_parameters_ += w.size;
        params_.push_back(w);
        if (layer.bias) {
          params_.push_back({index + ".bias", {layer.out}, num_parameters_, layer.out,
                             static_cast<Index>(l), true});
          num_parameters_ += layer.out;
        }
        break;
      }
      case LayerKind::kConv2d:
      case LayerKind::kMaxPool2d:
      case LayerKind::kAvgPool2d: {
        if (!in.is_image()) fail("needs a CxHxW input");
        const Index h = in.dims[1] + 2 * layer.padding - layer.kernel;
        const Index w = in.dims[2] + 2 * layer.padding - layer.kernel;
        if (h < 0 || w < 0) {
          fail(fmt::format("kernel {} with padding {} is larger than the input", layer.kernel,
                           layer.padding));
        }
        const Index channels = layer.kind == LayerKind::kConv2d ? layer.out : in.dims[0];
        out.dims = {channels, h / layer.stride + 1, w / layer.stride + 1};
        if (layer.kind == LayerKind::kConv2d) {
          const Index fan_in = in.dims[0] * layer.kernel * layer.kernel;
          params_.push_back({index + ".weight",
                             {layer.out, in.dims[0], layer.kernel, layer.kernel},
                             num_parameters_,
                             layer.out * fan_in,
                             static_cast<Index>(l),
                             false});
          num_parameters_ += layer.out * fan_in;
          if (layer.bias) {
            params_.push_back({index + ".bias", {layer.out}, num_parameters_, layer.out,
                               static_cast<Index>(l), true});
            num_parameters_ += layer.out;
          }
        }
        break;
      }
      case LayerKind::kFlatten:
        out.dims = {in.size()};
        break;
      default:
        break;
    }
    shapes_.push_back(out);
  }
  if (!shapes_.back().is_flat()) {
    throw Error(fmt::format("the network's output has shape {}; end the spec with 'flatten' or a "
                            "linear layer so that each sample's output is a vector",
                            shapes_.back().str()));
  }
}

std::string Network::spec() const {
  std::vector<std::string> parts;
  for (const LayerSpec& layer : layers_) parts.push_back(layer.str());
  return fmt::format("{}", fmt::join(parts, " "));
}

template <class Scalar>
Vector<Scalar> Network::initial_parameters(std::uint64_t seed) const {
  Vector<Scalar> theta(num_parameters_);
  detail::Rng rng(seed);
  for (const ParameterInfo& p : params_) {
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

}  // namespace quadra::nn
