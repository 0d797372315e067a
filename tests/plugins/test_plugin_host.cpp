// The plugin host: discovery, the descriptor handshake, one precise refusal per broken library,
// and library lifetime.

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <quadra/plugin_host.hpp>
#include <quadra/sdk/build_key.hpp>
#include <quadra/sdk/version.hpp>

using Catch::Contains;
using quadra::PluginHost;
using quadra::PluginKind;

namespace {

/// Loads `file` into a fresh host, requires a refusal, and returns its message.
std::string refusal(const char* file) {
  PluginHost host;
  const quadra::Status status = host.load_library(file);
  REQUIRE_FALSE(status.is_ok());
  REQUIRE(host.components().empty());
  REQUIRE(host.refused().size() == 1);
  CHECK(host.refused().front().reason == status.message());
  CHECK_THAT(status.message(), Contains(fmt::format("refused plugin \"{}\"", file)));
  return status.message();
}

bool is_loaded(const char* file) {
  void* handle = ::dlopen(file, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return false;
  ::dlclose(handle);
  return true;
}

}  // namespace

TEST_CASE("a well-formed library registers one component of every kind", "[plugin-host]") {
  PluginHost host;
  REQUIRE(host.load_library(FIXTURE_GOOD).is_ok());
  REQUIRE(host.components().size() == 4);
  CHECK(host.find(PluginKind::kCurvature, "test-identity") != nullptr);
  CHECK(host.find(PluginKind::kSolver, "test-gradient") != nullptr);
  CHECK(host.find(PluginKind::kDamping, "test-damping") != nullptr);
  CHECK(host.find(PluginKind::kDebiasing, "test-two-draws") != nullptr);
  CHECK(host.find(PluginKind::kDamping, "test-identity") == nullptr);  // names are per kind

  const quadra::Component& c = *host.find(PluginKind::kSolver, "test-gradient");
  CHECK(c.library_name == "test-all-kinds");
  CHECK(c.library_version == "0.0.1");
  CHECK(c.file == FIXTURE_GOOD);
  CHECK(c.info.options.size() == 2);

  auto curvature = host.create<quadra::CurvatureEstimator>("test-identity", {{"scale", "2.5"}});
  REQUIRE(curvature.is_ok());
  quadra::Vector<double> v(3), out(3);
  v << 1, -2, 4;
  REQUIRE(curvature.value()->apply(v, out).is_ok());
  CHECK(out == 2.5 * v);
}

TEST_CASE("each broken library is refused with its own message", "[plugin-host]") {
  SECTION("a file that is not a shared library") {
    CHECK_THAT(refusal(FIXTURE_NOT_A_LIBRARY), Contains("not a loadable shared library"));
  }
  SECTION("a shared library without the entry point") {
    CHECK_THAT(refusal(FIXTURE_NO_ENTRY_POINT),
               Contains("no entry point: the library does not export 'quadra_plugin_entry'"));
  }
  SECTION("a plugin built for another ABI version") {
    CHECK_THAT(refusal(FIXTURE_ABI_MISMATCH),
               Contains(fmt::format("plugin ABI version mismatch: expected {}, found {}",
                                    QUADRA_PLUGIN_ABI_VERSION, QUADRA_PLUGIN_ABI_VERSION + 1)));
  }
  SECTION("a plugin built with another toolchain") {
    CHECK_THAT(refusal(FIXTURE_BUILD_KEY_MISMATCH),
               Contains(fmt::format("build key mismatch: expected '{}', found "
                                    "'clang-99/libc++-1/eigen-3.4-align32-indexint'",
                                    QUADRA_BUILD_KEY)));
  }
  SECTION("a plugin built against a newer SDK") {
    CHECK_THAT(refusal(FIXTURE_SDK_MISMATCH),
               Contains(fmt::format("SDK version mismatch: expected {0}.x with x <= {1}, found {0}.{2}.0",
                                    QUADRA_SDK_VERSION_MAJOR, QUADRA_SDK_VERSION_MINOR,
                                    QUADRA_SDK_VERSION_MINOR + 1)));
  }
  SECTION("a truncated descriptor") {
    CHECK_THAT(refusal(FIXTURE_DESCRIPTOR_TOO_SMALL),
               Contains("descriptor too small: 2 bytes, expected at least 8"));
  }
  SECTION("a library that registers nothing") {
    CHECK_THAT(refusal(FIXTURE_REGISTERS_NOTHING), Contains("the library registers no component"));
  }
  SECTION("registration that throws") {
    CHECK_THAT(refusal(FIXTURE_THROWING_REGISTRATION),
               Contains("registration failed: the plugin's own configuration file is missing"));
  }
  SECTION("an option schema whose default is out of its own range") {
    CHECK_THAT(refusal(FIXTURE_BAD_SCHEMA),
               Contains("damping plugin 'bad-schema': option 'lambda' default: 5 is outside the "
                        "allowed range [0, 1]"));
  }
  SECTION("an invalid component name") {
    CHECK_THAT(refusal(FIXTURE_BAD_NAME),
               Contains("invalid damping plugin name 'Bad Name': expected lower-case letters, "
                        "digits and inner '-'"));
  }
  SECTION("a file that does not exist") {
    CHECK_THAT(refusal("/nonexistent/libnothing.so"), Contains("no such file"));
  }
}

TEST_CASE("a duplicate name refuses the later library and keeps the first", "[plugin-host]") {
  PluginHost host;
  REQUIRE(host.load_library(BUILTIN_CONSTANT).is_ok());
  const quadra::Status status = host.load_library(FIXTURE_DUPLICATE_NAME);
  REQUIRE_FALSE(status.is_ok());
  CHECK_THAT(status.message(),
             Contains(fmt::format("duplicate damping plugin 'constant': already registered by \"{}\"",
                                  BUILTIN_CONSTANT)));
  REQUIRE(host.components().size() == 1);
  CHECK(host.find(PluginKind::kDamping, "constant")->file == BUILTIN_CONSTANT);
}

namespace {

/// A damping strategy the test program defines itself, for in-process registration.
class FixedDamping final : public quadra::DampingStrategy {
 public:
  explicit FixedDamping(double lambda) : lambda_(lambda) {}
  [[nodiscard]] double lambda() const override { return lambda_; }
  [[nodiscard]] bool uses_reduction_ratio() const override { return false; }
  quadra::StepVerdict step_measured(double /*rho*/) override {
    if (lambda_ < 0) throw std::runtime_error("negative lambda");
    return quadra::StepVerdict::kAccept;
  }
  void step_invalid() override {}

 private:
  double lambda_;
};

/// A factory returning FixedDamping(option "lambda" * scale).
quadra::HostFactory<quadra::DampingStrategy> fixed_factory(double scale) {
  return [scale](const quadra::OptionValues& options, quadra::DampingStrategy** out) {
    *out = new FixedDamping(options.get_real("lambda") * scale);
    return quadra::Status::ok();
  };
}

quadra::ComponentInfo fixed_info(std::string name) {
  return {std::move(name), "a fixed lambda",
          {quadra::OptionSpec::real("lambda", 0.5, "the lambda").at_least(-1.0)}};
}

}  // namespace

TEST_CASE("components defined in process are registered, created and guarded as plugins are",
          "[plugin-host]") {
  PluginHost host;
  REQUIRE(host.load_library(BUILTIN_CONSTANT).is_ok());
  auto alive = std::make_shared<int>(7);
  REQUIRE(host.add_in_process<quadra::DampingStrategy>(fixed_info("fixed"), fixed_factory(1.0),
                                                       "the test program", alive)
              .is_ok());
  const quadra::Component* fixed = host.find(PluginKind::kDamping, "fixed");
  REQUIRE(fixed != nullptr);
  CHECK(fixed->file == "the test program");
  CHECK(fixed->library_name == PluginHost::kInProcessLibrary);

  auto created = host.create<quadra::DampingStrategy>("fixed", {{"lambda", "0.25"}});
  REQUIRE(created.is_ok());
  CHECK(created.value()->lambda() == 0.25);
  CHECK(alive.use_count() == 3);  // the host's component and the object hold it
  auto bad = host.create<quadra::DampingStrategy>("fixed", {{"lambda", "-3"}});
  REQUIRE_FALSE(bad.is_ok());
  CHECK_THAT(bad.status().message(), Contains("lambda") && Contains("-3"));
  // Calls into it are guarded: an exception names the component and its origin.
  auto negative = host.create<quadra::DampingStrategy>("fixed", {{"lambda", "-0.5"}});
  REQUIRE(negative.is_ok());
  try {
    static_cast<void>(negative.value()->step_measured(1.0));
    FAIL("no PluginFailure");
  } catch (const quadra::PluginFailure& e) {
    CHECK_THAT(e.what(), Contains("damping plugin 'fixed' (\"the test program\") threw from "
                                  "step_measured(): negative lambda"));
  }

  // The checks a library's components get.
  const quadra::Status clash = host.add_in_process<quadra::DampingStrategy>(
      fixed_info("constant"), fixed_factory(1.0), "the test program", nullptr, /*replace=*/true);
  CHECK_THAT(clash.message(), Contains("duplicate damping plugin 'constant': already registered"));
  CHECK(host.find(PluginKind::kDamping, "constant")->file == BUILTIN_CONSTANT);
  CHECK_THAT(host.add_in_process<quadra::DampingStrategy>(fixed_info("Fixed"), fixed_factory(1.0),
                                                          "x", nullptr)
                 .message(),
             Contains("invalid damping plugin name 'Fixed'"));
  CHECK_THAT(host.add_in_process<quadra::DampingStrategy>(fixed_info("fixed"), fixed_factory(2.0),
                                                          "x", nullptr)
                 .message(),
             Contains("duplicate damping plugin 'fixed'"));
  CHECK_THAT(host.add_in_process<quadra::DampingStrategy>(fixed_info("empty"), nullptr, "x",
                                                          nullptr)
                 .message(),
             Contains("has no factory"));

  // Replacing an in-process component: the new factory serves, the old keep-alive is released.
  REQUIRE(host.add_in_process<quadra::DampingStrategy>(fixed_info("fixed"), fixed_factory(2.0),
                                                       "the test program, again", nullptr,
                                                       /*replace=*/true)
              .is_ok());
  CHECK(host.components().size() == 2);
  CHECK(alive.use_count() == 3);  // the objects created before still hold it
  created = host.create<quadra::DampingStrategy>("fixed", {});
  REQUIRE(created.is_ok());
  CHECK(created.value()->lambda() == 1.0);
  CHECK(host.find(PluginKind::kDamping, "fixed")->file == "the test program, again");
}

TEST_CASE("a factory that throws is reported when the component is created", "[plugin-host]") {
  PluginHost host;
  REQUIRE(host.load_library(FIXTURE_THROWING_FACTORY).is_ok());
  auto created = host.create<quadra::DampingStrategy>("throwing", {});
  REQUIRE_FALSE(created.is_ok());
  CHECK(created.status().code() == quadra::StatusCode::kFailed);
  CHECK_THAT(created.status().message(),
             Contains("damping plugin 'throwing'") &&
                 Contains("could not be created: cannot allocate the damping workspace"));
}

TEST_CASE("creating with bad options names the option, the value and what is valid",
          "[plugin-host]") {
  PluginHost host;
  REQUIRE(host.load_library(FIXTURE_GOOD).is_ok());
  SECTION("unknown option lists the valid ones") {
    auto r = host.create<quadra::Solver>("test-gradient", {{"stepsize", "1"}});
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().message() ==
          "unknown option 'stepsize' for solver 'test-gradient'; valid options: step, iterations");
  }
  SECTION("wrong type") {
    auto r = host.create<quadra::Solver>("test-gradient", {{"iterations", "2.5"}});
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().message() ==
          "option 'iterations' of solver 'test-gradient': expected an integer, found '2.5'");
  }
  SECTION("out of range") {
    auto r = host.create<quadra::Solver>("test-gradient", {{"step", "0"}});
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().message() ==
          "option 'step' of solver 'test-gradient': 0 is outside the allowed range (0, inf)");
  }
  SECTION("unknown choice") {
    auto r = host.create<quadra::DampingStrategy>("test-damping", {{"mode", "medium"}});
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().message() ==
          "option 'mode' of damping 'test-damping': 'medium' is not one of: low, high");
  }
  SECTION("unknown component lists the available ones") {
    auto r = host.create<quadra::DampingStrategy>("lm", {});
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().message() == "unknown damping plugin 'lm'; available: test-damping");
  }
  SECTION("valid options reach the plugin") {
    auto r = host.create<quadra::DampingStrategy>("test-damping", {{"mode", "high"}});
    REQUIRE(r.is_ok());
    CHECK(r.value()->lambda() == 10.0);
  }
}

TEST_CASE("objects created by a plugin keep its library loaded", "[plugin-host]") {
  quadra::PluginHandle<quadra::DampingStrategy> damping;
  {
    PluginHost host;
    REQUIRE(host.load_library(BUILTIN_CONSTANT).is_ok());
    auto created = host.create<quadra::DampingStrategy>("constant", {{"lambda", "0.25"}});
    REQUIRE(created.is_ok());
    damping = std::move(created).value();
  }  // the host and its registry are gone
  REQUIRE(is_loaded(BUILTIN_CONSTANT));
  CHECK(damping->lambda() == 0.25);  // the vtable still points into loaded code
  damping.reset();
  CHECK_FALSE(is_loaded(BUILTIN_CONSTANT));
}

TEST_CASE("discovery: directories, single files, QUADRA_PLUGIN_PATH", "[plugin-host]") {
  SECTION("a directory loads every library in it") {
    PluginHost host;
    REQUIRE(host.load_path(BUILTIN_PLUGIN_DIR).is_ok());
    CHECK(host.find(PluginKind::kDamping, "constant") != nullptr);
    CHECK(host.find(PluginKind::kDebiasing, "same-batch") != nullptr);
    CHECK(host.refused().empty());
  }
  SECTION("refused libraries in a directory do not stop the others") {
    PluginHost host;
    REQUIRE(host.load_path(FIXTURE_ROOT "/abi_mismatch").is_ok());
    REQUIRE(host.load_path(FIXTURE_ROOT "/good").is_ok());
    CHECK(host.refused().size() == 1);
    CHECK(host.components().size() == 4);
  }
  SECTION("a missing path is an error") {
    PluginHost host;
    const quadra::Status status = host.load_path("/nonexistent/plugins");
    CHECK(status.message() == "plugin path \"/nonexistent/plugins\" is neither a directory nor a file");
  }
  SECTION("QUADRA_PLUGIN_PATH adds ':'-separated directories") {
    ::setenv("QUADRA_PLUGIN_PATH", "::" FIXTURE_ROOT "/good:", 1);
    PluginHost host;
    const quadra::Status status = host.load_default_paths({});
    ::unsetenv("QUADRA_PLUGIN_PATH");
    REQUIRE(status.is_ok());
    CHECK(host.find(PluginKind::kSolver, "test-gradient") != nullptr);
  }
}

TEST_CASE("plugin kinds parse from their names", "[plugin-host]") {
  CHECK(quadra::parse_plugin_kind("debiasing").value() == PluginKind::kDebiasing);
  CHECK(quadra::parse_plugin_kind("optimizer").status().message() ==
        "unknown plugin kind 'optimizer'; expected one of: curvature, solver, damping, debiasing");
}
