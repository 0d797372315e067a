#pragma once
/// \file
/// Status values: what crosses the plugin boundary instead of exceptions.

#include <string>
#include <utility>
#include <variant>

namespace quadra {
inline namespace abi_v4 {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,  ///< bad option, bad shape, bad input
  kNumericalIssue,   ///< NaN/Inf, breakdown, indefinite curvature where definiteness is needed
  kUnsupported,      ///< the component does not offer this operation (e.g. no structure)
  kFailed,           ///< anything else, e.g. an exception caught inside a plugin
};

/// A code and a message. Cheap to pass; `ok()` statuses carry no message.
class Status {
 public:
  Status() = default;
  static Status ok() { return {}; }
  static Status invalid_argument(std::string message) {
    return {StatusCode::kInvalidArgument, std::move(message)};
  }
  static Status numerical_issue(std::string message) {
    return {StatusCode::kNumericalIssue, std::move(message)};
  }
  static Status unsupported(std::string message) {
    return {StatusCode::kUnsupported, std::move(message)};
  }
  static Status failed(std::string message) { return {StatusCode::kFailed, std::move(message)}; }

  [[nodiscard]] bool is_ok() const noexcept { return code_ == StatusCode::kOk; }
  [[nodiscard]] StatusCode code() const noexcept { return code_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

 private:
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

/// A value or a non-ok Status (C++20 has no std::expected).
template <class T>
class Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : state_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool is_ok() const noexcept { return state_.index() == 0; }
  [[nodiscard]] T& value() & { return std::get<0>(state_); }
  [[nodiscard]] const T& value() const& { return std::get<0>(state_); }
  [[nodiscard]] T&& value() && { return std::get<0>(std::move(state_)); }
  /// The error; only valid when !is_ok().
  [[nodiscard]] const Status& status() const& { return std::get<1>(state_); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace abi_v4
}  // namespace quadra
