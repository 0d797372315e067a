// See figures.hpp.

#include "figures.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <quadra/error.hpp>
#include <quadra/io/atomic_file.hpp>
#include <sstream>

namespace quadra::cli {

namespace fs = std::filesystem;

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (const char c : text + " ") {
    if (c == ' ' || c == ',' || c == '\t') {
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  return out;
}

namespace {

bool on_path(const char* program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((fs::path(dir) / program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

/// `text` as one word for sh -c.
std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

bool render_figure(const fs::path& dir, const std::string& name, const std::string& script,
                   const std::string& prefix) {
  if (!on_path("gnuplot")) {
    std::cout << fmt::format("{}install gnuplot to render {}.png\n", prefix, name);
    return false;
  }
  io::write_file_atomically(dir / (name + ".gp"), script);
  const std::string command = fmt::format("cd {} && gnuplot {} 2>{}", shell_quote(dir.string()),
                                          shell_quote(name + ".gp"), shell_quote(name + ".log"));
  if (std::system(command.c_str()) != 0) {
    std::cerr << fmt::format("quadra: gnuplot failed; see {}\n", (dir / (name + ".log")).string());
    return false;
  }
  return true;
}

std::string gnuplot_quote(const std::string& text) {
  // Double quotes: the only gnuplot strings in which "\n" breaks a line.
  std::string out = "\"";
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
  }
  return out + "\"";
}

std::string figure_preamble(const std::string& png, int width, int height) {
  return fmt::format(
      "reset\nset encoding utf8\n"
      "set terminal pngcairo size {},{} font 'Sans,11' noenhanced\nset output {}\n"
      "set border lc rgb '#555555'\nset grid lc rgb '#d8d8d8' lw 1 dt 1\nset tics nomirror\n",
      width, height, gnuplot_quote(png));
}

std::string palette_color(std::size_t index, double alpha) {
  // Okabe and Ito's colour-blind-safe set without its yellow (unreadable on white), then
  // Tableau's brown, grey and olive.
  static constexpr const char* kColors[] = {"0072B2", "D55E00", "009E73", "CC79A7", "E69F00",
                                            "56B4E9", "000000", "8C564B", "7F7F7F", "BCBD22"};
  const char* rgb = kColors[index % std::size(kColors)];
  const double a = std::clamp(alpha, 0.0, 1.0);
  if (a >= 1.0) return fmt::format("#{}", rgb);
  // gnuplot's alpha byte is transparency: 00 opaque, FF invisible.
  return fmt::format("#{:02X}{}", static_cast<int>(std::lround((1.0 - a) * 255.0)), rgb);
}

std::pair<double, std::string> time_unit(double max_seconds) {
  if (max_seconds < 1.0) return {1000.0, "ms"};
  if (max_seconds > 600.0) return {1.0 / 60.0, "min"};
  return {1.0, "s"};
}

PlotLine mean_line(const std::vector<const PlotLine*>& lines) {
  PlotLine mean;
  if (lines.empty()) return mean;
  std::size_t points = std::numeric_limits<std::size_t>::max();
  for (const PlotLine* line : lines) points = std::min(points, line->x.size());
  for (std::size_t i = 0; i < points; ++i) {
    double x = 0, y = 0;
    for (const PlotLine* line : lines) {
      x += line->x[i];
      y += line->y[i];
    }
    mean.x.push_back(x / static_cast<double>(lines.size()));
    mean.y.push_back(y / static_cast<double>(lines.size()));
  }
  return mean;
}

namespace {

constexpr int kWidth = 1000;
constexpr int kHeight = 620;
// Above this many points a bold line has no markers: they would merge into a thicker line.
constexpr std::size_t kMaxMarkers = 40;
// Lines whose x extents differ by more than this factor (steps of SGD against steps of CG under
// one time budget) get a logarithmic x axis: on a linear one the shorter runs are squeezed
// against the y axis.
constexpr double kLogXSpread = 20.0;

/// One axis: its range and whether it is logarithmic; maps data to [0, 1] across the plot.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  [[nodiscard]] double t(double v) const { return log ? std::log(v) : v; }
  [[nodiscard]] double unit(double v) const { return (t(v) - t(lo)) / (t(hi) - t(lo)); }
};

double quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const auto i = static_cast<std::size_t>(pos);
  if (i + 1 >= values.size()) return values.back();
  return values[i] + (pos - static_cast<double>(i)) * (values[i + 1] - values[i]);
}

/// Points that can be drawn on these axes: finite, and positive on a log axis.
bool drawable(double x, double y, bool x_log, bool y_log) {
  return std::isfinite(x) && std::isfinite(y) && (!x_log || x > 0) && (!y_log || y > 0);
}

Axis x_axis(const LineFigure& f) {
  if (std::isfinite(f.x_min) && std::isfinite(f.x_max) && f.x_max > f.x_min) {
    return {f.x_min, f.x_max, false};
  }
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  double min_extent = std::numeric_limits<double>::infinity();
  double min_positive = std::numeric_limits<double>::infinity();
  for (const PlotLine& line : f.lines) {
    double line_hi = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < line.x.size(); ++i) {
      if (!drawable(line.x[i], line.y[i], false, false)) continue;
      lo = std::min(lo, line.x[i]);
      hi = std::max(hi, line.x[i]);
      line_hi = std::max(line_hi, line.x[i]);
      if (line.x[i] > 0) min_positive = std::min(min_positive, line.x[i]);
    }
    if (line_hi > 0) min_extent = std::min(min_extent, line_hi);
  }
  // Steps and seconds count from the start of a run: a linear axis starts there too.
  Axis axis{lo >= 0 ? 0.0 : lo, hi, false};
  if (lo >= 0 && std::isfinite(min_extent) && hi > kLogXSpread * min_extent && min_positive < hi) {
    axis = {min_positive, hi, true};
  }
  if (!(axis.hi > axis.lo)) axis.hi = axis.lo + 1;
  return axis;
}

/// The y range (see YAxis), and a note saying what it cuts off, if anything.
struct YRange {
  Axis axis;
  std::string note;
};

/// The values of a figure's lines that decide its y range.
struct YValues {
  std::vector<double> all;                 ///< every drawable value
  std::vector<std::vector<double>> later;  ///< per line: past the first fifth of its x extent
  std::vector<double> bests;               ///< per line: its best value
  bool positive = true;
};

YValues y_values(const LineFigure& f, const Axis& x) {
  const bool lower_better = f.y_axis == YAxis::kLowerIsBetter;
  YValues v;
  for (const PlotLine& line : f.lines) {
    if (!line.sets_range) continue;
    std::vector<double> xs, ys;
    for (std::size_t i = 0; i < line.x.size(); ++i) {
      if (!drawable(line.x[i], line.y[i], x.log, false)) continue;
      xs.push_back(x.t(line.x[i]));
      ys.push_back(line.y[i]);
    }
    if (xs.empty()) continue;
    const double from = xs.front() + 0.2 * (xs.back() - xs.front());
    v.later.emplace_back();
    for (std::size_t i = 0; i < xs.size(); ++i) {
      v.all.push_back(ys[i]);
      v.positive = v.positive && ys[i] > 0;
      if (xs[i] >= from) v.later.back().push_back(ys[i]);
    }
    v.bests.push_back(lower_better ? *std::min_element(ys.begin(), ys.end())
                                   : *std::max_element(ys.begin(), ys.end()));
  }
  return v;
}

/// The worst of `values` (the largest when lower is better) inside Tukey's far-out fence:
/// what an outlier does not decide. Fewer than four values have no outliers.
double worst_inside_fence(std::vector<double> values, bool lower_better) {
  std::sort(values.begin(), values.end());
  if (!lower_better) {
    for (double& v : values) v = -v;
    std::reverse(values.begin(), values.end());
  }
  double worst = values.back();
  if (values.size() >= 4) {
    const double q1 = quantile(values, 0.25), q3 = quantile(values, 0.75);
    const double fence = q3 + 3.0 * (q3 - q1);
    worst = values.front();
    for (double v : values) {
      if (v <= fence) worst = v;
    }
  }
  return lower_better ? worst : -worst;
}

/// The range of `v` on an axis that is logarithmic or not: from the best value to the worst
/// later value of the lines, so that the first evaluations of a run (often several times the
/// final loss) do not squeeze the rest into a strip. Outliers do not decide it, neither within
/// a line (a spike) nor among lines (a run that diverges), but every line's best value stays
/// in the plot: a run that learns nothing is still seen.
YRange y_range(const YValues& v, bool lower_better, bool log) {
  YRange r;
  r.axis.log = log;
  const Axis& a = r.axis;
  std::vector<double> line_worst;
  for (const std::vector<double>& later : v.later) {
    if (later.empty()) continue;
    std::vector<double> t;
    for (double value : later) t.push_back(a.t(value));
    line_worst.push_back(worst_inside_fence(t, lower_better));
  }
  const double t_min = a.t(*std::min_element(v.all.begin(), v.all.end()));
  const double t_max = a.t(*std::max_element(v.all.begin(), v.all.end()));
  double lo = t_min, hi = t_max;
  if (lower_better) {
    hi = worst_inside_fence(line_worst, true);
    for (double b : v.bests) hi = std::max(hi, a.t(b));
    hi = std::min(hi, t_max);
  } else {
    lo = worst_inside_fence(line_worst, false);
    for (double b : v.bests) lo = std::min(lo, a.t(b));
    lo = std::max(lo, t_min);
  }
  // Not narrower than a tenth of the whole range: where the later evaluations hardly differ
  // (an accuracy that stays at 89 %), the end of the climb towards them is worth seeing.
  const double min_span = 0.1 * (t_max - t_min);
  if (hi - lo < min_span) {
    if (lower_better) {
      hi = std::min(t_max, lo + min_span);
    } else {
      lo = std::max(t_min, hi - min_span);
    }
  }
  const auto value = [&](double t) { return a.log ? std::exp(t) : t; };
  double span = hi - lo;
  if (!(span > 0)) span = std::max(std::abs(hi) * 0.1, 1e-12);
  const bool cut_off = lower_better ? hi < t_max - 0.01 * span : lo > t_min + 0.01 * span;
  if (cut_off) {
    r.note = lower_better ? fmt::format("higher values, up to {:.4g}, are cut off", value(t_max))
                          : fmt::format("lower values, down to {:.4g}, are cut off", value(t_min));
  }
  // Room at both ends: a line along the border is hard to follow.
  r.axis.lo = value(lo - 0.04 * span);
  r.axis.hi = value(hi + 0.06 * span);
  return r;
}

/// Every value, on a log axis (when allowed) where all are positive and span more than a factor
/// of 3.
YRange full_y_range(const YValues& v, bool log_allowed) {
  YRange r;
  const double lo = *std::min_element(v.all.begin(), v.all.end());
  const double hi = *std::max_element(v.all.begin(), v.all.end());
  r.axis.log = log_allowed && lo > 0 && hi > 3.0 * lo;
  const double t_lo = r.axis.t(lo), t_hi = r.axis.t(hi);
  double span = t_hi - t_lo;
  if (!(span > 0)) span = std::max(std::abs(t_hi) * 0.1, 1e-12);
  const auto value = [&](double t) { return r.axis.log ? std::exp(t) : t; };
  r.axis.lo = value(t_lo - 0.05 * span);
  r.axis.hi = value(t_hi + 0.05 * span);
  return r;
}

YRange y_axis(const LineFigure& f, const Axis& x) {
  const bool lower_better = f.y_axis == YAxis::kLowerIsBetter;
  const YValues v = y_values(f, x);
  if (v.all.empty()) return {};  // nothing to draw on these axes; gnuplot's default range
  if (f.y_axis == YAxis::kFull) return full_y_range(v, f.y_log);
  if (lower_better && v.positive && f.y_log) {
    // Logarithmic only where it helps: across less than a factor of 3 it is nearly linear,
    // and gnuplot's log tics would leave such an axis all but unlabelled.
    YRange log = y_range(v, lower_better, true);
    if (log.axis.hi > 3.0 * log.axis.lo) return log;
  }
  return y_range(v, lower_better, false);
}

/// Where the legend goes, as gnuplot's "at graph X, graph Y left top": the box, among a grid
/// of positions inside the plot, that the lines cross least (bold lines count thrice); between
/// boxes crossed equally, the one nearest a corner.
std::string key_position(const LineFigure& f, const Axis& x, const Axis& y, int width, int height) {
  std::size_t rows = f.key_title.empty() ? 0 : 1;
  std::size_t chars = f.key_title.size();
  for (const PlotLine& line : f.lines) {
    if (line.title.empty()) continue;
    ++rows;
    chars = std::max(chars, line.title.size() + 5);  // the sample line and spacing
  }
  if (rows == 0) return "";
  // The plot area is the figure less about 120 x 150 pixels of margins, labels and title; 11-point
  // text takes up to 9 pixels a character and 19 a row, and the box has a margin. Over-estimated:
  // a box that reaches past the border would cover the axis.
  const double area_w = std::max(100, width - 120), area_h = std::max(100, height - 150);
  const double w = std::min(0.95, (static_cast<double>(chars) * 9.0 + 30) / area_w);
  const double h = std::min(0.95, (static_cast<double>(rows) * 19.0 + 10) / area_h);
  constexpr double kInset = 0.012;  // off the border, so that the frame stays visible
  constexpr int kSteps = 10;
  struct Box {
    double x0, y0;  // bottom left, in units of the plot
    double crossings = 0;
  };
  std::vector<Box> boxes;
  for (int i = 0; i <= kSteps; ++i) {
    for (int j = 0; j <= kSteps; ++j) {
      boxes.push_back(
          {kInset + (1 - w - 2 * kInset) * i / kSteps, kInset + (1 - h - 2 * kInset) * j / kSteps});
    }
  }
  for (const PlotLine& line : f.lines) {
    const double weight = line.style == PlotLine::Style::kBold ? 3.0 : 1.0;
    bool first = true;
    double px = 0, py = 0;
    for (std::size_t i = 0; i < line.x.size(); ++i) {
      if (!drawable(line.x[i], line.y[i], x.log, y.log)) continue;
      const double ux = x.unit(line.x[i]), uy = y.unit(line.y[i]);
      // Samples along the segment from the previous point, about every 0.4 % of the plot.
      const int samples =
          first ? 1 : std::clamp(static_cast<int>(std::hypot(ux - px, uy - py) / 0.004), 1, 250);
      for (int k = 1; k <= samples; ++k) {
        const double t = static_cast<double>(k) / samples;
        const double sx = first ? ux : px + t * (ux - px);
        const double sy = first ? uy : py + t * (uy - py);
        if (sx < 0 || sx > 1 || sy < 0 || sy > 1) continue;
        for (Box& b : boxes) {
          if (sx >= b.x0 && sx <= b.x0 + w && sy >= b.y0 && sy <= b.y0 + h) b.crossings += weight;
        }
      }
      first = false;
      px = ux;
      py = uy;
    }
  }
  const auto corner_distance = [&](const Box& b) {
    const double dx = std::min(b.x0, 1 - w - b.x0), dy = std::min(b.y0, 1 - h - b.y0);
    return std::hypot(std::max(dx - kInset, 0.0), std::max(dy - kInset, 0.0));
  };
  // Below one sample of a thin line: a corner never wins over a box no line crosses.
  const auto score = [&](const Box& b) { return b.crossings + 0.9 * corner_distance(b); };
  const Box& best = *std::min_element(
      boxes.begin(), boxes.end(), [&](const Box& a, const Box& b) { return score(a) < score(b); });
  return fmt::format("at graph {:.3f}, graph {:.3f} left top", best.x0, best.y0 + h);
}

/// The tics of a log axis that spans less than a few decades: gnuplot's default puts a tic at
/// every power of ten only, so a range such as 0.25 to 0.6 would have none.
std::string log_tics(const Axis& a, const char* axis) {
  if (a.hi / a.lo > 1000) return "";
  std::string tics;
  const double decade = std::pow(10.0, std::floor(std::log10(a.lo)));
  for (double d = decade; d <= a.hi; d *= 10) {
    for (const double m : {1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0}) {
      if (a.hi / a.lo > 30 && m != 1 && m != 2 && m != 5) continue;
      if (a.hi / a.lo > 4 && (m == 1.5 || m == 7 || m == 9)) continue;
      const double v = m * d;
      if (v < a.lo || v > a.hi) continue;
      tics += fmt::format("{}{:g}", tics.empty() ? "" : ", ", v);
    }
  }
  if (tics.empty()) return "";
  return fmt::format("set {}tics ({})\nset m{}tics default\n", axis, tics, axis);
}

/// "loss (nats)" -> "loss (nats; log scale)", "step" -> "step (log scale)".
std::string log_scale_label(const std::string& label) {
  if (!label.empty() && label.back() == ')') {
    return label.substr(0, label.size() - 1) + "; log scale)";
  }
  return label + " (log scale)";
}

}  // namespace

std::string figure_settings(const LineFigure& f, int width, int height) {
  const Axis x = x_axis(f);
  const YRange y = y_axis(f, x);
  // Undo what the previous figure or panel of the same script set.
  std::string script =
      "unset logscale\nunset label\nset xtics autofreq\nset ytics autofreq\n"
      "set mxtics default\nset mytics default\n";
  script += fmt::format("set title {}\nset xlabel {}\nset ylabel {}\n", gnuplot_quote(f.title),
                        gnuplot_quote(x.log ? log_scale_label(f.x_label) : f.x_label),
                        gnuplot_quote(y.axis.log ? log_scale_label(f.y_label) : f.y_label));
  script += fmt::format("set xrange [{:.10g}:{:.10g}]\nset yrange [{:.10g}:{:.10g}]\n", x.lo, x.hi,
                        y.axis.lo, y.axis.hi);
  if (x.log) script += "set logscale x\n" + log_tics(x, "x");
  if (y.axis.log) script += "set logscale y\n" + log_tics(y.axis, "y");
  if (!y.note.empty()) {
    script += fmt::format(
        "set label 1 {} at graph 1, graph 1 right offset 0, char 0.6 font ',9' "
        "tc rgb '#666666'\n",
        gnuplot_quote(y.note));
  }
  const std::string where = key_position(f, x, y.axis, width, height);
  if (where.empty()) {
    script += "set key off\n";
  } else {
    script += fmt::format(
        "set key {} opaque box lc rgb '#bbbbbb' samplen 3 spacing 1.1 width 1 reverse Left{}\n",
        where, f.key_title.empty() ? "" : " title " + gnuplot_quote(f.key_title) + " left");
  }
  return script + f.settings;
}

std::string line_figures_script(const std::vector<LineFigure>& figures) {
  std::string script;
  std::size_t block = 0;
  for (const LineFigure& f : figures) {
    const Axis x = x_axis(f);
    const YRange y = y_axis(f, x);
    script += figure_preamble(f.png, kWidth, kHeight) + figure_settings(f, kWidth, kHeight);
    // Thin lines first, so that bold ones are drawn over them.
    std::string plots;
    for (const PlotLine::Style style :
         {PlotLine::Style::kThin, PlotLine::Style::kBold, PlotLine::Style::kMarker}) {
      for (const PlotLine& line : f.lines) {
        if (line.style != style) continue;
        std::string data;
        std::size_t points = 0;
        for (std::size_t i = 0; i < line.x.size(); ++i) {
          if (!drawable(line.x[i], line.y[i], x.log, y.axis.log)) continue;
          data += fmt::format("{:.10g} {:.10g}\n", line.x[i], line.y[i]);
          ++points;
        }
        if (points == 0) continue;
        script += fmt::format("$d{} << EOD\n{}EOD\n", block, data);
        const bool bold = style == PlotLine::Style::kBold;
        const std::string with =
            style == PlotLine::Style::kMarker
                ? fmt::format("points pt 6 ps 2.2 lw 2 lc rgb '{}'", palette_color(line.color))
            // Dense thin lines (a value per step) are a background band: fainter.
            : !bold ? fmt::format("lines lw 1 lc rgb '{}'",
                                  palette_color(line.color, points > 200 ? 0.3 : 0.45))
            : points <= kMaxMarkers
                ? fmt::format("linespoints lw 2.5 pt 7 ps 0.7 lc rgb '{}'",
                              palette_color(line.color))
                : fmt::format("lines lw 2.5 lc rgb '{}'", palette_color(line.color));
        plots += fmt::format("{}$d{} using 1:2 with {} {}", plots.empty() ? "" : ", \\\n     ",
                             block++, with,
                             line.title.empty() ? "notitle" : "title " + gnuplot_quote(line.title));
      }
    }
    script += "plot " + plots + "\n";
  }
  return script;
}

namespace {

bool has_point(const LineFigure& f) {
  for (const PlotLine& line : f.lines) {
    if (!line.sets_range) continue;
    for (std::size_t i = 0; i < line.x.size(); ++i) {
      if (drawable(line.x[i], line.y[i], false, false)) return true;
    }
  }
  return false;
}

}  // namespace

bool render_line_figures(const fs::path& dir, const std::string& name,
                         std::vector<LineFigure> figures, const std::string& prefix) {
  std::erase_if(figures, [](const LineFigure& f) { return !has_point(f); });
  if (figures.empty()) return false;
  std::vector<std::string> files;
  for (const LineFigure& f : figures) files.push_back(f.png);
  if (!on_path("gnuplot")) {
    std::cout << fmt::format("{}install gnuplot to draw {}\n", prefix, fmt::join(files, ", "));
    return false;
  }
  if (!render_figure(dir, name, line_figures_script(figures), prefix)) return false;
  std::cout << fmt::format("{}{} in {}\n", prefix, fmt::join(files, ", "), dir.string());
  return true;
}

namespace {

/// The numeric columns of a CSV file written by the training loop, by header name; empty
/// cells are NaN. Quoted cells (RFC 4180, e.g. a rejection note) are read and skipped.
std::map<std::string, std::vector<double>> read_csv_columns(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {}", file.string()));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::vector<std::string>> rows(1);
  std::string cell;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cell += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().push_back(std::move(cell));
      cell.clear();
    } else if (c == '\n') {
      rows.back().push_back(std::move(cell));
      cell.clear();
      rows.emplace_back();
    } else if (c != '\r') {
      cell += c;
    }
  }
  if (!cell.empty() || !rows.back().empty()) rows.back().push_back(cell);
  std::map<std::string, std::vector<double>> columns;
  if (rows.empty()) return columns;
  const std::vector<std::string>& header = rows.front();
  for (std::size_t r = 1; r < rows.size(); ++r) {
    if (rows[r].size() != header.size()) continue;  // the empty line after the last newline
    for (std::size_t c = 0; c < header.size(); ++c) {
      char* end = nullptr;
      const std::string& v = rows[r][c];
      double value = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0') value = std::numeric_limits<double>::quiet_NaN();
      columns[header[c]].push_back(value);
    }
  }
  return columns;
}

const std::vector<double>& column(const std::map<std::string, std::vector<double>>& table,
                                  const char* name, const fs::path& file) {
  const auto it = table.find(name);
  if (it == table.end()) throw Error(fmt::format("{} has no column '{}'", file.string(), name));
  return it->second;
}

}  // namespace

void render_run_figures(const fs::path& dir, const RunDescription& run, const std::string& prefix) {
  try {
    const fs::path eval_file = dir / "eval.csv", steps_file = dir / "steps.csv";
    const auto eval = read_csv_columns(eval_file);
    const auto steps = read_csv_columns(steps_file);
    const auto& eval_step = column(eval, "step", eval_file);
    if (eval_step.empty()) return;
    const auto& eval_seconds = column(eval, "seconds", eval_file);
    const auto& val_loss = column(eval, "val_loss", eval_file);
    const auto& val_accuracy = column(eval, "val_accuracy", eval_file);
    // The batch loss of each step (at its start, on its gradient batch), where it is finite.
    std::vector<double> step_index, step_seconds, step_loss;
    {
      const auto& index = column(steps, "step", steps_file);
      const auto& seconds = column(steps, "seconds", steps_file);
      const auto& loss = column(steps, "loss", steps_file);
      for (std::size_t i = 0; i < index.size(); ++i) {
        if (!std::isfinite(loss[i])) continue;
        step_index.push_back(index[i]);
        step_seconds.push_back(seconds[i]);
        step_loss.push_back(loss[i]);
      }
    }
    // Batch losses scatter far more than the trend they follow: a centred moving mean over about
    // a fortieth of the run (at least 3 steps) shows the trend, and a rise, without drowning
    // the validation loss.
    const std::size_t n = step_loss.size();
    const std::size_t half = std::max<std::size_t>(n / 80, n >= 10 ? 1 : 0);
    std::vector<double> smoothed(n);
    {
      double sum = 0;
      std::size_t from = 0, to = 0;  // the window [from, to)
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t lo = i >= half ? i - half : 0, hi = std::min(n, i + half + 1);
        while (to < hi) sum += step_loss[to++];
        while (from < lo) sum -= step_loss[from++];
        smoothed[i] = sum / static_cast<double>(to - from);
      }
    }

    double max_seconds = 0;
    for (double s : eval_seconds) max_seconds = std::max(max_seconds, s);
    for (double s : step_seconds) max_seconds = std::max(max_seconds, s);
    const auto [scale, unit] = time_unit(max_seconds);
    const std::string subtitle =
        fmt::format("model {}, data {}\noptimizer {}", run.model, run.data, run.optimizer);
    const std::string loss_label = run.loss == "cross-entropy" ? "loss (cross-entropy, nats)"
                                   : run.loss == "mse"         ? "loss (mean squared error)"
                                                               : "loss";
    const std::string training_title =
        half == 0 ? std::string("training batches")
                  : fmt::format("training batches, mean of {} steps", 2 * half + 1);
    std::vector<LineFigure> figures;
    for (const bool by_time : {false, true}) {
      const double x_scale = by_time ? scale : 1.0;
      const std::string x_label = by_time
                                      ? fmt::format("wall time since the run started ({})", unit)
                                      : "optimizer step (accepted and rejected)";
      const std::string against = by_time ? "wall time" : "optimizer steps";
      PlotLine training{training_title, {}, {}, 0, PlotLine::Style::kBold};
      for (std::size_t i = 0; i < n; ++i) {
        training.x.push_back((by_time ? step_seconds[i] : step_index[i]) * x_scale);
        training.y.push_back(smoothed[i]);
      }
      PlotLine validation{"validation", {}, {}, 1, PlotLine::Style::kBold};
      PlotLine accuracy_line{"validation", {}, {}, 1, PlotLine::Style::kBold};
      for (std::size_t i = 0; i < eval_step.size(); ++i) {
        const double x = (by_time ? eval_seconds[i] : eval_step[i]) * x_scale;
        validation.x.push_back(x);
        validation.y.push_back(val_loss[i]);
        accuracy_line.x.push_back(x);
        accuracy_line.y.push_back(100.0 * val_accuracy[i]);
      }
      LineFigure loss;
      loss.png = by_time ? "loss_vs_time.png" : "loss_vs_steps.png";
      loss.title = fmt::format("Loss against {}\n{}", against, subtitle);
      loss.x_label = x_label;
      loss.y_label = loss_label;
      loss.y_axis = YAxis::kLowerIsBetter;
      loss.lines = {std::move(training), std::move(validation)};
      LineFigure accuracy;
      accuracy.png = by_time ? "val_accuracy_vs_time.png" : "val_accuracy_vs_steps.png";
      accuracy.title = fmt::format("Validation accuracy against {}\n{}", against, subtitle);
      accuracy.x_label = x_label;
      accuracy.y_label = "validation accuracy (%)";
      accuracy.y_axis = YAxis::kHigherIsBetter;
      accuracy.lines = {std::move(accuracy_line)};
      figures.push_back(std::move(loss));
      figures.push_back(std::move(accuracy));
    }
    render_line_figures(dir, "figures", std::move(figures), prefix);
  } catch (const Error& e) {
    std::cerr << fmt::format("quadra: warning: no figures: {}\n", e.what());
  }
}

}  // namespace quadra::cli
