// Plots through gnuplot (Debian's gnuplot-nox), driven from C++: line charts and heatmaps
// written as PNG (pngcairo, or svg when cairo is missing). Data and script go to files next
// to the image (<name>.dat, <name>.gp) so a reader can re-plot or restyle them. Without
// gnuplot installed nothing is drawn and the functions return false: programs still run and
// write their CSVs.
#pragma once
#include <string>
#include <vector>

namespace spool::train {

/// True when a gnuplot binary runs.
bool gnuplot_available();

struct Series {
    std::string label;
    std::vector<double> x, y;  ///< NaN y values are skipped
};

struct LinePlot {
    std::string title, xlabel, ylabel;
    std::vector<Series> series;
    bool logx = false, logy = false;
    bool points = false;  ///< mark each point (few points); lines only otherwise
    int width = 800, height = 480;
    std::string key = "top right";  ///< where gnuplot puts the legend ("bottom left", "outside", …)
};

/// Draws plot into path (".png" or ".svg"); false when gnuplot is missing or failed.
bool plot_lines(const std::string& path, const LinePlot& plot);

struct Heatmap {
    std::string title, xlabel, ylabel;
    std::vector<std::vector<double>> values;  ///< rows (y) × columns (x)
    std::vector<std::string> xtics, ytics;    ///< one label per column / row (may be empty)
    int width = 800, height = 480;
};

bool plot_heatmap(const std::string& path, const Heatmap& map);

}  // namespace spool::train
