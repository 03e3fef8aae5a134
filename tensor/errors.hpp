// Typed errors and the check macros used by every layer.
// Messages follow "<op or Module>: <what is wrong>; got <name> <shape> ...".
// Does not format shapes itself (shape.hpp does); only joins message parts.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace spool {

/// Shapes that do not fit together (broadcasting, matmul, reshape, ...).
struct ShapeError : std::invalid_argument { using std::invalid_argument::invalid_argument; };
/// A bad value: an option out of range, an index out of bounds, NaN in anomaly mode.
struct ValueError : std::invalid_argument { using std::invalid_argument::invalid_argument; };
/// Wrong dtype for an op (int64 where float is needed, mixed float32/float64).
struct TypeError : std::invalid_argument { using std::invalid_argument::invalid_argument; };
/// Misuse of the tape: backward twice, backward with no tape, non-scalar without seed.
struct AutogradError : std::logic_error { using std::logic_error::logic_error; };
/// A file that cannot be read or written, or whose content is malformed.
struct IoError : std::runtime_error { using std::runtime_error::runtime_error; };

namespace detail {
template <class... Args>
std::string cat(const Args&... args)
{
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}
}  // namespace detail

}  // namespace spool

/// Always-on check (release builds too): throws Error with the joined message.
#define SPOOL_CHECK(cond, Error, ...)                                   \
    do {                                                                \
        if (!(cond)) [[unlikely]]                                       \
            throw Error(::spool::detail::cat(__VA_ARGS__));             \
    } while (0)

/// Internal invariant, debug builds only.
#ifdef NDEBUG
#define SPOOL_ASSERT(cond) ((void)0)
#else
#include <cassert>
#define SPOOL_ASSERT(cond) assert(cond)
#endif
