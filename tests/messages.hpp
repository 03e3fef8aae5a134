// Helpers for tests that assert error message text (the suites assert the messages of the
// common mistakes). Shared by the test executables; no doctest dependency.
#pragma once
#include <string>

namespace spool::test {

/// The what() of the E that f throws, or "<no exception>" (another exception type propagates).
template <class E, class F>
std::string message_of(F f)
{
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "<no exception>";
}

}  // namespace spool::test
