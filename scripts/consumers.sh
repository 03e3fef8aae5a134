#!/usr/bin/env bash
# Build and run tests/consumers/consumer.cpp the three ways a user's project can take spool:
#   subproject  a Meson project with spool (this checkout, symlinked) in its subprojects/,
#               found by dependency('spool', fallback : 'spool')
#   pkg-config  g++ with `pkg-config --cflags --libs spool` from BUILD_DIR installed under
#               a DESTDIR (PKG_CONFIG_PATH into that tree: spool.pc is relocatable)
#   cmake       find_package(spool CONFIG) against the same install (CMAKE_PREFIX_PATH)
# and, when spool_dist is installed, tests/consumers/consumer_dist.cpp through spool-dist.pc
# and CMake's spool::dist, run as 2 ranks under mpirun.
# The install is of BUILD_DIR as it stands (meson install --no-rebuild): run after a build.
# Also checks spool.pc's contents: no Requires, -pthread exactly once.
# Meson runs it as the test `consumers` (tests/meson.build), so scripts/test.sh and CI do.
# Usage: scripts/consumers.sh BUILD_DIR [WORK_DIR]   (WORK_DIR is kept; default: a temp dir)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [WORK_DIR]" >&2; exit 2; }
build="$(cd "$1" && pwd)"
if [ $# -ge 2 ]; then
  work="$2"
  # reuse a WORK_DIR of an earlier run (it has the marker), never wipe another directory
  if [ -e "$work" ] && [ -n "$(ls -A "$work")" ]; then
    [ -f "$work/.consumers-work" ] || { echo "consumers: $work is not empty and not a consumers WORK_DIR" >&2; exit 2; }
    rm -rf "$work"
  fi
  mkdir -p "$work"; touch "$work/.consumers-work"; work="$(cd "$work" && pwd)"
else
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
fi
cxx="${CXX:-c++}"
start=$(date +%s)
step() { echo "== consumers: $* ($(( $(date +%s) - start )) s)"; }
fail() { echo "consumers: FAILED: $*" >&2; exit 1; }

# ---- install BUILD_DIR under a DESTDIR ----------------------------------------------
step "install $build under $work/dest"
meson install -C "$build" --no-rebuild --destdir "$work/dest" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "meson install"; }
read -r prefix libdir < <(python3 -c '
import json, sys
opts = {o["name"]: o["value"] for o in json.load(open(sys.argv[1]))}
print(opts["prefix"], opts["libdir"])' "$build/meson-info/intro-buildoptions.json")
root="$work/dest$prefix"
case "$libdir" in /*) libpath="$work/dest$libdir" ;; *) libpath="$root/$libdir" ;; esac

# ---- pkg-config -----------------------------------------------------------------------
step "pkg-config"
pc="$libpath/pkgconfig/spool.pc"
[ -f "$pc" ] || fail "no $pc"
! grep -q '^Requires' "$pc" || fail "spool.pc has a Requires line: $(grep '^Requires' "$pc")"
flags="$(PKG_CONFIG_PATH="$libpath/pkgconfig" pkg-config --cflags --libs spool)" || fail "pkg-config spool"
echo "$flags"
n=$(grep -o -- '-pthread' <<<"$flags" | wc -l)
[ "$n" -eq 1 ] || fail "-pthread appears $n times in pkg-config's flags"
mkdir -p "$work/pkg-config"
# shellcheck disable=SC2086  # the flags are a word list
"$cxx" -std=c++20 -O1 "$repo/tests/consumers/consumer.cpp" $flags -o "$work/pkg-config/consumer" ||
  fail "compiling with pkg-config's flags"
"$work/pkg-config/consumer" || fail "the pkg-config consumer"

# ---- spool-dist.pc: a data-parallel program, run as 2 ranks ----------------------------
# only when spool_dist was built (Open MPI found) and installed its .pc
mpirun_2() {
  local root_opts=()
  [ "$(id -u)" -ne 0 ] || root_opts=(--allow-run-as-root)
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SPOOL_DIST_TIMEOUT=60 \
    mpirun -np 2 --oversubscribe --bind-to none --mca btl self,vader \
    --mca btl_vader_single_copy_mechanism none "${root_opts[@]}" "$@"
}
have_dist=0
if [ -f "$libpath/pkgconfig/spool-dist.pc" ]; then
  have_dist=1
  step "pkg-config spool-dist"
  dflags="$(PKG_CONFIG_PATH="$libpath/pkgconfig" pkg-config --cflags --libs spool-dist)" || fail "pkg-config spool-dist"
  echo "$dflags"
  # shellcheck disable=SC2086
  "$cxx" -std=c++20 -O1 "$repo/tests/consumers/consumer_dist.cpp" $dflags -o "$work/pkg-config/consumer_dist" ||
    fail "compiling with spool-dist's flags"
  mpirun_2 "$work/pkg-config/consumer_dist" || fail "the spool-dist consumer under mpirun"
fi

# ---- CMake ----------------------------------------------------------------------------
step "cmake"
cmake -S "$repo/tests/consumers/cmake" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$root" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "cmake configure"; }
ninja -C "$work/cmake" -v >"$work/cmake-build.log" 2>&1 || { cat "$work/cmake-build.log"; fail "cmake build"; }
grep -- '-o consumer ' "$work/cmake-build.log"  # the link line: the libraries in order
"$work/cmake/consumer" || fail "the CMake consumer"
if [ "$have_dist" -eq 1 ]; then
  [ -x "$work/cmake/consumer_dist" ] || fail "find_package(spool) gave no spool::dist although spool_dist is installed"
  mpirun_2 "$work/cmake/consumer_dist" || fail "the CMake spool::dist consumer under mpirun"
fi

# ---- Meson subproject -----------------------------------------------------------------
# Only spool's libraries build here (its tests, examples and benchmarks are off in a
# subproject), niced and on two jobs, as the machine may be busy.
step "meson subproject"
src="$work/meson-src"
mkdir -p "$src/subprojects"
cp "$repo/tests/consumers/meson/meson.build" "$repo/tests/consumers/consumer.cpp" "$repo/tests/consumers/consumer_dist.cpp" "$src/"
ln -s "$repo" "$src/subprojects/spool"
# --force-fallback-for: the subproject even where an installed spool would be found
meson setup --force-fallback-for=spool "$work/meson-build" "$src" >"$work/meson-setup.log" 2>&1 ||
  { cat "$work/meson-setup.log"; fail "meson setup of the subproject consumer"; }
grep -q "Dependency spool found: YES .*(overridden)" "$work/meson-setup.log" ||
  { cat "$work/meson-setup.log"; fail "the consumer did not take spool from its subproject"; }
nice -n 10 ninja -C "$work/meson-build" -j 2 >"$work/meson-build.log" 2>&1 ||
  { tail -50 "$work/meson-build.log"; fail "building the subproject consumer"; }
echo "compiled $(grep -c 'Compiling' "$work/meson-build.log") files"
! grep -E 'Compiling.*subprojects/spool/(tests|examples|bench|train)/' "$work/meson-build.log" ||
  fail "the subproject built more than spool's libraries"
"$work/meson-build/consumer" || fail "the Meson subproject consumer"
if [ "$have_dist" -eq 1 ]; then
  [ -x "$work/meson-build/consumer_dist" ] || fail "the subproject gave no dependency('spool-dist') although MPI is here"
  mpirun_2 "$work/meson-build/consumer_dist" || fail "the Meson subproject spool-dist consumer under mpirun"
fi

step "all three routes passed"
