// A run directory's index.html: one page with the run's plots, its config, final metrics,
// tables and sample outputs, referencing files by relative name so the directory can be
// moved or zipped. referenced_files() lists what a page points to (tests check each exists).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace spool::train {

class HtmlReport {
public:
    explicit HtmlReport(std::string title);
    void heading(const std::string& text);
    void paragraph(const std::string& text);
    /// An image file relative to the page (skipped when the file does not exist in dir).
    void image(const std::string& dir, const std::string& file, const std::string& caption);
    /// A link to a file of the run directory (skipped when it does not exist in dir).
    void link(const std::string& dir, const std::string& file, const std::string& text);
    void table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
    void preformatted(const std::string& text);
    /// Writes the page to path atomically (temporary + rename).
    void write(const std::string& path) const;
    const std::string& body() const { return body_; }

private:
    std::string title_, body_;
};

/// HTML-escapes &, <, >, ".
std::string html_escape(const std::string& s);

/// The src= and href= targets of an HTML page (relative ones; not http(s) or #anchors).
std::vector<std::string> referenced_files(const std::string& html);

}  // namespace spool::train
