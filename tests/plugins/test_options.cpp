// Option schemas: parsing text values, defaults, validation messages, schema checks, formatting.

#include <catch2/catch.hpp>

#include <quadra/option_parsing.hpp>

using quadra::OptionSpec;

namespace {

const quadra::OptionSchema kSchema = {
    OptionSpec::real("lambda", 1e-3, "damping").at_least(0.0),
    OptionSpec::integer("iterations", 50, "cap").in_range(1, 1000),
    OptionSpec::boolean("nesterov", false, "flag"),
    OptionSpec::choice("form", "diagonal", {"diagonal", "projected"}, "form"),
    OptionSpec::string("tag", "", "free text"),
};

std::string error_of(const quadra::RawOptions& raw) {
  auto r = quadra::parse_options(kSchema, raw, "solver 'x'");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == quadra::StatusCode::kInvalidArgument);
  return r.status().message();
}

}  // namespace

TEST_CASE("defaults fill every option not given", "[options]") {
  auto r = quadra::parse_options(kSchema, {}, "solver 'x'");
  REQUIRE(r.is_ok());
  const quadra::OptionValues& v = r.value();
  CHECK(v.get_real("lambda") == 1e-3);
  CHECK(v.get_int("iterations") == 50);
  CHECK_FALSE(v.get_bool("nesterov"));
  CHECK(v.get_string("form") == "diagonal");
  CHECK(v.get_string("tag").empty());
  CHECK(v.entries().size() == kSchema.size());
}

TEST_CASE("text values parse to their declared types", "[options]") {
  auto r = quadra::parse_options(
      kSchema,
      {{"lambda", " 2.5e-2 "}, {"iterations", "7"}, {"nesterov", "Yes"}, {"form", "projected"},
       {"tag", "run 1"}},
      "solver 'x'");
  REQUIRE(r.is_ok());
  CHECK(r.value().get_real("lambda") == 2.5e-2);
  CHECK(r.value().get_int("iterations") == 7);
  CHECK(r.value().get_bool("nesterov"));
  CHECK(r.value().get_string("form") == "projected");
  CHECK(r.value().get_string("tag") == "run 1");
  for (const char* text : {"true", "1", "on", "yes"}) {
    CHECK(quadra::parse_options(kSchema, {{"nesterov", text}}, "s").value().get_bool("nesterov"));
  }
  for (const char* text : {"false", "0", "off", "no"}) {
    CHECK_FALSE(quadra::parse_options(kSchema, {{"nesterov", text}}, "s").value().get_bool("nesterov"));
  }
}

TEST_CASE("every bad value gets one message naming option, value and expectation", "[options]") {
  CHECK(error_of({{"lamda", "1"}}) ==
        "unknown option 'lamda' for solver 'x'; valid options: lambda, iterations, nesterov, form, tag");
  CHECK(error_of({{"lambda", "abc"}}) ==
        "option 'lambda' of solver 'x': expected a real number, found 'abc'");
  CHECK(error_of({{"lambda", "1e-3x"}}) ==
        "option 'lambda' of solver 'x': expected a real number, found '1e-3x'");
  CHECK(error_of({{"lambda", "nan"}}) ==
        "option 'lambda' of solver 'x': expected a finite real number, found 'nan'");
  CHECK(error_of({{"lambda", "-inf"}}) ==
        "option 'lambda' of solver 'x': expected a finite real number, found '-inf'");
  CHECK(error_of({{"lambda", "1e999"}}) ==
        "option 'lambda' of solver 'x': expected a finite real number, found '1e999'");
  CHECK(error_of({{"lambda", "-0.5"}}) ==
        "option 'lambda' of solver 'x': -0.5 is outside the allowed range [0, inf)");
  CHECK(error_of({{"lambda", ""}}) == "option 'lambda' of solver 'x': expected a real number, found ''");
  CHECK(error_of({{"iterations", "3.0"}}) ==
        "option 'iterations' of solver 'x': expected an integer, found '3.0'");
  CHECK(error_of({{"iterations", "99999999999999999999"}}) ==
        "option 'iterations' of solver 'x': expected an integer, found '99999999999999999999'");
  CHECK(error_of({{"iterations", "0"}}) ==
        "option 'iterations' of solver 'x': 0 is outside the allowed range [1, 1000]");
  CHECK(error_of({{"nesterov", "maybe"}}) ==
        "option 'nesterov' of solver 'x': expected a boolean (true/false, yes/no, on/off, 1/0), "
        "found 'maybe'");
  CHECK(error_of({{"form", "full"}}) ==
        "option 'form' of solver 'x': 'full' is not one of: diagonal, projected");
}

TEST_CASE("typed access to an undeclared or mistyped option is a plugin bug", "[options]") {
  const quadra::OptionValues v = quadra::parse_options(kSchema, {}, "s").value();
  CHECK_THROWS_WITH(v.get_real("missing"), "option 'missing' was not declared");
  CHECK_THROWS_WITH(v.get_real("iterations"), "option 'iterations' is not of type real");
}

TEST_CASE("schemas are checked when a plugin registers them", "[options]") {
  using quadra::check_schema;
  CHECK(check_schema(kSchema).is_ok());
  CHECK(check_schema({OptionSpec::real("a", 2.0, "").in_range(0, 1)}).message() ==
        "option 'a' default: 2 is outside the allowed range [0, 1]");
  CHECK(check_schema({OptionSpec::real("a", 1.0, ""), OptionSpec::integer("a", 1, "")}).message() ==
        "option 'a' is declared twice");
  CHECK(check_schema({OptionSpec::real("Bad", 1.0, "")}).message() ==
        "option name 'Bad' is invalid: expected lower-case letters, digits and '_'");
  CHECK(check_schema({OptionSpec::choice("c", "x", {}, "")}).message() ==
        "choice option 'c' has no choices");
  CHECK(check_schema({OptionSpec::choice("c", "z", {"x", "y"}, "")}).message() ==
        "option 'c' default: 'z' is not one of: x, y");
  CHECK(check_schema({OptionSpec::boolean("b", true, "").at_least(0)}).message() ==
        "option 'b' of type bool cannot have a range");
  OptionSpec mistyped = OptionSpec::real("r", 1.0, "");
  mistyped.default_value = std::int64_t{1};
  CHECK(check_schema({mistyped}).message() == "option 'r' default is not of the declared type real");
}

TEST_CASE("values and constraints format as a user would write them", "[options]") {
  CHECK(quadra::format_value(1e-3) == "0.001");
  CHECK(quadra::format_value(1e12) == "1e+12");
  CHECK(quadra::format_value(std::int64_t{-3}) == "-3");
  CHECK(quadra::format_value(true) == "true");
  CHECK(quadra::format_value(std::string("relu")) == "relu");
  CHECK(quadra::format_constraint(OptionSpec::real("a", 1, "").in_range(0, 1)) == "[0, 1]");
  CHECK(quadra::format_constraint(OptionSpec::real("a", 1, "").greater_than(0)) == "(0, inf)");
  CHECK(quadra::format_constraint(OptionSpec::real("a", 1, "").at_most(2)) == "(-inf, 2]");
  CHECK(quadra::format_constraint(OptionSpec::real("a", 1, "")).empty());
  CHECK(quadra::format_constraint(OptionSpec::choice("c", "x", {"x", "y"}, "")) == "one of: x, y");
}
