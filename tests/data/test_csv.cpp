// CSV data sets: header detection, label columns, text labels, regression, quoting, errors.

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>

#include "data_test_util.hpp"

using Catch::Contains;
using quadra::data::CsvHeader;
using quadra::data::CsvOptions;
using quadra::data::parse_csv;
using quadra::data::Task;

TEST_CASE("CSV with a header, label by default the last column", "[data][csv]") {
  const std::string text = "x1,x2,label\n1,2,0\n3.5,-4e-1,1\n\n  5 , 6 ,2\r\n";
  const auto d = parse_csv(text, "a.csv", {}, "csv/train");
  CHECK(d.sample_shape == std::vector<std::int64_t>{2});
  CHECK(d.size() == 3);
  CHECK(d.features == std::vector<float>{1, 2, 3.5f, -0.4f, 5, 6});
  CHECK(d.labels == std::vector<std::int64_t>{0, 1, 2});
  CHECK(d.num_classes == 3);
  CHECK(d.class_names.empty());
  d.validate();
}

TEST_CASE("CSV label column by name, index and negative index", "[data][csv]") {
  const std::string text = "species,a,b\n1,0.5,0.25\n0,1.5,2.5\n";
  CsvOptions by_name;
  by_name.label = "species";
  const auto d = parse_csv(text, "b.csv", by_name, "n");
  CHECK(d.labels == std::vector<std::int64_t>{1, 0});
  CHECK(d.features == std::vector<float>{0.5f, 0.25f, 1.5f, 2.5f});
  CsvOptions by_index;
  by_index.label = "0";
  CHECK(parse_csv(text, "b.csv", by_index, "i").features == d.features);
  CsvOptions from_end;
  from_end.label = "-3";
  CHECK(parse_csv(text, "b.csv", from_end, "e").labels == d.labels);
}

TEST_CASE("CSV header detection", "[data][csv]") {
  SECTION("no header: the first row is data") {
    const auto d = parse_csv("1,2,0\n3,4,1\n", "n.csv", {}, "n");
    CHECK(d.size() == 2);
  }
  SECTION("text labels do not make a header") {
    const auto d = parse_csv("5.1,3.5,setosa\n6.2,2.9,versicolor\n4.9,3.0, setosa\n", "iris.csv", {}, "n");
    CHECK(d.size() == 3);
    CHECK(d.class_names == std::vector<std::string>{"setosa", "versicolor"});
    CHECK(d.labels == std::vector<std::int64_t>{0, 1, 0});
    CHECK(d.num_classes == 2);
  }
  SECTION("header=yes with a numeric-looking header") {
    CsvOptions o;
    o.header = CsvHeader::kYes;
    const auto d = parse_csv("1,2,3\n4,5,1\n", "y.csv", o, "y");
    CHECK(d.size() == 1);
    CHECK(d.labels == std::vector<std::int64_t>{1});
  }
  SECTION("quoted fields") {
    const auto d = parse_csv("\"x, first\",\"y\"\"\",\"label\"\n\"1.5\", 2 ,\"1\"\n", "q.csv", {}, "q");
    CHECK(d.features == std::vector<float>{1.5f, 2});
    CHECK(d.labels == std::vector<std::int64_t>{1});
  }
  SECTION("a tab-free, semicolon-delimited file") {
    CsvOptions o;
    o.delimiter = ';';
    CHECK(parse_csv("a;b\n1;0\n", "s.csv", o, "s").features == std::vector<float>{1});
  }
}

TEST_CASE("CSV text labels of a test file map to the training classes", "[data][csv]") {
  const auto train = parse_csv("1,cat\n2,dog\n3,bird\n", "train.csv", {}, "train");
  CHECK(train.class_names == std::vector<std::string>{"bird", "cat", "dog"});
  CsvOptions o;
  o.class_names = train.class_names;
  const auto test = parse_csv("4,dog\n5,dog\n", "test.csv", o, "test");
  CHECK(test.labels == std::vector<std::int64_t>{2, 2});
  CHECK(test.num_classes == 3);
  REQUIRE_THROWS_WITH(parse_csv("4,dog\n5,fish\n", "test.csv", o, "test"),
                      Contains("test.csv: line 2, column 2: label 'fish' is not one of the 3 training "
                               "classes: bird, cat, dog"));
}

TEST_CASE("CSV regression targets", "[data][csv]") {
  CsvOptions o;
  o.task = Task::kRegression;
  o.label = "y";
  const auto d = parse_csv("x,y\n0,0.5\n1,-1.25\n", "r.csv", o, "r");
  CHECK(d.task == Task::kRegression);
  CHECK(d.target_dim == 1);
  CHECK(d.targets == std::vector<float>{0.5f, -1.25f});
  CHECK(d.labels.empty());
  d.validate();
  REQUIRE_THROWS_WITH(parse_csv("x,y\n0,abc\n", "r.csv", o, "r"),
                      Contains("r.csv: line 2, column 2 ('y'): target 'abc' is not a number"));
}

TEST_CASE("CSV files, gzip-compressed or not", "[data][csv]") {
  quadra::test::ScratchDir dir("csv");
  const std::string text = "a,b\n1,1\n2,0\n";
  const auto plain = quadra::data::load_csv(dir.write("p.csv", text), {}, "p");
  const auto gz = quadra::data::load_csv(dir.write("p.csv.gz", quadra::test::gzip(text)), {}, "g");
  CHECK(plain.features == gz.features);
  CHECK(plain.labels == gz.labels);
  const auto missing = dir.path() / "missing.csv";
  REQUIRE_THROWS_WITH(quadra::data::load_csv(missing, {}, "m"),
                      Contains("cannot read " + missing.string() + ": No such file or directory"));
  dir.write("bad.csv", "a,b\n1,1\nx,0\n");
  REQUIRE_THROWS_WITH(quadra::data::load_csv(dir.path() / "bad.csv", {}, "b"),
                      Contains((dir.path() / "bad.csv").string() +
                               ": line 3, column 1 ('a'): 'x' is not a number"));
}

TEST_CASE("CSV errors name the file, line and column", "[data][csv][errors]") {
  SECTION("non-numeric cell") {
    REQUIRE_THROWS_WITH(parse_csv("h1,h2,y\n1,2,0\n3,four,1\n", "f.csv", {}, "x"),
                        Contains("f.csv: line 3, column 2 ('h2'): 'four' is not a number"));
    REQUIRE_THROWS_WITH(parse_csv("1,2,0\n3,,1\n", "f.csv", {}, "x"),
                        Contains("f.csv: line 2, column 2: '' is not a number"));
  }
  SECTION("ragged rows") {
    REQUIRE_THROWS_WITH(parse_csv("a,b,c\n1,2,0\n\n1,2\n", "r.csv", {}, "x"),
                        Contains("r.csv: line 4 has 2 fields, expected 3 (as on line 1)"));
    REQUIRE_THROWS_WITH(parse_csv("1,2,0\n1,2,3,4\n", "r.csv", {}, "x"),
                        Contains("r.csv: line 2 has 4 fields, expected 3 (as on line 1)"));
  }
  SECTION("NaN and Inf") {
    REQUIRE_THROWS_WITH(parse_csv("a,b,y\n1,nan,0\n", "n.csv", {}, "x"),
                        Contains("n.csv: line 2, column 2 ('b'): 'nan' is not finite; expected a "
                                 "finite number"));
    REQUIRE_THROWS_WITH(parse_csv("a,b,y\n1,2,0\n-inf,2,0\n", "n.csv", {}, "x"),
                        Contains("n.csv: line 3, column 1 ('a'): '-inf' is not finite"));
    REQUIRE_THROWS_WITH(parse_csv("a,b,y\n1e39,2,0\n", "n.csv", {}, "x"),
                        Contains("n.csv: line 2, column 1 ('a'): '1e39' is not finite as float32"));
    REQUIRE_THROWS_WITH(parse_csv("a,b,y\n1e999,2,0\n", "n.csv", {}, "x"),
                        Contains("n.csv: line 2, column 1 ('a'): '1e999' is not finite"));
  }
  SECTION("bad labels") {
    REQUIRE_THROWS_WITH(parse_csv("a,y\n1,0\n2,1.5\n", "l.csv", {}, "x"),
                        Contains("l.csv: line 3, column 2 ('y'): label 1.5 is not a class index (an "
                                 "integer >= 0); use task=regression"));
    REQUIRE_THROWS_WITH(parse_csv("a,y\n1,-1\n", "l.csv", {}, "x"),
                        Contains("l.csv: line 2, column 2 ('y'): label -1 is not a class index"));
    CsvOptions o;
    o.label = "target";
    REQUIRE_THROWS_WITH(parse_csv("a,y\n1,0\n", "l.csv", o, "x"),
                        Contains("l.csv: no column named 'target' in the header on line 1; columns: a, y"));
    o.label = "5";
    REQUIRE_THROWS_WITH(parse_csv("a,y\n1,0\n", "l.csv", o, "x"),
                        Contains("l.csv: label column 5 is out of range: the file has 2 columns"));
    o.label = "target";
    o.header = CsvHeader::kNo;
    REQUIRE_THROWS_WITH(parse_csv("1,0\n", "l.csv", o, "x"),
                        Contains("l.csv: the label column 'target' is a name, but the file has no header"));
  }
  SECTION("empty files and shapes") {
    REQUIRE_THROWS_WITH(parse_csv("", "e.csv", {}, "x"), Contains("e.csv: no data: the file is empty"));
    REQUIRE_THROWS_WITH(parse_csv("\n \n", "e.csv", {}, "x"), Contains("e.csv: no data"));
    REQUIRE_THROWS_WITH(parse_csv("a,y\n", "h.csv", {}, "x"),
                        Contains("h.csv: no data rows after the header on line 1"));
    REQUIRE_THROWS_WITH(parse_csv("\n0\n1\n", "one.csv", {}, "x"),
                        Contains("one.csv: line 2 has 1 column; expected at least one feature column "
                                 "and a label column"));
  }
  SECTION("quoting mistakes") {
    REQUIRE_THROWS_WITH(parse_csv("a,y\n\"1,0\n", "q.csv", {}, "x"),
                        Contains("q.csv: line 2, column 1: unterminated quoted field"));
    REQUIRE_THROWS_WITH(parse_csv("a,y\n\"1\"x,0\n", "q.csv", {}, "x"),
                        Contains("q.csv: line 2, column 1: text after the closing quote"));
  }
}

TEST_CASE("CSV header=auto never takes a data row for a header", "[data][csv][errors]") {
  SECTION("a first row of numbers with one bad cell is data, and the cell an error") {
    REQUIRE_THROWS_WITH(parse_csv("1,x,0\n3,4,1\n", "d.csv", {}, "x"),
                        "d.csv: line 1, column 2: 'x' is not a number; expected a number "
                        "(header=auto takes the first line as a header only when none of its cells "
                        "is a number; if it is a header, use header=yes)");
    REQUIRE_THROWS_WITH(parse_csv("5.1,NA,1.4,0\n6,2,1,1\n", "t.csv", {}, "x"),
                        Contains("t.csv: line 1, column 2: 'NA' is not a number"));
    // Text labels stay labels: the row has numbers, so it is data.
    CHECK(parse_csv("5.1,3.5,setosa\n", "t.csv", {}, "x").size() == 1);
  }
  SECTION("a first row without numbers is a header") {
    const auto d = parse_csv("a,b,label\n1,2,0\n", "h.csv", {}, "x");
    CHECK(d.size() == 1);
    // Blank header cells (pandas' unnamed index column) are not numbers either.
    CHECK(parse_csv(",b,label\n1,2,0\n", "h.csv", {}, "x").size() == 1);
  }
  SECTION("a header with a numeric name needs header=yes") {
    REQUIRE_THROWS_WITH(parse_csv("x,2020,y\n1,2,0\n", "n.csv", {}, "x"),
                        Contains("n.csv: line 1, column 1: 'x' is not a number; expected a number "
                                 "(header=auto"));
    CsvOptions o;
    o.header = CsvHeader::kYes;
    CHECK(parse_csv("x,2020,y\n1,2,0\n", "n.csv", o, "x").size() == 1);
  }
  SECTION("later rows are reported without the hint") {
    REQUIRE_THROWS_WITH(parse_csv("1,2,0\n3,x,1\n", "l.csv", {}, "x"),
                        "l.csv: line 2, column 2: 'x' is not a number; expected a number");
  }
}

TEST_CASE("CSV class counts are capped", "[data][csv][errors]") {
  REQUIRE_THROWS_WITH(parse_csv("a,y\n1,0\n2,1e9\n", "c.csv", {}, "x"),
                      "c.csv: line 3, column 2 ('y'): label 1000000000 is not a class index below "
                      "100000 (labels must be class indices 0..C-1 of at most 100000 classes); is "
                      "this a regression target? use task=regression");
  std::string many = "a,y\n";
  for (int i = 0; i <= 100000; ++i) many += "1,c" + std::to_string(i) + "\n";
  REQUIRE_THROWS_WITH(parse_csv(many, "m.csv", {}, "x"),
                      "m.csv: column 2 ('y') holds 100001 distinct text labels; expected at most "
                      "100000 classes; is this a regression target? use task=regression");
}

TEST_CASE("CSV files must be regular files", "[data][csv][errors]") {
  quadra::test::ScratchDir dir("csv_fifo");
  const auto fifo = dir.path() / "fifo.csv";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  REQUIRE_THROWS_WITH(
      quadra::data::load_csv(fifo, {}, "f"),
      "cannot read " + fifo.string() + ": it is a FIFO (named pipe); expected a regular file");
  REQUIRE_THROWS_WITH(quadra::data::load_csv("/dev/zero", {}, "z"),
                      "cannot read /dev/zero: it is a character device; expected a regular file");
}
