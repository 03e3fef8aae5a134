// Data-parallel training over MPI, the process-group half: init/finalize, rank and world
// size, and blocking collectives on tensors (broadcast, all_reduce) that give up after a
// timeout instead of hanging on a failed rank. The gradient-averaging wrapper is in
// dist/ddp.hpp. Deliberately free of <mpi.h>: a program using spool::dist compiles without
// MPI's include paths (only linking needs Open MPI). Guide: docs/distributed.md.
#pragma once
#include <stdexcept>

#include "autograd/tensor.hpp"

namespace spool::nn {
class Module;
}

namespace spool::dist {

/// An MPI call failed, or a collective did not complete before the timeout (a rank died,
/// hangs, or called a different collective). The message names this rank and the collective.
/// After a DistError the communicator is unusable: end the program (spool then skips
/// MPI_Finalize, which would wait for the lost rank).
struct DistError : std::runtime_error { using std::runtime_error::runtime_error; };

/// Initialise MPI (MPI_Init_thread, at least MPI_THREAD_FUNNELED) unless it already is, and
/// duplicate MPI_COMM_WORLD into spool's own communicator with MPI_ERRORS_RETURN, so that
/// MPI errors come back as DistError. Idempotent. When spool initialised MPI, it finalizes
/// it at exit. Reads the timeout from the environment variable SPOOL_DIST_TIMEOUT (seconds).
void init(int* argc = nullptr, char*** argv = nullptr);
/// True between init() and finalize().
bool initialized();
/// Free spool's communicator and, if init() started MPI, finalize it. Idempotent; called at
/// exit when the program does not.
void finalize();

/// This process's rank in [0, world_size()). Throws DistError before init().
int rank();
/// The number of ranks.
int world_size();

/// How long a collective may wait before DistError (default 300 s, or SPOOL_DIST_TIMEOUT).
double timeout_seconds();
/// Set the timeout in seconds (> 0). Every rank should use the same one.
void set_timeout(double seconds);

enum class ReduceOp {
    sum,
    avg,  ///< the sum divided by world_size(); int64 divides rounding toward zero
};

/// In place: every rank's t becomes the sum (or average) over ranks of t. float32, float64
/// and int64; every rank passes the same shape and dtype.
void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum);
/// In place: every rank's t becomes root's t (any dtype, same shape on every rank).
void broadcast(Tensor& t, int root = 0);
/// Broadcast every parameter and buffer of m, in named order, from root.
void broadcast_module(nn::Module& m, int root = 0);
/// Wait until every rank has arrived (with the timeout).
void barrier();

namespace detail {
/// Tests only: after a timeout, wait (without limit) for the collectives it abandoned and
/// make the communicator usable again. Only valid when the late ranks do join them.
void recover_after_timeout();
}  // namespace detail

}  // namespace spool::dist
