#pragma once
// Small helpers shared by subcommands: comma/space-separated lists and gnuplot figures.

#include <filesystem>
#include <limits>
#include <string>
#include <vector>

namespace quadra::cli {

/// "a, b c" -> {"a", "b", "c"}: items separated by commas, spaces or tabs.
std::vector<std::string> split_list(const std::string& text);

/// Writes `script` to DIR/NAME.gp and runs gnuplot on it in DIR when gnuplot is installed.
/// Prints where the figure is, that gnuplot is missing, or that it failed (see DIR/NAME.log);
/// returns whether the figure was rendered. `prefix` starts the printed line.
bool render_figure(const std::filesystem::path& dir, const std::string& name,
                   const std::string& script, const std::string& prefix);

/// `text` as a gnuplot single-quoted string literal.
std::string gnuplot_quote(const std::string& text);

/// The opening lines of every figure: an antialiased PNG terminal of the given size, text
/// printed literally (a spec's '_' or '^' is no markup), a light grid.
std::string figure_preamble(const std::string& png, int width, int height);

/// Colour `index` of the figures' palette (distinguishable, colour-blind safe for the first
/// eight), as "#RRGGBB"; `alpha` in [0, 1] makes it translucent ("#AARRGGBB").
std::string palette_color(std::size_t index, double alpha = 1.0);

/// One line of a line figure.
struct PlotLine {
  enum class Style {
    kThin,    ///< a translucent thin line: one seed, raw per-step values
    kBold,    ///< a thick line, with markers when it has few points: what the figure is about
    kMarker,  ///< large open markers without a line, drawn last: events such as a target reached
  };
  std::string title;  ///< legend entry; empty: not in the legend
  std::vector<double> x, y;
  std::size_t color = 0;  ///< palette index
  Style style = Style::kBold;
  /// Whether the line decides the y range. Noise such as each step's batch loss does not: it
  /// would widen the range until the lines that matter are flat.
  bool sets_range = true;
};

/// How a figure's y axis is chosen from its lines.
enum class YAxis {
  /// Lower is better, e.g. a loss: from the best value to the worst of each line's later
  /// values (past the first fifth of its x extent; outliers within a line and among lines
  /// excluded by Tukey's far-out fence), and never below any line's best value. So the first
  /// evaluations of a run, often several times the final loss, do not squeeze the rest into a
  /// strip; a note on the figure says what is cut off. Logarithmic when every value is
  /// positive and the range spans more than a factor of 3.
  kLowerIsBetter,
  /// Higher is better, e.g. an accuracy: the same the other way round, linear.
  kHigherIsBetter,
  /// Every value, e.g. eigenvalues: logarithmic when all are positive and span more than a
  /// factor of 3.
  kFull,
};

/// A line figure: one PNG, lines against a shared x axis.
struct LineFigure {
  std::string png;  ///< file name, e.g. "val_loss_vs_steps.png"
  std::string title;
  std::string x_label, y_label;
  YAxis y_axis = YAxis::kLowerIsBetter;
  std::string key_title;  ///< heading of the legend, or empty
  std::vector<PlotLine> lines;
  /// The x range when both are finite (and linear); otherwise from the lines: from 0 (or the
  /// smallest x when negative), logarithmic when the lines' x extents differ twentyfold.
  double x_min = std::numeric_limits<double>::quiet_NaN();
  double x_max = std::numeric_limits<double>::quiet_NaN();
  /// Whether a lower-is-better or full y axis may be logarithmic. Not where values of one
  /// line dwarf the others' (a diverging step beside steps that hardly move): a log axis would
  /// leave the small ones' range without a label.
  bool y_log = true;
  std::string settings;  ///< more gnuplot commands, after the generated ones, e.g. "set xtics 1\n"
};

/// A figure's settings, without its plot command: title, axis labels, ranges and log scales
/// (and tics), a note of what the y range cuts off, the legend's place, then `f.settings`. It
/// undoes what an earlier figure or multiplot panel set. `width` x `height` is the figure's (or
/// the panel's) size in pixels, to size the legend. For figures drawn in another style (error
/// bars, points): their `lines` stand for what is drawn.
std::string figure_settings(const LineFigure& f, int width, int height);

/// The gnuplot script drawing `figures`, data inline. Each figure gets explicit ranges and its
/// legend inside the plot, in the corner (or edge centre) its lines cross least.
std::string line_figures_script(const std::vector<LineFigure>& figures);

/// Renders `figures` with one script DIR/NAME.gp (see render_figure) and prints the PNG files
/// it wrote after `prefix`; figures without a finite point are left out. Returns whether
/// gnuplot ran and succeeded.
bool render_line_figures(const std::filesystem::path& dir, const std::string& name,
                         std::vector<LineFigure> figures, const std::string& prefix);

/// The mean of `lines` point by point: the k-th point is the mean of their k-th points, up to
/// the shortest line. For the evaluations of runs that differ only in their seed: the k-th
/// evaluation is at the same step in each (and about the same time), so there is always a
/// mean, even where the runs' time ranges do not overlap.
PlotLine mean_line(const std::vector<const PlotLine*>& lines);

/// Seconds as the x axis shows them: milliseconds for runs under a second, minutes beyond
/// ten minutes. Returns the factor from seconds and the unit, e.g. {1000, "ms"}.
std::pair<double, std::string> time_unit(double max_seconds);

/// What names a training run in its figures' titles.
struct RunDescription {
  std::string model;      ///< layer spec or model file
  std::string data;       ///< data source
  std::string optimizer;  ///< e.g. "cg + ggn + levenberg-marquardt + cg-line-search"
  std::string loss;       ///< e.g. "cross-entropy"
};

/// Draws a training run's curves from DIR/eval.csv and DIR/steps.csv: the loss (the batch loss
/// of the steps, as a moving mean, and the validation loss) and the validation accuracy,
/// against steps and wall time, as DIR/{loss,val_accuracy}_vs_{steps,time}.png. Prints the
/// files it wrote after `prefix`, or one line when gnuplot is not installed; a run without
/// evaluations draws nothing. Never throws for what it reads: the figures are a courtesy.
void render_run_figures(const std::filesystem::path& dir, const RunDescription& run,
                        const std::string& prefix);

}  // namespace quadra::cli
