// Value: a dense, contiguous, row-major n-d array with a runtime dtype and no
// gradient — what kernels read and write. Storage is 64-byte aligned and comes from
// a size-bucketed caching allocator, so a training step reuses last step's buffers.
// Copying a Value shares its storage; clone() copies the data.
#pragma once
#include <cstdint>
#include <memory>

#include "tensor/dtype.hpp"
#include "tensor/errors.hpp"
#include "tensor/shape.hpp"

namespace spool {

/// An aligned buffer returned to the allocator's cache on destruction, or memory adopted
/// from elsewhere (an xt::xarray moved into a Tensor) that its owner keeps alive.
class Storage {
public:
    /// Largest buffer the allocator hands out (2^47 bytes, the x86-64 user address space).
    static constexpr std::size_t max_bytes = std::size_t{1} << 47;
    explicit Storage(std::size_t bytes);
    /// Adopt `bytes` at `data`, kept alive by `owner` and released with it (never cached,
    /// not counted by allocator_stats()). data needs only its element type's alignment.
    Storage(void* data, std::size_t bytes, std::shared_ptr<const void> owner);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    void* data() const { return data_; }
    std::size_t bytes() const { return bytes_; }
    /// Bumped by every in-place change of the buffer; backward compares it with the version
    /// an op saw when it saved the tensor (PyTorch's version counter).
    std::uint64_t version() const { return version_; }
    void bump_version() { ++version_; }

private:
    void* data_;
    std::size_t bytes_;
    std::uint64_t version_ = 0;
    std::shared_ptr<const void> owner_;  ///< set for adopted memory
};

/// Allocator statistics (bytes held by live storages and by the cache).
struct AllocatorStats {
    std::size_t bytes_in_use = 0;
    std::size_t bytes_cached = 0;
    std::size_t peak_bytes_in_use = 0;
};
AllocatorStats allocator_stats();
/// Start a new peak from the bytes in use now (torch.cuda.reset_peak_memory_stats).
void reset_peak_allocator_stats();
/// Release every cached (free) buffer back to the system.
void empty_cache();

class Value {
public:
    Value() = default;
    /// Uninitialised storage.
    static Value empty(const Shape& shape, DType dt);
    static Value zeros(const Shape& shape, DType dt);
    static Value full(const Shape& shape, double v, DType dt);
    /// A Value over an existing storage, which must hold shape.numel() elements of dt.
    static Value over(std::shared_ptr<Storage> storage, const Shape& shape, DType dt);

    bool defined() const { return storage_ != nullptr; }
    const Shape& shape() const { return shape_; }
    int rank() const { return shape_.rank(); }
    std::int64_t numel() const { return shape_.numel(); }
    DType dtype() const { return dtype_; }
    std::size_t nbytes() const { return defined() ? static_cast<std::size_t>(numel()) * itemsize(dtype_) : 0; }

    template <class T> T* data() const
    {
        SPOOL_ASSERT(dtype_of<T>::value == dtype_);
        return static_cast<T*>(storage_->data()) + offset_;
    }
    void* raw() const { return static_cast<char*>(storage_->data()) + offset_ * itemsize(dtype_); }

    /// Same storage, new shape (numel must match; checked by the caller's op).
    Value view(const Shape& shape) const;
    /// Rows [begin, end) of dim 0, sharing storage.
    Value narrow0(std::int64_t begin, std::int64_t end) const;
    Value clone() const;
    /// Element i (flat) as double, for printing and tests.
    double at(std::int64_t i) const;
    /// Write element i (an in-place change: bumps the version).
    void set(std::int64_t i, double v);
    bool shares_storage(const Value& o) const { return storage_ == o.storage_; }
    long use_count() const { return storage_.use_count(); }
    const std::shared_ptr<Storage>& storage() const { return storage_; }
    /// The storage's version (0 for an undefined Value); views share it.
    std::uint64_t version() const { return storage_ ? storage_->version() : 0; }
    /// Record an in-place change. Every API that writes an existing buffer calls it (set,
    /// add_, the optimizer updates, gradient clipping, Tensor::data()); kernels writing a
    /// fresh output do not need to.
    void bump_version() const
    {
        if (storage_) storage_->bump_version();
    }

private:
    std::shared_ptr<Storage> storage_;
    std::int64_t offset_ = 0;
    Shape shape_;
    DType dtype_ = DType::f32;
};

}  // namespace spool
