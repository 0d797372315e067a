// INI configs, --set overrides, unknown keys, and optimizer specs resolved against plugins.

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <quadra/config.hpp>
#include <quadra/error.hpp>
#include <quadra/optimizer_spec.hpp>

using Catch::Contains;
namespace fs = std::filesystem;

namespace {

/// A config file in the test's temporary directory.
fs::path write_ini(const std::string& name, const std::string& text) {
  const fs::path path = fs::temp_directory_path() / fmt::format("quadra-test-{}-{}.ini", name, ::getpid());
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("INI files become dotted keys", "[config]") {
  const fs::path file = write_ini("ok", "# comment\n[optimizer]\ndamping = constant\n\n[damping]\nlambda=0.5\n");
  const quadra::Config config = quadra::Config::from_file(file);
  CHECK(config.get("optimizer.damping") == "constant");
  CHECK(config.get("damping.lambda") == "0.5");
  CHECK_FALSE(config.get("damping.missing").has_value());
  CHECK(config.section("damping") == quadra::RawOptions{{"lambda", "0.5"}});
  CHECK(config.entries().at("damping.lambda").source == quadra::Config::Source::kFile);
  fs::remove(file);
}

TEST_CASE("overrides (--set) replace file values and adds new ones", "[config]") {
  const fs::path file = write_ini("set", "[damping]\nlambda = 0.5\n");
  quadra::Config config = quadra::Config::from_file(file);
  config.apply_override("damping.lambda=2");
  config.apply_override(" optimizer.damping = constant ");
  CHECK(config.get("damping.lambda") == "2");
  CHECK(config.get("optimizer.damping") == "constant");
  CHECK(config.entries().at("damping.lambda").source == quadra::Config::Source::kOverride);
  CHECK_THROWS_WITH(config.apply_override("lambda=2"),
                    "--set 'lambda=2': expected section.key=value");
  CHECK_THROWS_WITH(config.apply_override("damping.lambda"),
                    "--set 'damping.lambda': expected section.key=value");
  CHECK_THROWS_WITH(config.apply_override(".x=1"), "--set '.x=1': expected section.key=value");
  fs::remove(file);
}

TEST_CASE("values set in code count as the file's", "[config]") {
  quadra::Config config;
  config.set(" train.max_steps ", " 5 ");
  config.set("train.max_steps", "6");
  CHECK(config.get("train.max_steps") == "6");
  CHECK(config.entries().at("train.max_steps").source == quadra::Config::Source::kFile);
  CHECK_THROWS_WITH(config.set("max_steps", "1"), "config key 'max_steps': expected section.key");
  CHECK_THROWS_WITH(config.set("train.", "1"), "config key 'train.': expected section.key");
  CHECK_THROWS_WITH(config.check_known({}, {"model"}),
                    Catch::Matchers::StartsWith("unknown config key 'train.max_steps'; valid"));
}

TEST_CASE("bad config files are refused with the file named", "[config]") {
  SECTION("missing file") {
    CHECK_THROWS_WITH(quadra::Config::from_file("/nonexistent/run.ini"),
                      "config file \"/nonexistent/run.ini\": cannot be opened: No such file or "
                      "directory");
  }
  SECTION("not a regular file") {
    CHECK_THROWS_WITH(quadra::Config::from_file("/"),
                      "config file \"/\": cannot be opened: it is a directory; expected a regular "
                      "file");
  }
  SECTION("a key outside any section") {
    const fs::path file = write_ini("nosection", "lambda = 1\n");
    CHECK_THROWS_WITH(quadra::Config::from_file(file),
                      fmt::format("config file \"{}\": key 'lambda' is outside any [section]", file.string()));
    fs::remove(file);
  }
  SECTION("a key given twice") {
    const fs::path file = write_ini("twice", "[damping]\nlambda = 1\nlambda = 2\n");
    CHECK_THROWS_WITH(quadra::Config::from_file(file),
                      fmt::format("config file \"{}\": key 'damping.lambda' is given twice", file.string()));
    fs::remove(file);
  }
  SECTION("a line that is not key = value") {
    const fs::path file = write_ini("syntax", "[damping]\nthis is not a key value line\n");
    CHECK_THROWS_WITH(quadra::Config::from_file(file),
                      Contains(fmt::format("config file \"{}\"", file.string())) &&
                          Contains("this is not a key value line"));
    fs::remove(file);
  }
}

TEST_CASE("unknown keys are errors listing the valid ones", "[config]") {
  quadra::Config config;
  config.apply_override("optimizer.damping=constant");
  config.apply_override("damping.lambda=1");
  CHECK_NOTHROW(config.check_known(quadra::optimizer_config_keys(), quadra::optimizer_config_sections()));
  config.apply_override("optimizer.dampng=constant");
  CHECK_THROWS_WITH(
      config.check_known(quadra::optimizer_config_keys(), quadra::optimizer_config_sections()),
      "unknown config key 'optimizer.dampng' (from --set); valid keys: optimizer.curvature, "
      "optimizer.damping, optimizer.debiasing, optimizer.solver, curvature.*, damping.*, "
      "debiasing.*, solver.*");
}

TEST_CASE("an optimizer spec resolves plugins and validates their options", "[config]") {
  quadra::PluginHost host;
  REQUIRE(host.load_path(BUILTIN_PLUGIN_DIR).is_ok());
  quadra::Config config;
  config.apply_override("optimizer.damping=constant");
  config.apply_override("optimizer.debiasing=same-batch");

  SECTION("valid: defaults filled, given values kept") {
    config.apply_override("damping.lambda=0.5");
    const quadra::OptimizerSpec spec = quadra::resolve_optimizer(config, host);
    REQUIRE(spec.choice(quadra::PluginKind::kDamping).has_value());
    CHECK(spec.choice(quadra::PluginKind::kDamping)->values.get_real("lambda") == 0.5);
    CHECK_FALSE(spec.choice(quadra::PluginKind::kDamping)->values.get_bool("reject_uphill"));
    CHECK_FALSE(spec.choice(quadra::PluginKind::kSolver).has_value());
    CHECK(quadra::format_optimizer(spec) ==
          "[optimizer]\ndamping = constant\ndebiasing = same-batch\n\n"
          "[damping]  # constant 1.0.0 from libquadra_damping_constant.so\n"
          "lambda = 0.5\nreject_uphill = false  # default\n\n"
          "[debiasing]  # same-batch 1.0.0 from libquadra_debiasing_same_batch.so\n"
          "curvature_size = 1  # default\n");
  }
  SECTION("unknown plugin") {
    config.apply_override("optimizer.damping=levenberg");
    CHECK_THROWS_WITH(quadra::resolve_optimizer(config, host),
                      "optimizer.damping: unknown damping plugin 'levenberg'; available: constant, levenberg-marquardt, trust-region");
  }
  SECTION("options for a kind with no plugin chosen") {
    config.apply_override("solver.iterations=5");
    CHECK_THROWS_WITH(quadra::resolve_optimizer(config, host),
                      "config section [solver] sets 'iterations', but no solver plugin is chosen; "
                      "set optimizer.solver = NAME");
  }
  SECTION("invalid option value") {
    config.apply_override("damping.lambda=-1");
    CHECK_THROWS_WITH(quadra::resolve_optimizer(config, host),
                      "option 'lambda' of damping 'constant' (config section [damping]): -1 is "
                      "outside the allowed range [0, 1e+12]");
  }
}
