// HtmlReport (train/report.hpp).
#include "train/report.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tensor/errors.hpp"

namespace spool::train {

std::string html_escape(const std::string& s)
{
    std::string out;
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        default: out += c;
        }
    }
    return out;
}

HtmlReport::HtmlReport(std::string title) : title_(std::move(title)) {}

void HtmlReport::heading(const std::string& text) { body_ += "<h2>" + html_escape(text) + "</h2>\n"; }
void HtmlReport::paragraph(const std::string& text) { body_ += "<p>" + html_escape(text) + "</p>\n"; }
void HtmlReport::preformatted(const std::string& text) { body_ += "<pre>" + html_escape(text) + "</pre>\n"; }

void HtmlReport::image(const std::string& dir, const std::string& file, const std::string& caption)
{
    if (!std::filesystem::exists(std::filesystem::path(dir) / file)) return;
    body_ += "<figure><img src=\"" + html_escape(file) + "\" alt=\"" + html_escape(caption) + "\"><figcaption>" +
             html_escape(caption) + "</figcaption></figure>\n";
}

void HtmlReport::link(const std::string& dir, const std::string& file, const std::string& text)
{
    if (!std::filesystem::exists(std::filesystem::path(dir) / file)) return;
    body_ += "<p><a href=\"" + html_escape(file) + "\">" + html_escape(text) + "</a></p>\n";
}

void HtmlReport::table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows)
{
    body_ += "<table>\n<tr>";
    for (const auto& h : header) body_ += "<th>" + html_escape(h) + "</th>";
    body_ += "</tr>\n";
    for (const auto& r : rows) {
        body_ += "<tr>";
        for (const auto& c : r) body_ += "<td>" + html_escape(c) + "</td>";
        body_ += "</tr>\n";
    }
    body_ += "</table>\n";
}

void HtmlReport::write(const std::string& path) const
{
    const std::string tmp = path + ".partial";
    {
        std::ofstream f(tmp, std::ios::trunc);
        SPOOL_CHECK(f.good(), IoError, "HtmlReport: cannot write '", tmp, "'");
        f << "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" << html_escape(title_) << "</title>\n"
          << "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
             "font-family:monospace}pre{background:#f6f6f6;padding:8px;overflow-x:auto}</style></head>\n<body>\n<h1>"
          << html_escape(title_) << "</h1>\n"
          << body_ << "</body></html>\n";
        SPOOL_CHECK(f.good(), IoError, "HtmlReport: write to '", tmp, "' failed");
    }
    std::filesystem::rename(tmp, path);
}

std::vector<std::string> referenced_files(const std::string& html)
{
    std::vector<std::string> out;
    for (const std::string key : {"src=\"", "href=\""}) {
        for (std::size_t pos = html.find(key); pos != std::string::npos; pos = html.find(key, pos + 1)) {
            const std::size_t start = pos + key.size(), end = html.find('"', start);
            if (end == std::string::npos) break;
            std::string target = html.substr(start, end - start);
            if (target.empty() || target[0] == '#' || target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0)
                continue;
            out.push_back(target);
        }
    }
    return out;
}

}  // namespace spool::train
