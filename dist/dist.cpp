// MPI setup and the tensor collectives. Every collective is started non-blocking
// (MPI_Ibcast, MPI_Iallreduce) and finished by wait_all, which polls with a deadline: a
// dead or stuck rank costs the others one timeout, never a hang.
#include "dist/dist.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "dist/comm.hpp"
#include "nn/module.hpp"
#include "tensor/errors.hpp"

namespace spool::dist {

namespace {
MPI_Comm g_comm = MPI_COMM_NULL;
bool g_started_mpi = false;  // init() called MPI_Init_thread, so finalize() ends MPI
bool g_broken = false;       // a timeout left collectives pending: the communicator is unusable
bool g_atexit = false;
int g_rank = 0;
int g_size = 1;
double g_timeout = 300.0;
std::vector<MPI_Request> g_abandoned;  // what a timeout left pending (recover_after_timeout)

void finalize_at_exit()
{
    // a lost rank would make MPI_Finalize wait forever: after a failure, leave without it
    if (!g_broken) finalize();
}

double timeout_from_env()
{
    const char* s = std::getenv("SPOOL_DIST_TIMEOUT");
    if (!s || !*s) return g_timeout;
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    SPOOL_CHECK(end && *end == '\0' && v > 0, ValueError,
                "dist::init: SPOOL_DIST_TIMEOUT must be a positive number of seconds; got '", s, "'");
    return v;
}

/// Start one collective per chunk of at most max_count elements (MPI counts are int).
template <class Start>
std::vector<MPI_Request> start_chunked(char* data, std::int64_t numel, std::size_t item, const char* collective,
                                       Start start)
{
    std::vector<MPI_Request> reqs;
    std::int64_t off = 0;
    do {  // at least one call, also for an empty tensor: every rank takes part
        const int count = static_cast<int>(std::min(detail::max_count, numel - off));
        reqs.emplace_back(MPI_REQUEST_NULL);
        detail::check(start(data + off * static_cast<std::int64_t>(item), count, &reqs.back()), collective);
        off += count;
    } while (off < numel);
    return reqs;
}

/// t's bytes, to be overwritten in place (an in-place change: bumps the version).
char* writable(Tensor& t)
{
    t.value().bump_version();
    return static_cast<char*>(t.value().raw());
}

std::string describe(const Tensor& t)
{
    return ::spool::detail::cat(dtype_name(t.dtype()), " ", to_string(t.shape()));
}
}  // namespace

// ---- setup ---------------------------------------------------------------------------------

void init(int* argc, char*** argv)
{
    if (g_comm != MPI_COMM_NULL) return;
    g_timeout = timeout_from_env();
    int already = 0;
    MPI_Initialized(&already);
    int provided = MPI_THREAD_SINGLE;
    if (already) {
        MPI_Query_thread(&provided);
    } else {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            throw DistError("dist::init: MPI_Init_thread failed");
        g_started_mpi = true;
    }
    // spool's kernels run on worker threads, but only the main thread calls MPI
    SPOOL_CHECK(provided >= MPI_THREAD_FUNNELED, DistError,
                "dist::init: MPI provides thread level ", provided, ", below MPI_THREAD_FUNNELED");
    // a communicator of our own: its error handler and its traffic do not touch the user's
    MPI_Comm c = MPI_COMM_NULL;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &c) != MPI_SUCCESS) throw DistError("dist::init: MPI_Comm_dup failed");
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c, &g_rank);
    MPI_Comm_size(c, &g_size);
    g_comm = c;
    g_broken = false;
    if (!g_atexit) {
        std::atexit(finalize_at_exit);
        g_atexit = true;
    }
}

bool initialized() { return g_comm != MPI_COMM_NULL; }

void finalize()
{
    if (g_comm == MPI_COMM_NULL) return;
    int ended = 0;
    MPI_Finalized(&ended);
    if (!ended) {
        MPI_Comm_free(&g_comm);
        if (g_started_mpi) MPI_Finalize();
    }
    g_comm = MPI_COMM_NULL;
    g_started_mpi = false;
}

int rank()
{
    detail::comm("rank");
    return g_rank;
}

int world_size()
{
    detail::comm("world_size");
    return g_size;
}

double timeout_seconds() { return g_timeout; }

void set_timeout(double seconds)
{
    SPOOL_CHECK(seconds > 0, ValueError, "dist::set_timeout: the timeout must be > 0 seconds; got ", seconds);
    g_timeout = seconds;
}

// ---- internals shared with ddp.cpp and zero.cpp ---------------------------------------------------------

namespace detail {

MPI_Comm comm(const char* collective)
{
    SPOOL_CHECK(g_comm != MPI_COMM_NULL, DistError, "dist::", collective,
                ": MPI is not initialised; call spool::dist::init() first");
    SPOOL_CHECK(!g_broken, DistError, "dist::", collective, " on rank ", g_rank,
                ": the communicator is unusable after an earlier timeout or MPI error; end the program");
    return g_comm;
}

void check(int rc, const char* collective)
{
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    g_broken = true;
    throw DistError(::spool::detail::cat("dist::", collective, " failed on rank ", g_rank, " of ", g_size, ": ",
                        std::string(text, static_cast<std::size_t>(len))));
}

MPI_Datatype mpi_type(DType dt)
{
    switch (dt) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::b8: return MPI_BYTE;
    }
    return MPI_BYTE;
}

void wait_all(MPI_Request* requests, int n, const char* collective, const std::string& detail)
{
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration<double>(g_timeout);
    for (int i = 0; i < n; ++i) {
        // spin briefly (a collective on shared memory takes microseconds), then back off so
        // that oversubscribed ranks leave the core to the peer they wait for
        for (long polls = 0;; ++polls) {
            int done = 0;
            check(MPI_Test(&requests[i], &done, MPI_STATUS_IGNORE), collective);
            if (done) break;
            if (clock::now() > deadline) {
                g_abandoned.insert(g_abandoned.end(), requests + i, requests + n);
                g_broken = true;
                throw DistError(::spool::detail::cat("dist::", collective, " timed out on rank ", g_rank, " of ", g_size, " after ",
                                    g_timeout, " s (", detail,
                                    "): another rank failed, hangs, or is in a different collective; "
                                    "raise SPOOL_DIST_TIMEOUT if the ranks are only slow"));
            }
            if (polls > 200) std::this_thread::sleep_for(std::chrono::microseconds(polls > 20000 ? 500 : 20));
        }
    }
}

void write_flat(Value& flat, std::int64_t off, const Value* src, std::int64_t n)
{
    const std::size_t item = itemsize(flat.dtype());
    char* out = static_cast<char*>(flat.raw()) + off * static_cast<std::int64_t>(item);
    if (src) std::memcpy(out, src->raw(), static_cast<std::size_t>(n) * item);
    else std::memset(out, 0, static_cast<std::size_t>(n) * item);
}

void read_flat(const Value& flat, std::int64_t off, const Value& dst, std::int64_t n)
{
    const std::size_t item = itemsize(flat.dtype());
    dst.bump_version();
    std::memcpy(dst.raw(), static_cast<const char*>(flat.raw()) + off * static_cast<std::int64_t>(item),
                static_cast<std::size_t>(n) * item);
}

template <class T>
static void add_as(void* out, const void* src, std::int64_t n)
{
    T* o = static_cast<T*>(out);
    const T* s = static_cast<const T*>(src);
    for (std::int64_t i = 0; i < n; ++i) o[i] += s[i];
}

void add_flat(Value& flat, std::int64_t off, const Value& src, std::int64_t n)
{
    char* out = static_cast<char*>(flat.raw()) + off * static_cast<std::int64_t>(itemsize(flat.dtype()));
    if (flat.dtype() == DType::f32) add_as<float>(out, src.raw(), n);
    else add_as<double>(out, src.raw(), n);
}

template <class T>
static void divide_as(void* data, std::int64_t n, int by)
{
    T* p = static_cast<T*>(data);
    for (std::int64_t i = 0; i < n; ++i) p[i] /= static_cast<T>(by);
}

void divide(Value& flat, std::int64_t n, int by)
{
    switch (flat.dtype()) {
    case DType::f32: divide_as<float>(flat.raw(), n, by); break;
    case DType::f64: divide_as<double>(flat.raw(), n, by); break;
    case DType::i64: divide_as<std::int64_t>(flat.raw(), n, by); break;
    case DType::b8: SPOOL_ASSERT(false); break;
    }
}

void recover_after_timeout()
{
    for (MPI_Request& r : g_abandoned) MPI_Wait(&r, MPI_STATUS_IGNORE);
    g_abandoned.clear();
    g_broken = false;
}

}  // namespace detail

// ---- collectives -----------------------------------------------------------------------------

void all_reduce(Tensor& t, ReduceOp op)
{
    const DType dt = t.dtype();
    SPOOL_CHECK(dt == DType::f32 || dt == DType::f64 || dt == DType::i64, TypeError,
                "dist::all_reduce: float32, float64 or int64 only; got ", dtype_name(dt));
    MPI_Comm c = detail::comm("all_reduce");
    char* data = writable(t);
    auto reqs = start_chunked(data, t.numel(), itemsize(dt), "all_reduce", [&](void* p, int count, MPI_Request* r) {
        return MPI_Iallreduce(MPI_IN_PLACE, p, count, detail::mpi_type(dt), MPI_SUM, c, r);
    });
    detail::wait_all(reqs.data(), static_cast<int>(reqs.size()), "all_reduce", describe(t));
    if (op == ReduceOp::avg && g_size > 1) detail::divide(t.value(), t.numel(), g_size);
}

void broadcast(Tensor& t, int root)
{
    MPI_Comm c = detail::comm("broadcast");
    SPOOL_CHECK(root >= 0 && root < g_size, ValueError, "dist::broadcast: root must be in [0, ", g_size, "); got ",
                root);
    const DType dt = t.dtype();
    char* data = writable(t);
    auto reqs = start_chunked(data, t.numel(), itemsize(dt), "broadcast", [&](void* p, int count, MPI_Request* r) {
        return MPI_Ibcast(p, count, detail::mpi_type(dt), root, c, r);
    });
    detail::wait_all(reqs.data(), static_cast<int>(reqs.size()), "broadcast", describe(t));
}

void broadcast_module(nn::Module& m, int root)
{
    for (auto& [name, p] : m.named_parameters()) broadcast(p, root);
    for (auto& [name, b] : m.named_buffers()) broadcast(b, root);
}

void barrier()
{
    MPI_Comm c = detail::comm("barrier");
    MPI_Request r = MPI_REQUEST_NULL;
    detail::check(MPI_Ibarrier(c, &r), "barrier");
    detail::wait_all(&r, 1, "barrier", "no data");
}

}  // namespace spool::dist
