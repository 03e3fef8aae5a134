#include "tensor/value.hpp"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "tensor/profiler.hpp"

namespace spool {

// ---- caching allocator --------------------------------------------------------
// Buffers are rounded up to a size class and kept on a free list per class when released:
// a training step allocates the same sizes every step, so after the first step no buffer
// is page-faulted in fresh (docs/benchmarks.md, W5). Classes are powers of two up to 4 KiB,
// then four per octave (2^e, 1.25, 1.5 and 1.75 x 2^e): a large buffer wastes at most 25%
// where powers of two wasted up to half (T-small's [64, 32, 768] q/k/v projection, 6 MiB,
// held 8).

namespace {

constexpr int n_buckets = 4 * 48;

struct Cache {
    std::mutex mu;
    std::vector<void*> free_list[n_buckets];
    AllocatorStats stats;
};

Cache& cache()
{
    static Cache* c = new Cache;  // never destroyed: storages may outlive static destruction
    return *c;
}

int bucket_of(std::size_t bytes)
{
    if (bytes <= 4096) {
        int b = 6;  // 64 bytes
        while ((std::size_t{1} << b) < bytes) ++b;
        return 4 * b;
    }
    const int e = 63 - __builtin_clzll(bytes);  // 2^e <= bytes < 2^(e+1)
    const std::size_t base = std::size_t{1} << e, quarter = base >> 2;
    return 4 * e + static_cast<int>((bytes - base + quarter - 1) / quarter);  // a quotient of 4 is 2^(e+1)
}

std::size_t capacity_of(int bucket)
{
    const std::size_t base = std::size_t{1} << (bucket / 4);
    return base + static_cast<std::size_t>(bucket % 4) * (base >> 2);
}

}  // namespace

Storage::Storage(std::size_t bytes) : bytes_(bytes)
{
    SPOOL_CHECK(bytes <= max_bytes, ValueError, "Storage: allocation of ", bytes, " bytes is too large");
    if (profiler::enabled()) profiler::detail::count_alloc(bytes);
    int b = bucket_of(bytes == 0 ? 1 : bytes);
    std::size_t cap = capacity_of(b);
    Cache& c = cache();
    {
        std::lock_guard<std::mutex> lock(c.mu);
        c.stats.bytes_in_use += cap;
        if (c.stats.bytes_in_use > c.stats.peak_bytes_in_use) c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
        auto& fl = c.free_list[b];
        if (!fl.empty()) {
            data_ = fl.back();
            fl.pop_back();
            c.stats.bytes_cached -= cap;
            return;
        }
    }
    data_ = std::aligned_alloc(64, cap);
    if (!data_) {
        empty_cache();
        data_ = std::aligned_alloc(64, cap);
    }
    if (!data_) {
        std::lock_guard<std::mutex> lock(cache().mu);
        cache().stats.bytes_in_use -= cap;
        throw std::bad_alloc();
    }
}

Storage::Storage(void* data, std::size_t bytes, std::shared_ptr<const void> owner)
    : data_(data), bytes_(bytes), owner_(std::move(owner))
{
}

Storage::~Storage()
{
    if (owner_) return;  // adopted memory: owner_ releases it
    int b = bucket_of(bytes_ == 0 ? 1 : bytes_);
    std::size_t cap = capacity_of(b);
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    c.stats.bytes_in_use -= cap;
    c.stats.bytes_cached += cap;
    c.free_list[b].push_back(data_);
}

AllocatorStats allocator_stats()
{
    std::lock_guard<std::mutex> lock(cache().mu);
    return cache().stats;
}

void reset_peak_allocator_stats()
{
    std::lock_guard<std::mutex> lock(cache().mu);
    cache().stats.peak_bytes_in_use = cache().stats.bytes_in_use;
}

void empty_cache()
{
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    for (int b = 0; b < n_buckets; ++b) {
        for (void* p : c.free_list[b]) std::free(p);
        c.stats.bytes_cached -= c.free_list[b].size() * capacity_of(b);
        c.free_list[b].clear();
    }
}

// ---- Value ----------------------------------------------------------------------

Value Value::empty(const Shape& shape, DType dt)
{
    // cannot overflow: a Shape holds at most Shape::max_numel elements, 8 bytes each at most
    const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * itemsize(dt);
    SPOOL_CHECK(bytes <= Storage::max_bytes, ValueError, "allocate: a ", dtype_name(dt), " tensor of shape ",
                to_string(shape), " needs ", bytes, " bytes, more than the largest allocation (", Storage::max_bytes,
                " bytes)");
    Value v;
    v.shape_ = shape;
    v.dtype_ = dt;
    v.storage_ = std::make_shared<Storage>(bytes);
    return v;
}

Value Value::over(std::shared_ptr<Storage> storage, const Shape& shape, DType dt)
{
    const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * itemsize(dt);
    SPOOL_CHECK(storage && storage->bytes() >= bytes, ValueError, "Value: a ", dtype_name(dt), " tensor of shape ",
                to_string(shape), " needs ", bytes, " bytes; the storage holds ", storage ? storage->bytes() : 0);
    Value v;
    v.shape_ = shape;
    v.dtype_ = dt;
    v.storage_ = std::move(storage);
    return v;
}

Value Value::zeros(const Shape& shape, DType dt)
{
    Value v = empty(shape, dt);
    std::memset(v.raw(), 0, v.nbytes());
    return v;
}

Value Value::full(const Shape& shape, double x, DType dt)
{
    Value v = empty(shape, dt);
    std::int64_t n = v.numel();
    switch (dt) {
    case DType::f32: std::fill_n(v.data<float>(), n, static_cast<float>(x)); break;
    case DType::f64: std::fill_n(v.data<double>(), n, x); break;
    case DType::i64: std::fill_n(v.data<std::int64_t>(), n, static_cast<std::int64_t>(x)); break;
    case DType::b8: std::fill_n(v.data<bool>(), n, x != 0); break;
    }
    return v;
}

Value Value::view(const Shape& shape) const
{
    SPOOL_ASSERT(shape.numel() == numel());
    Value v = *this;
    v.shape_ = shape;
    return v;
}

Value Value::narrow0(std::int64_t begin, std::int64_t end) const
{
    Value v = *this;
    v.shape_.set(0, end - begin);
    v.offset_ += begin * shape_.prod(1, shape_.rank());
    return v;
}

Value Value::clone() const
{
    Value v = empty(shape_, dtype_);
    if (nbytes()) std::memcpy(v.raw(), raw(), nbytes());
    return v;
}

double Value::at(std::int64_t i) const
{
    switch (dtype_) {
    case DType::f32: return data<float>()[i];
    case DType::f64: return data<double>()[i];
    case DType::i64: return static_cast<double>(data<std::int64_t>()[i]);
    case DType::b8: return data<bool>()[i] ? 1.0 : 0.0;
    }
    return 0;
}

void Value::set(std::int64_t i, double x)
{
    storage_->bump_version();
    switch (dtype_) {
    case DType::f32: data<float>()[i] = static_cast<float>(x); break;
    case DType::f64: data<double>()[i] = x; break;
    case DType::i64: data<std::int64_t>()[i] = static_cast<std::int64_t>(x); break;
    case DType::b8: data<bool>()[i] = x != 0; break;
    }
}

}  // namespace spool
