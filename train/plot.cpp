// gnuplot driver (train/plot.hpp): writes <stem>.dat and <stem>.gp beside the image and runs
// `gnuplot <stem>.gp` in that directory; the script names its files without a directory, so
// `cd run_dir && gnuplot loss.gp` redraws a plot by hand.
#include "train/plot.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace spool::train {
namespace {

// gnuplot strings are single-quoted: a quote is doubled
std::string quote(const std::string& s)
{
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "''";
        else out += c;
    }
    return out + "'";
}

std::string stem(const std::string& path)
{
    auto dot = path.rfind('.');
    auto slash = path.rfind('/');
    return dot == std::string::npos || (slash != std::string::npos && dot < slash) ? path : path.substr(0, dot);
}

std::string terminal(const std::string& path, int w, int h)
{
    const bool svg = path.size() >= 4 && path.compare(path.size() - 4, 4, ".svg") == 0;
    return (svg ? "set terminal svg size " : "set terminal pngcairo noenhanced size ") + std::to_string(w) + "," +
           std::to_string(h) + (svg ? " noenhanced" : "") + "\n";
}

// for /bin/sh: single-quoted, a quote written as '\''
std::string shell_quote(const std::string& s)
{
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

bool run(const std::string& script)
{
    const auto dir = std::filesystem::path(script).parent_path();
    const std::string cmd = "cd " + shell_quote(dir.empty() ? "." : dir.string()) + " && gnuplot " +
                            shell_quote(file_name(script)) + " 2>/dev/null";
    return std::system(cmd.c_str()) == 0;
}

}  // namespace

bool gnuplot_available()
{
    static const bool ok = std::system("gnuplot -e 'exit' >/dev/null 2>&1") == 0;
    return ok;
}

bool plot_lines(const std::string& path, const LinePlot& p)
{
    if (!gnuplot_available()) return false;
    const std::string base = stem(path), dat = base + ".dat", gp = base + ".gp";
    {
        std::ofstream d(dat);
        for (const auto& s : p.series) {
            d << "# " << s.label << "\n";
            for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
                if (std::isfinite(s.y[i]) && std::isfinite(s.x[i])) d << s.x[i] << " " << s.y[i] << "\n";
            d << "\n\n";  // gnuplot: two blank lines separate data blocks (index k)
        }
    }
    std::ofstream g(gp);
    g << terminal(path, p.width, p.height) << "set output " << quote(file_name(path)) << "\n"
      << "set title " << quote(p.title) << "\nset xlabel " << quote(p.xlabel) << "\nset ylabel " << quote(p.ylabel)
      << "\nset grid\nset key " << p.key << "\n";  // gnuplot 5.4 has no "set key best"
    if (p.logx) g << "set logscale x\n";
    if (p.logy) g << "set logscale y\n";
    g << "plot ";
    for (std::size_t k = 0; k < p.series.size(); ++k)
        g << (k ? ", " : "") << quote(file_name(dat)) << " index " << k << " using 1:2 with "
          << (p.points ? "linespoints" : "lines") << " lw 2 title " << quote(p.series[k].label);
    g << "\n";
    g.close();
    return run(gp);
}

bool plot_heatmap(const std::string& path, const Heatmap& m)
{
    if (!gnuplot_available() || m.values.empty()) return false;
    const std::string base = stem(path), dat = base + ".dat", gp = base + ".gp";
    {
        std::ofstream d(dat);
        for (const auto& row : m.values) {
            for (std::size_t j = 0; j < row.size(); ++j) d << (j ? " " : "") << row[j];
            d << "\n";
        }
    }
    auto tics = [](const std::vector<std::string>& labels) {
        std::string s = "(";
        for (std::size_t i = 0; i < labels.size(); ++i)
            s += (i ? ", " : "") + quote(labels[i].empty() ? " " : labels[i]) + " " + std::to_string(i);
        return s + ")";
    };
    std::ofstream g(gp);
    g << terminal(path, m.width, m.height) << "set output " << quote(file_name(path)) << "\n"
      << "set title " << quote(m.title) << "\nset xlabel " << quote(m.xlabel) << "\nset ylabel " << quote(m.ylabel)
      << "\nset palette rgb 21,22,23\nset cbrange [0:*]\nset yrange [] reverse\nset tics scale 0\n"
      << "set autoscale xfix\nset autoscale yfix\n";  // the image fills the frame, no empty margin
    if (!m.xtics.empty()) g << "set xtics " << tics(m.xtics) << " font ',9'\n";
    if (!m.ytics.empty()) g << "set ytics " << tics(m.ytics) << " font ',9'\n";
    g << "plot " << quote(file_name(dat)) << " matrix with image notitle\n";
    g.close();
    return run(gp);
}

}  // namespace spool::train
