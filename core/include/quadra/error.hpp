#pragma once
/// \file
/// The one exception type core throws for bad input (config, files, plugins). Its message is
/// complete: it names the thing, the value found and what was expected. The CLI prints it and
/// exits non-zero. Numerical trouble is never an exception (see quadra::Status).

#include <stdexcept>
#include <string>

#include <quadra/sdk/status.hpp>

namespace quadra {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A query the model does not define (e.g. per-sample quantities through batchnorm's batch
/// statistics): asking again cannot succeed. Plugins see it as Status::unsupported.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

/// Throws Error(status.message()) when status is not ok.
inline void throw_if_error(const Status& status) {
  if (!status.is_ok()) throw Error(status.message());
}

}  // namespace quadra
