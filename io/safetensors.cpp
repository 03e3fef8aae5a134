// Safetensors reader and writer. Reading is two-phase: the header is parsed and every
// entry validated against the data buffer's size (dtype, shape, offsets, exact coverage)
// before any tensor storage is allocated, so a hostile file cannot make us allocate more
// than it holds or read past its end; the header is parsed as a stream (SAX), never held
// as a JSON document. Files are read with pread, written atomically (uniquely named
// temporary file, fsync, rename, fsync of the directory). Not here: dtypes other than
// F32/F64/I64/BOOL, mmap.
#include "io/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <random>
#include <tuple>
#include <unordered_set>

#include <nlohmann/json.hpp>

namespace spool::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swapping in read/write");

namespace {

using nlohmann::json;

// ---- format constants ----------------------------------------------------------------------

/// The reference implementation refuses headers above 100 MB; so do we.
constexpr std::uint64_t max_header_bytes = 100'000'000;
/// A valid header nests three levels: {name: {"shape": [dims]}}. Deeper is refused while
/// parsing, as are arrays longer than any shape or data_offsets can be.
constexpr int max_container_depth = 2;
constexpr std::size_t max_array_len = 64;
constexpr std::size_t max_name_in_message = 200;
/// Most elements (non-zero dims multiplied) of a tensor: its size in bytes at 8 bytes an
/// element must fit in ptrdiff_t (the limit of spool's Shape).
constexpr std::int64_t max_elements = PTRDIFF_MAX / 8;
/// Real files hold a handful; a cap keeps a header of millions of tiny metadata strings
/// (each costing a map node ~10 times its text) from costing more than a few MB.
constexpr std::size_t max_metadata_entries = 65'536;

struct DTypeTag {
    const char* tag;
    DType dtype;
};
constexpr std::array<DTypeTag, 4> supported_tags{{{"F32", DType::f32}, {"F64", DType::f64}, {"I64", DType::i64},
                                                  {"BOOL", DType::b8}}};
/// Dtypes of the format that spool has no storage type for (yet).
constexpr std::array<const char*, 12> unsupported_tags{"F16",  "BF16", "F8_E5M2", "F8_E4M3", "I8",  "U8",
                                                      "I16",  "U16",  "I32",     "U32",     "U64", "C64"};

const char* tag_of(DType dt)
{
    for (const auto& t : supported_tags)
        if (t.dtype == dt) return t.tag;
    return "?";
}

// ---- error messages ------------------------------------------------------------------------

/// Cut s to at most n bytes without splitting a UTF-8 sequence.
std::string clip(std::string_view s, std::size_t n)
{
    if (s.size() <= n) return std::string(s);
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    return std::string(s.substr(0, n)) + "...";
}

/// A tensor name as messages show it: 'name' (clipped, hostile names can be huge).
std::string shown(std::string_view name)
{
    std::string out = "'";  // appended, not "'" + s + "'": GCC 12 warns falsely (-Wrestrict) on that
    out += clip(name, max_name_in_message);
    out += '\'';
    return out;
}

/// A JSON value as messages show it (clipped).
std::string brief(const json& j) { return clip(j.dump(-1, ' ', false, json::error_handler_t::replace), 100); }

/// Where bytes come from: the path, or "<memory>". Every read error names it.
struct Source {
    std::string name;

    template <class... Args>
    [[noreturn]] void fail(const Args&... args) const
    {
        throw IoError(detail::cat("safetensors: ", name, ": ", args...));
    }
};

// ---- header: parsing -----------------------------------------------------------------------

struct Entry {
    std::string name;
    DType dtype = DType::f32;
    Shape shape;
    std::uint64_t begin = 0, end = 0;
    std::size_t position = 0;  ///< index of the entry in the header's key order
};

/// A deque, not a vector: no doubling slack, and popping the front while tensors are
/// built hands memory back as the tensors take it.
struct Header {
    std::deque<Entry> entries;  ///< ordered by (begin, end, position)
    std::map<std::string, std::string> metadata;
};

/// A JSON number that is a non-negative integer (nlohmann keeps those as unsigned).
bool as_count(const json& j, std::uint64_t& out)
{
    if (j.is_number_unsigned()) {
        out = j.get<std::uint64_t>();
        return true;
    }
    if (j.is_number_integer() && j.get<std::int64_t>() >= 0) {
        out = static_cast<std::uint64_t>(j.get<std::int64_t>());
        return true;
    }
    return false;
}

DType parse_dtype(const std::string& name, const json& e, const Source& src)
{
    const json& d = e.at("dtype");
    if (!d.is_string()) src.fail("tensor ", shown(name), " dtype must be a string; got ", brief(d));
    const std::string& tag = d.get_ref<const std::string&>();
    for (const auto& t : supported_tags)
        if (tag == t.tag) return t.dtype;
    for (const char* t : unsupported_tags)
        if (tag == t)
            src.fail("tensor ", shown(name), " has dtype ", tag,
                     ", which spool does not read (supported: F32, F64, I64, BOOL)");
    src.fail("tensor ", shown(name), " has unknown dtype ", brief(d));
}

Shape parse_shape(const std::string& name, const json& e, const Source& src)
{
    const json& s = e.at("shape");
    if (!s.is_array()) src.fail("tensor ", shown(name), " shape must be a list of integers; got ", brief(s));
    if (s.size() > static_cast<std::size_t>(Shape::max_rank))
        src.fail("tensor ", shown(name), " shape ", brief(s), " has ", s.size(), " dimensions; spool supports at most ",
                 Shape::max_rank);
    std::vector<std::int64_t> dims;
    std::int64_t nonzero_product = 1;
    for (const json& d : s) {
        std::uint64_t n = 0;
        if (!as_count(d, n))
            src.fail("tensor ", shown(name), " shape ", brief(s), " has dimension ", brief(d),
                     "; dimensions must be non-negative integers");
        // the product of the non-zero dims must be a size spool can hold, so that no partial
        // product (numel, strides, in any order) can overflow, even for a zero-size tensor
        // like (0, 2^62, 4) that a reduction over dim 0 would turn into (2^62, 4)
        if (n > static_cast<std::uint64_t>(max_elements) ||
            __builtin_mul_overflow(nonzero_product, std::max<std::int64_t>(1, static_cast<std::int64_t>(n)),
                                   &nonzero_product) ||
            nonzero_product > max_elements)
            src.fail("tensor ", shown(name), " shape ", brief(s), " has more elements than spool allows (",
                     max_elements, ", so that its size in bytes fits in ptrdiff_t)");
        dims.push_back(static_cast<std::int64_t>(n));
    }
    try {
        return Shape(dims);
    } catch (const std::exception& e) {  // a limit of Shape's that the check above does not know
        src.fail("tensor ", shown(name), " shape ", brief(s), " is not a valid shape (", e.what(), ")");
    }
}

/// "120 bytes" for numel * itemsize, without overflowing.
std::string bytes_text(std::int64_t numel, std::size_t item)
{
    const auto n = static_cast<std::uint64_t>(numel);
    if (n > UINT64_MAX / item) return "more than 2^64 bytes";
    return detail::cat(n * item, " bytes");
}

Entry parse_entry(std::string&& name, const json& e, std::uint64_t buffer_bytes, const Source& src)
{
    if (!e.is_object()) src.fail("tensor ", shown(name), " entry must be a JSON object; got ", brief(e));
    for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!e.contains(field)) src.fail("tensor ", shown(name), " has no '", field, "'");
    Entry out;
    out.dtype = parse_dtype(name, e, src);
    out.shape = parse_shape(name, e, src);

    const json& o = e.at("data_offsets");
    if (!o.is_array() || o.size() != 2 || !as_count(o[0], out.begin) || !as_count(o[1], out.end))
        src.fail("tensor ", shown(name), " data_offsets must be [begin, end] with non-negative integers; got ",
                 brief(o));
    if (out.begin > out.end || out.end > buffer_bytes)
        src.fail("tensor ", shown(name), " data_offsets [", out.begin, ", ", out.end,
                 "] are out of bounds for a data buffer of ", buffer_bytes, " bytes (need begin <= end <= ",
                 buffer_bytes, ")");
    const std::uint64_t span = out.end - out.begin, item = itemsize(out.dtype);
    if (span % item != 0 || span / item != static_cast<std::uint64_t>(out.shape.numel()))
        src.fail("tensor ", shown(name), " data_offsets [", out.begin, ", ", out.end, "] do not match shape ",
                 to_string(out.shape), " ", dtype_name(out.dtype), " (", bytes_text(out.shape.numel(), item), ")");
    out.name = std::move(name);
    return out;
}

/// The reference format requires the data buffer to be covered exactly: sorted by offset,
/// each tensor starts where the previous one ended and the last ends at the buffer's end.
void check_coverage(const std::deque<Entry>& sorted, std::uint64_t buffer_bytes, const Source& src)
{
    std::uint64_t pos = 0;
    const Entry* prev = nullptr;
    for (const Entry& e : sorted) {
        if (e.begin < pos)
            src.fail("tensors ", shown(prev->name), " [", prev->begin, ", ", prev->end, "] and ", shown(e.name), " [",
                     e.begin, ", ", e.end, "] overlap");
        if (e.begin > pos)
            src.fail("data buffer bytes [", pos, ", ", e.begin, ") belong to no tensor (a gap before ", shown(e.name),
                     "); tensors must cover the buffer exactly");
        pos = e.end;
        prev = &e;
    }
    if (pos != buffer_bytes)
        src.fail("data buffer bytes [", pos, ", ", buffer_bytes, ") belong to no tensor (",
                 prev ? "after the last one, " + shown(prev->name) : std::string("the header lists none"),
                 "); tensors must cover the buffer exactly");
}

/// nlohmann's SAX interface, turned into a Header without building the document: only
/// the value being read (one entry, or one metadata value) exists as JSON at a time, so
/// the memory a header costs is its entries, not a DOM 20-30 times its size. It refuses
/// (while parsing) nesting deeper than a header has, overlong arrays, duplicate keys
/// (which nlohmann would otherwise merge silently) and oversized metadata.
class HeaderParser {
public:
    HeaderParser(std::uint64_t buffer_bytes, const Source& src) : buffer_bytes_(buffer_bytes), src_(src) {}

    bool null() { return scalar(json(nullptr)); }
    bool boolean(bool v) { return scalar(json(v)); }
    bool number_integer(json::number_integer_t v) { return scalar(json(v)); }
    bool number_unsigned(json::number_unsigned_t v) { return scalar(json(v)); }
    bool number_float(json::number_float_t v, const std::string&) { return scalar(json(v)); }
    bool string(std::string& v) { return scalar(json(std::move(v))); }
    bool binary(json::binary_t&) { return scalar(json()); }  // JSON text has no binary values

    bool start_object(std::size_t) { return open(json::object()); }
    bool start_array(std::size_t) { return open(json::array()); }
    bool end_object() { return close(); }
    bool end_array() { return close(); }

    bool key(std::string& k)
    {
        if (depth_ == 1) {  // a tensor name or "__metadata__"
            if (k == "__metadata__" ? seen_metadata_ : names_.count(k) != 0) src_.fail("duplicate tensor name ", shown(k));
            seen_metadata_ = seen_metadata_ || k == "__metadata__";
            member_ = std::move(k);
        } else if (in_metadata_ && depth_ == 2) {
            if (header_.metadata.count(k)) src_.fail("duplicate key ", shown(k), " in entry ", shown(member_));
            if (header_.metadata.size() >= max_metadata_entries)
                src_.fail("__metadata__ has more than ", max_metadata_entries, " entries");
            meta_key_ = std::move(k);
        } else {
            if (stack_.back()->contains(k)) src_.fail("duplicate key ", shown(k), " in entry ", shown(member_));
            pending_key_ = std::move(k);
        }
        return true;
    }

    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e)
    {
        std::string what = e.what();
        if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);  // drop "[json.exception...]"
        src_.fail("header is not valid JSON (", what, ")");
    }

    /// After a successful parse: the entries sorted by offset and checked for coverage.
    Header finish()
    {
        if (!root_is_object_) src_.fail("header must be a JSON object; got ", root_type_);
        names_.clear();  // it points into entries, which sorting moves
        // offsets give the writer's order; zero-size tensors sharing an offset keep header order
        std::sort(header_.entries.begin(), header_.entries.end(), [](const Entry& a, const Entry& b) {
            return std::tie(a.begin, a.end, a.position) < std::tie(b.begin, b.end, b.position);
        });
        check_coverage(header_.entries, buffer_bytes_, src_);
        return std::move(header_);
    }

private:
    /// A new element of the array at depth_ - 1 (if that is an array) counts toward its limit.
    void count_element()
    {
        if (depth_ >= 1 && is_array_[depth_ - 1] && ++count_[depth_ - 1] > max_array_len)
            src_.fail("header has an array of more than ", max_array_len, " elements; not a safetensors header");
    }

    /// Put v where the parse is: inside the value being built, or it is a whole value.
    void place(json&& v)
    {
        if (!stack_.empty()) {
            json& parent = *stack_.back();
            json* slot = nullptr;
            if (parent.is_array()) {
                parent.push_back(std::move(v));
                slot = &parent.back();
            } else {
                slot = &(parent[pending_key_] = std::move(v));
            }
            if (slot->is_structured()) stack_.push_back(slot);
            return;
        }
        value_ = std::move(v);
        if (value_.is_structured()) stack_.push_back(&value_);
    }

    bool scalar(json&& v)
    {
        count_element();
        place(std::move(v));
        if (stack_.empty()) complete();
        return true;
    }

    bool open(json&& container)
    {
        count_element();
        if (depth_ > max_container_depth)
            src_.fail("header nests deeper than a safetensors header ({name: {\"shape\": [...]}})");
        const bool is_array = container.is_array();
        is_array_[depth_] = is_array;
        count_[depth_] = 0;
        if (stack_.empty() && depth_ == 0 && !is_array) {
            root_is_object_ = true;  // the header itself: its members are read one at a time
        } else if (stack_.empty() && depth_ == 1 && member_ == "__metadata__" && !is_array) {
            in_metadata_ = true;     // likewise: metadata values are read one at a time
        } else {
            place(std::move(container));
        }
        ++depth_;
        return true;
    }

    bool close()
    {
        --depth_;
        if (!stack_.empty()) {
            stack_.pop_back();
            if (stack_.empty()) complete();
        } else if (depth_ == 1) {
            in_metadata_ = false;
        }
        return true;
    }

    /// value_ is a whole value: the root (when not an object), a member or a metadata value.
    void complete()
    {
        if (depth_ == 0) {
            root_type_ = value_.type_name();  // refused after the parse, so JSON errors come first
        } else if (depth_ == 1 && member_ == "__metadata__") {
            src_.fail("__metadata__ must be an object of strings; got ", brief(value_));
        } else if (depth_ == 1) {
            Entry& e = header_.entries.emplace_back(parse_entry(std::move(member_), value_, buffer_bytes_, src_));
            e.position = header_.entries.size() - 1;
            names_.insert(e.name);
        } else {
            if (!value_.is_string())
                src_.fail("__metadata__ value of ", shown(meta_key_), " must be a string; got ", brief(value_));
            header_.metadata.emplace(std::move(meta_key_), std::move(value_.get_ref<std::string&>()));
        }
        value_ = json();
    }

    std::uint64_t buffer_bytes_;
    const Source& src_;
    Header header_;
    std::unordered_set<std::string_view> names_;  ///< the entries' names (deque elements do not move)
    int depth_ = 0;                               ///< containers open
    std::array<bool, max_container_depth + 1> is_array_{};
    std::array<std::size_t, max_container_depth + 1> count_{};
    bool root_is_object_ = false, in_metadata_ = false, seen_metadata_ = false;
    const char* root_type_ = "nothing";
    std::string member_, meta_key_, pending_key_;  ///< the keys being read at depth 1, in metadata, below
    json value_;                                   ///< the value being built
    std::vector<json*> stack_;                     ///< its open containers
};

Header parse_header(std::string_view text, std::uint64_t buffer_bytes, const Source& src)
{
    HeaderParser p(buffer_bytes, src);
    json::sax_parse(text.begin(), text.end(), &p);
    return p.finish();
}

// ---- reading -------------------------------------------------------------------------------

std::uint64_t read_u64_le(const unsigned char* p)
{
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

/// Bytes after the 8-byte prefix, checked against the header limit and the file size.
std::uint64_t checked_header_len(std::uint64_t header_len, std::uint64_t total, const Source& src)
{
    if (header_len > max_header_bytes)
        src.fail("header length ", header_len, " exceeds the limit of ", max_header_bytes, " bytes");
    if (header_len > total - 8)
        src.fail("header length ", header_len, " exceeds the ", total - 8, " bytes that follow it");
    return header_len;
}

void check_too_short(std::uint64_t total, const Source& src)
{
    if (total < 8) src.fail("file is ", total, " bytes, shorter than the 8-byte header length");
}

/// Allocate and fill each tensor; read_at(offset in buffer, dst, n) copies validated ranges.
template <class ReadAt>
SafetensorsFile read_tensors(Header&& h, ReadAt&& read_at, const Source& src)
{
    SafetensorsFile out;
    out.metadata = std::move(h.metadata);
    out.tensors.reserve(h.entries.size());
    for (; !h.entries.empty(); h.entries.pop_front()) {  // each entry's memory goes as its tensor comes
        Entry& e = h.entries.front();
        Value v = Value::empty(e.shape, e.dtype);
        if (v.nbytes() > 0) read_at(e.begin, v.raw(), v.nbytes(), e.name);
        if (e.dtype == DType::b8) {
            // any other byte would be an invalid bool (UB to read as one)
            const auto* bytes = static_cast<const unsigned char*>(v.raw());
            for (std::size_t i = 0; i < v.nbytes(); ++i)
                if (bytes[i] > 1)
                    src.fail("tensor ", shown(e.name), " (BOOL) element ", i, " has byte value ", int{bytes[i]},
                             "; BOOL bytes must be 0 or 1");
        }
        out.tensors.emplace_back(std::move(e.name), Tensor(std::move(v)));
    }
    return out;
}

const char* file_kind(mode_t m)
{
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a file";
}

/// A file descriptor closed on scope exit.
struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd()
    {
        if (fd >= 0) ::close(fd);
    }
};

/// Read exactly n bytes at offset; short reads (the file shrank) are errors.
void pread_all(int fd, std::uint64_t offset, void* dst, std::size_t n, const Source& src, std::string_view what)
{
    auto* p = static_cast<char*>(dst);
    while (n > 0) {
        const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) src.fail("cannot read ", what, ": ", std::strerror(errno));
        if (got == 0) src.fail("file ended at byte ", offset, " while reading ", what, " (did it change while being read?)");
        p += got;
        offset += static_cast<std::uint64_t>(got);
        n -= static_cast<std::size_t>(got);
    }
}

// ---- writing -------------------------------------------------------------------------------

/// The 8-byte length and the JSON header, padded with spaces so that the data buffer
/// starts at a multiple of 8 bytes (as the reference writer does).
std::string encode_header(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata)
{
    json header = json::object();
    std::vector<std::string> keys;  // the writer's order, kept in the text below
    if (!metadata.empty()) {
        header["__metadata__"] = metadata;
        keys.push_back("__metadata__");
    }
    std::uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        SPOOL_CHECK(t.defined(), ValueError, "save_safetensors: tensor ", shown(name), " is undefined");
        SPOOL_CHECK(name != "__metadata__", ValueError, "save_safetensors: '__metadata__' is reserved and cannot name a tensor");
        SPOOL_CHECK(!header.contains(name), ValueError, "save_safetensors: duplicate tensor name ", shown(name));
        const std::uint64_t n = t.value().nbytes();
        header[name] = {{"dtype", tag_of(t.dtype())}, {"shape", t.shape().vec()}, {"data_offsets", {offset, offset + n}}};
        keys.push_back(name);
        offset += n;
    }
    // nlohmann's object sorts its keys; write them in our order instead
    std::string text = "{";
    try {
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if (i) text += ',';
            text += json(keys[i]).dump() + ':' + header[keys[i]].dump();
        }
    } catch (const json::type_error& e) {
        throw ValueError(detail::cat("save_safetensors: tensor names and metadata must be valid UTF-8 (", e.what(), ")"));
    }
    text += '}';
    text.append((8 - text.size() % 8) % 8, ' ');

    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
    return out + text;
}

/// "safetensors: cannot save '<path>': <what>: <strerror(err)>"
[[noreturn]] void save_fail(const std::string& path, const char* what, int err)
{
    throw IoError(detail::cat("safetensors: cannot save '", path, "': ", what, ": ", std::strerror(err)));
}

void write_all(int fd, const void* data, std::size_t n, const std::string& path)
{
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
        const ssize_t put = ::write(fd, p, n);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) save_fail(path, "cannot write", errno);  // ENOSPC, EFBIG (RLIMIT_FSIZE), EIO
        p += put;
        n -= static_cast<std::size_t>(put);
    }
}

/// path + ".tmp.<pid>.<16 hex digits>": in the target's directory (so rename is atomic),
/// and never the name of another writer's temporary file.
std::string temporary_name(const std::string& path)
{
    std::random_device rd;
    const std::uint64_t r = (std::uint64_t{rd()} << 32) ^ rd();
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(r));
    return detail::cat(path, ".tmp.", ::getpid(), ".", hex);
}

}  // namespace

// ---- public API ----------------------------------------------------------------------------

std::string to_safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata)
{
    std::string out = encode_header(tensors, metadata);
    for (const auto& [name, t] : tensors) out.append(static_cast<const char*>(t.value().raw()), t.value().nbytes());
    return out;
}

SafetensorsFile from_safetensors_bytes(std::string_view bytes)
{
    const Source src{"<memory>"};
    check_too_short(bytes.size(), src);
    const std::uint64_t n =
        checked_header_len(read_u64_le(reinterpret_cast<const unsigned char*>(bytes.data())), bytes.size(), src);
    const std::string_view buffer = bytes.substr(8 + n);
    Header h = parse_header(bytes.substr(8, n), buffer.size(), src);
    return read_tensors(
        std::move(h), [&](std::uint64_t at, void* dst, std::size_t len, std::string_view) { std::memcpy(dst, buffer.data() + at, len); },
        src);
}

SafetensorsFile load_safetensors(const std::string& path)
{
    const Source src{path};
    // stat before open: opening a FIFO blocks until a writer comes, and opening a device
    // may act on it; O_NONBLOCK and the fstat below cover a path swapped in between
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) src.fail("cannot open for reading: ", std::strerror(errno));
    if (!S_ISREG(st.st_mode)) src.fail("not a regular file (", file_kind(st.st_mode), ")");
    Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (f.fd < 0) src.fail("cannot open for reading: ", std::strerror(errno));
    if (::fstat(f.fd, &st) != 0) src.fail("cannot stat: ", std::strerror(errno));
    if (!S_ISREG(st.st_mode)) src.fail("not a regular file (", file_kind(st.st_mode), ")");
    if (const int fl = ::fcntl(f.fd, F_GETFL); fl < 0 || ::fcntl(f.fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
        src.fail("cannot clear O_NONBLOCK: ", std::strerror(errno));
    const auto total = static_cast<std::uint64_t>(st.st_size);

    check_too_short(total, src);
    unsigned char prefix[8];
    pread_all(f.fd, 0, prefix, 8, src, "the header length");
    const std::uint64_t n = checked_header_len(read_u64_le(prefix), total, src);
    Header h;
    {
        std::string text(n, '\0');
        pread_all(f.fd, 8, text.data(), n, src, "the header");
        h = parse_header(text, total - 8 - n, src);
    }  // the header text is freed before the tensors are allocated
    return read_tensors(
        std::move(h),
        [&](std::uint64_t at, void* dst, std::size_t len, std::string_view name) {
            pread_all(f.fd, 8 + n + at, dst, len, src, "tensor " + shown(name));
        },
        src);
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata)
{
    const std::string header = encode_header(tensors, metadata);  // argument errors before touching disk
    // a replaced file keeps its permission bits (stat follows a link: the bits of the file it names)
    struct stat target {};
    const bool replacing = ::stat(path.c_str(), &target) == 0;

    std::string tmp;
    int fd = -1;
    for (int attempt = 0; fd < 0; ++attempt) {
        tmp = temporary_name(path);
        // O_EXCL (with O_NOFOLLOW): never an existing file, never through a link planted at the name
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, replacing ? 0600 : 0666);
        if (fd < 0 && (errno != EEXIST || attempt == 15)) save_fail(path, "cannot create a temporary file beside it", errno);
    }
    try {
        Fd f(fd);
        if (replacing && ::fchmod(f.fd, target.st_mode & 07777) != 0) save_fail(path, "cannot set permissions", errno);
        write_all(f.fd, header.data(), header.size(), path);
        for (const auto& [name, t] : tensors) write_all(f.fd, t.value().raw(), t.value().nbytes(), path);
        if (::fsync(f.fd) != 0) save_fail(path, "cannot fsync", errno);
        f.fd = -1;
        if (::close(fd) != 0) save_fail(path, "cannot close", errno);
        if (::rename(tmp.c_str(), path.c_str()) != 0) save_fail(path, "cannot rename the temporary file over it", errno);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    // make the rename itself durable; a filesystem that cannot fsync a directory still
    // has the complete file, so a failure here is not an error
    std::string dir = std::filesystem::path(path).parent_path().string();
    Fd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.fd >= 0) (void)::fsync(d.fd);
}

}  // namespace spool::io
