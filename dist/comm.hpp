// Internal to dist/ (not installed): spool's communicator, MPI error checking and the
// timed wait that every collective goes through, and the flat-buffer copies that DDP and
// ZeRO share. Includes <mpi.h>, which the public headers keep out.
#pragma once
#define OMPI_SKIP_MPICXX 1  // the C API only: no deprecated C++ bindings to link
#include <mpi.h>

#include <cstdint>
#include <string>

#include "tensor/dtype.hpp"
#include "tensor/value.hpp"

namespace spool::dist::detail {

/// spool's duplicate of MPI_COMM_WORLD (MPI_ERRORS_RETURN). Throws DistError before init()
/// and after a failure made it unusable.
MPI_Comm comm(const char* collective);
/// Throw DistError naming this rank and the collective when rc is not MPI_SUCCESS.
void check(int rc, const char* collective);
/// The MPI datatype of dt's elements (bool as bytes).
MPI_Datatype mpi_type(DType dt);
/// Wait for n requests, polling MPI_Test until the timeout; on timeout throw DistError naming
/// this rank, the collective and what it carried (`detail`), and mark the communicator unusable.
void wait_all(MPI_Request* requests, int n, const char* collective, const std::string& detail);
/// The largest element count one MPI call takes (counts are int).
inline constexpr std::int64_t max_count = std::int64_t{1} << 30;

// ---- flat buffers (DDP's buckets, ZeRO's shards) --------------------------------------------

/// flat's elements [off, off + n) = src's first n elements, or zeros when src is null (a
/// missing gradient). Same dtype.
void write_flat(Value& flat, std::int64_t off, const Value* src, std::int64_t n);
/// dst's n elements = flat's elements [off, off + n), an in-place change of dst (bumps its version).
void read_flat(const Value& flat, std::int64_t off, const Value& dst, std::int64_t n);
/// flat's elements [off, off + n) += src's first n elements (float32, float64).
void add_flat(Value& flat, std::int64_t off, const Value& src, std::int64_t n);
/// flat's first n elements /= by (float32, float64; int64 rounds toward zero).
void divide(Value& flat, std::int64_t n, int by);

}  // namespace spool::dist::detail
