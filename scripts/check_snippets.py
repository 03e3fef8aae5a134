#!/usr/bin/env python3
"""Compile every ```cpp block of README.md and docs/**/*.md against a spool build, so no
documented snippet can rot. Usage: scripts/check_snippets.py BUILD_DIR [--cxx CMD] [--jobs N]

A block that contains `int main` is a program: compiled and linked against BUILD_DIR's
static libraries (train and dist if built, then io optim nn losses autograd tensor, -fopenmp;
with dist also MPI's link flags, from `mpicxx --showme:link`). A program that includes a
dist/ header is skipped when the build has no dist (MPI not found).
README.md's first program is also run and must exit 0. Any other block is a fragment,
checked with -fsyntax-only after `#include "spool.hpp"` and `using namespace spool;`,
first at namespace scope and, if that fails, inside a function body (the fragment's own
#include / using-namespace lines stay at the top); it passes if either compiles.

Markers in the Markdown (HTML comments: invisible on the rendered page):
  <!-- snippet-prelude: CODE -->   directly above a fence (blank lines may sit between):
                                   CODE (one or more lines) goes right before the block's
                                   code, for the names a fragment uses but does not define.
  ```cpp-nocompile                 a fence that is never compiled (pseudo-code); counted
                                   and reported as skipped.
  <!-- snippet-run -->             directly above a program's fence: it is also run and
                                   must exit 0 (README.md's first program always is).
Flags follow BUILD_DIR's configuration (meson-info/intro-buildoptions.json): -march=native
when `native`, -fsanitize= from b_sanitize, -DNDEBUG as b_ndebug says, cpp_args and
cpp_link_args. Compiler errors point at the Markdown file and line (#line directives).
Prints one line per block, then a summary; exits 1 if any block fails, 2 on bad usage.
Meson runs it as the test `doc_snippets` (tests/meson.build), so scripts/test.sh and CI do.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB_ORDER = ["train", "dist", "io", "optim", "nn", "losses", "autograd", "tensor"]  # link order
OPTIONAL_LIBS = {"train", "dist"}  # linked when the build has them
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")
PRELUDE = re.compile(r"<!--\s*snippet-prelude:(.*?)-->", re.S)
RUN_MARK = re.compile(r"^\s*<!--\s*snippet-run\s*-->\s*$")
HEADER_LINE = re.compile(r"^\s*(#|using\s+namespace\b)")
MAX_ERROR_LINES = 40
NAMESPACE_ONLY = ("function-definition is not allowed here", "cannot appear at block scope",
                  "declaration is not allowed here")


class Block:
    def __init__(self, path, line, lang, code, prelude, prelude_line):
        self.path = path                  # relative to the repository
        self.line = line                  # line of the opening fence
        self.lang = lang
        self.code = code                  # list of lines
        self.prelude = prelude            # list of lines (may be empty)
        self.prelude_line = prelude_line
        self.is_program = any(re.search(r"\bint\s+main\s*\(", l) for l in code)
        self.run = False


def markdown_files():
    files = [REPO / "README.md"] if (REPO / "README.md").exists() else []
    return files + sorted((REPO / "docs").rglob("*.md"))


def extract(path):
    """The ```cpp / ```cpp-nocompile blocks of one Markdown file, with their preludes."""
    rel = str(path.relative_to(REPO))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = len(m.group(1)), m.group(2), m.group(3)
        start, i = i, i + 1
        body = []
        while i < len(lines) and not re.match(r"^\s*" + ticks + r"`*\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        if lang not in ("cpp", "cpp-nocompile"):
            continue
        prelude, prelude_line = preceding_prelude(lines, start)
        blocks.append(Block(rel, start + 1, lang, body, prelude, prelude_line))
        blocks[-1].run = blocks[-1].is_program and marked_run(lines, start)
    return blocks


def marked_run(lines, fence_index):
    """True when a snippet-run comment sits directly above the fence (blank lines aside)."""
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return j >= 0 and bool(RUN_MARK.match(lines[j]))


def preceding_prelude(lines, fence_index):
    """The snippet-prelude comment that ends directly above the fence (blank lines aside)."""
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or not lines[j].rstrip().endswith("-->"):
        return [], 0
    k = j
    while k >= 0 and "<!--" not in lines[k]:
        k -= 1
    m = PRELUDE.search("\n".join(lines[k:j + 1])) if k >= 0 else None
    if not m:
        return [], 0
    text, first = m.group(1), k + 1
    if text.lstrip(" ").startswith("\n"):  # the code starts on the line after "<!--"
        text, first = text.lstrip(" ")[1:], first + 1
    return text.rstrip().splitlines(), first


def build_flags(build):
    """Compile and link flags matching how BUILD_DIR was configured."""
    info = build / "meson-info" / "intro-buildoptions.json"
    opts = {}
    if info.exists():
        opts = {o["name"]: o["value"] for o in json.loads(info.read_text())}
    flags = ["-std=c++20", "-I" + str(REPO), "-fopenmp"]
    if opts.get("native", False):
        flags.append("-march=native")
    sanitize = opts.get("b_sanitize", "none")
    if isinstance(sanitize, list):  # newer Meson: a list of sanitizers
        sanitize = ",".join(sanitize) or "none"
    if sanitize != "none":
        flags.append("-fsanitize=" + sanitize)
    ndebug = opts.get("b_ndebug", "false")
    if ndebug == "true" or (ndebug == "if-release" and opts.get("buildtype") == "release"):
        flags.append("-DNDEBUG")
    flags += opts.get("cpp_args", [])
    return flags, opts.get("cpp_link_args", [])


def libraries(build):
    libs, missing = [], []
    for name in LIB_ORDER:
        lib = build / name / f"libspool_{name}.a"
        if lib.exists():
            libs.append(str(lib))
        elif name not in OPTIONAL_LIBS:
            missing.append(str(lib))
    return libs, missing


def mpi_link_flags():
    """What linking spool_dist needs beyond it: Open MPI's libraries."""
    try:
        p = subprocess.run(["mpicxx", "--showme:link"], capture_output=True, text=True, timeout=60)
        if p.returncode == 0 and p.stdout.strip():
            return shlex.split(p.stdout)
    except OSError:
        pass
    return ["-lmpi"]


def uses_dist(block):
    return any(re.search(r'#\s*include\s*[<"]dist/', l) for l in block.code + block.prelude)


def line_directive(n, path):
    return f'#line {n} "{path}"'


def fragment_source(block, wrap):
    """The translation unit for a fragment: at namespace scope, or inside a function."""
    out = ['#include "spool.hpp"', "using namespace spool;"]
    if not wrap:
        if block.prelude:
            out += [line_directive(block.prelude_line, block.path)] + block.prelude
        out += [line_directive(block.line + 1, block.path)] + block.code
        return "\n".join(out) + "\n"
    # hoist preprocessor and using-namespace lines (of the prelude and of the block) to the top
    body = []
    for first, lines in ((block.prelude_line, block.prelude), (block.line + 1, block.code)):
        if not lines:
            continue
        body.append(line_directive(first, block.path))
        for n, l in enumerate(lines):
            if HEADER_LINE.match(l):
                out += [line_directive(first + n, block.path), l]
                body.append("")
            else:
                body.append(l)
    out.append("void spool_snippet_body() {")
    out += body
    out.append("}")
    return "\n".join(out) + "\n"


def compile_unit(cxx, flags, source, workdir, name, link=None):
    src = workdir / (name + ".cpp")
    src.write_text(source)
    if link is None:
        cmd = cxx + flags + ["-fsyntax-only", str(src)]
    else:
        exe, libs, link_args = link
        cmd = cxx + flags + [str(src), "-o", str(exe)] + libs + link_args + ["-fopenmp"]
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return False, "compiler timed out after 600 s"
    return p.returncode == 0, p.stderr


def trim(text, limit=MAX_ERROR_LINES):
    lines = text.rstrip().splitlines()
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines)"]
    return "\n".join("    " + l for l in lines)


def check(block, index, cxx, flags, libs, link_args, workdir):
    """Returns (ok, detail)."""
    name = f"snippet{index:03d}"
    if block.is_program:
        exe = workdir / name
        source = "\n".join([line_directive(block.line + 1, block.path)] + block.code) + "\n"
        ok, err = compile_unit(cxx, flags, source, workdir, name, link=(exe, libs, link_args))
        if not ok:
            return False, "compile/link failed:\n" + trim(err)
        if not block.run:
            return True, "compiled and linked"
        try:
            p = subprocess.run([str(exe)], cwd=workdir, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return False, "ran longer than 300 s"
        if p.returncode != 0:
            output = p.stdout + p.stderr
            return False, f"exited with {p.returncode}" + (":\n" + trim(output) if output.strip() else "")
        return True, "compiled, linked and ran"
    ok, err_ns = compile_unit(cxx, flags, fragment_source(block, False), workdir, name + "_ns")
    if ok:
        return True, "compiled at namespace scope"
    ok, err_fn = compile_unit(cxx, flags, fragment_source(block, True), workdir, name + "_fn")
    if ok:
        return True, "compiled inside a function"
    # show the errors inside a function, unless the fragment holds what only namespace scope allows
    scope, err = "inside a function", err_fn
    if any(s in err_fn for s in NAMESPACE_ONLY):
        scope, err = "at namespace scope", err_ns
    return False, f"does not compile at namespace scope nor inside a function; errors {scope}:\n" + trim(err)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path, help="a configured and built spool build directory")
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"), help="the C++ compiler command")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compiles (at most 2)")
    args = ap.parse_args()

    build = args.build.resolve()
    libs, missing = libraries(build)
    if missing:
        print("check_snippets: the build has not produced " + ", ".join(missing), file=sys.stderr)
        return 2
    cxx = shlex.split(args.cxx)
    flags, link_args = build_flags(build)
    has_dist = any(Path(l).name == "libspool_dist.a" for l in libs)
    if has_dist:
        link_args = link_args + mpi_link_flags()

    blocks = [b for f in markdown_files() for b in extract(f)]
    readme_programs = [b for b in blocks if b.path == "README.md" and b.is_program and b.lang == "cpp"]
    if readme_programs:
        readme_programs[0].run = True
    skipped = failed = 0
    with tempfile.TemporaryDirectory(prefix="spool-snippets-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(2, args.jobs))) as pool:
        workdir = Path(tmp)
        skip = lambda b: b.lang != "cpp" or (b.is_program and uses_dist(b) and not has_dist)
        work = lambda ib: None if skip(ib[1]) else check(ib[1], ib[0], cxx, flags, libs, link_args, workdir)
        for b, result in zip(blocks, pool.map(work, enumerate(blocks))):  # in document order
            kind = "program" if b.is_program else "fragment"
            if result is None:
                skipped += 1
                print(f"{b.path}:{b.line}: skipped ({b.lang})", flush=True)
            elif result[0]:
                print(f"{b.path}:{b.line}: ok ({kind}, {result[1]})", flush=True)
            else:
                failed += 1
                print(f"{b.path}:{b.line}: FAILED ({kind}) {result[1]}", flush=True)
    print(f"{len(blocks)} blocks: {len(blocks) - failed - skipped} ok, {failed} failed, {skipped} skipped")
    if not readme_programs:
        print("check_snippets: README.md has no program (a ```cpp block with int main) to run")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
