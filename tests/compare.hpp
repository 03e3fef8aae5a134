// Element-by-element comparison of a result with a reference for the parity tests:
// every element within a Tolerance, the first mismatches reported with both values, and
// a summary naming the worst error/tolerance ratio. Needs doctest.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "tolerances.hpp"

namespace spool::test {

/// CHECKs that vals[i] is close to ref[i] for every i (what names the tensor in messages).
inline void expect_close(const std::string& what, const std::vector<double>& vals, const std::vector<double>& ref,
                         Tolerance tol)
{
    REQUIRE(vals.size() == ref.size());
    int bad = 0;
    double worst = 0;  // largest |a - b| / (atol + rtol |b|): above 1 fails
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double ratio = std::abs(vals[i] - ref[i]) / (tol.atol + tol.rtol * std::abs(ref[i]));
        worst = std::max(worst, std::isnan(ratio) ? HUGE_VAL : ratio);
        if (close(vals[i], ref[i], tol)) continue;
        if (++bad <= 5) {
            std::ostringstream os;
            os.precision(17);
            os << what << "[" << i << "]: spool " << vals[i] << ", PyTorch " << ref[i] << ", |diff| "
               << std::abs(vals[i] - ref[i]) << " > atol " << tol.atol << " + rtol " << tol.rtol << " * |PyTorch|";
            FAIL_CHECK(os.str());
        }
    }
    CHECK_MESSAGE(bad == 0, what, ": ", bad, " of ", ref.size(), " elements differ; worst error/tolerance ", worst);
}

}  // namespace spool::test
