// Safetensors reader and writer. Reading is two-phase: the header is parsed and every
// entry validated against the data buffer's size (dtype, shape, offsets, exact coverage)
// before any tensor storage is allocated, so a hostile file cannot make us allocate more
// than it holds or read past its end. Files are read with pread, written atomically
// (temporary file, fsync, rename). Not here: dtypes other than F32/F64/I64/BOOL, mmap.
#include "io/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <set>
#include <tuple>

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

struct Header {
    std::vector<Entry> entries;  ///< ordered by (begin, end, position)
    std::map<std::string, std::string> metadata;
};

/// Parse the header text, refusing (while parsing, before memory is spent on them) nesting
/// deeper than a header has, overlong arrays and duplicate keys, which nlohmann would
/// otherwise merge silently. key_order receives the top-level keys in file order.
json parse_json(std::string_view text, const Source& src, std::vector<std::string>& key_order)
{
    std::array<bool, max_container_depth + 1> is_array{};
    std::array<std::size_t, max_container_depth + 1> count{};
    std::set<std::string> top_keys, entry_keys;
    using Event = json::parse_event_t;
    auto check = [&](int depth, Event ev, json& parsed) -> bool {
        const bool element_done = ev == Event::value || ev == Event::object_end || ev == Event::array_end;
        if (element_done && depth >= 1 && is_array[depth - 1] && ++count[depth - 1] > max_array_len)
            src.fail("header has an array of more than ", max_array_len, " elements; not a safetensors header");
        if (ev == Event::object_start || ev == Event::array_start) {
            if (depth > max_container_depth)
                src.fail("header nests deeper than a safetensors header ({name: {\"shape\": [...]}})");
            is_array[depth] = ev == Event::array_start;
            count[depth] = 0;
            if (depth == 1) entry_keys.clear();
        } else if (ev == Event::key && depth == 1) {
            const std::string& k = parsed.get_ref<const std::string&>();
            if (!top_keys.insert(k).second) src.fail("duplicate tensor name ", shown(k));
            key_order.push_back(k);
        } else if (ev == Event::key && depth == 2) {
            const std::string& k = parsed.get_ref<const std::string&>();
            if (!entry_keys.insert(k).second)
                src.fail("duplicate key ", shown(k), " in entry ", shown(key_order.empty() ? "" : key_order.back()));
        }
        return true;
    };
    try {
        return json::parse(text.begin(), text.end(), check);
    } catch (const json::exception& e) {
        std::string what = e.what();
        if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);  // drop "[json.exception...]"
        src.fail("header is not valid JSON (", what, ")");
    }
}

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
    Shape shape;
    std::int64_t nonzero_product = 1;
    for (const json& d : s) {
        std::uint64_t n = 0;
        if (!as_count(d, n))
            src.fail("tensor ", shown(name), " shape ", brief(s), " has dimension ", brief(d),
                     "; dimensions must be non-negative integers");
        // the product of the non-zero dims must fit, so that no partial product (numel,
        // strides, in any order) can overflow, even for a zero-size tensor like (0, 2^62, 4)
        if (n > static_cast<std::uint64_t>(INT64_MAX) ||
            __builtin_mul_overflow(nonzero_product, std::max<std::int64_t>(1, static_cast<std::int64_t>(n)), &nonzero_product))
            src.fail("tensor ", shown(name), " shape ", brief(s), " has more elements than fit in 64 bits");
        shape.push_back(static_cast<std::int64_t>(n));
    }
    return shape;
}

/// "120 bytes" for numel * itemsize, without overflowing.
std::string bytes_text(std::int64_t numel, std::size_t item)
{
    const auto n = static_cast<std::uint64_t>(numel);
    if (n > UINT64_MAX / item) return "more than 2^64 bytes";
    return detail::cat(n * item, " bytes");
}

Entry parse_entry(const std::string& name, const json& e, std::uint64_t buffer_bytes, const Source& src)
{
    if (!e.is_object()) src.fail("tensor ", shown(name), " entry must be a JSON object; got ", brief(e));
    for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!e.contains(field)) src.fail("tensor ", shown(name), " has no '", field, "'");
    Entry out;
    out.name = name;
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
    return out;
}

std::map<std::string, std::string> parse_metadata(const json& m, const Source& src)
{
    if (!m.is_object()) src.fail("__metadata__ must be an object of strings; got ", brief(m));
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : m.items()) {
        if (!v.is_string()) src.fail("__metadata__ value of ", shown(k), " must be a string; got ", brief(v));
        out.emplace(k, v.get<std::string>());
    }
    return out;
}

/// The reference format requires the data buffer to be covered exactly: sorted by offset,
/// each tensor starts where the previous one ended and the last ends at the buffer's end.
void check_coverage(const std::vector<Entry>& sorted, std::uint64_t buffer_bytes, const Source& src)
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

Header parse_header(std::string_view text, std::uint64_t buffer_bytes, const Source& src)
{
    std::vector<std::string> key_order;
    const json doc = parse_json(text, src, key_order);
    if (!doc.is_object()) src.fail("header must be a JSON object; got ", doc.type_name());

    Header h;
    for (const std::string& name : key_order) {
        const json& e = doc.at(name);
        if (name == "__metadata__") {
            h.metadata = parse_metadata(e, src);
            continue;
        }
        h.entries.push_back(parse_entry(name, e, buffer_bytes, src));
        h.entries.back().position = h.entries.size() - 1;
    }
    // offsets give the writer's order; zero-size tensors sharing an offset keep header order
    std::sort(h.entries.begin(), h.entries.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.begin, a.end, a.position) < std::tie(b.begin, b.end, b.position);
    });
    check_coverage(h.entries, buffer_bytes, src);
    return h;
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
    for (Entry& e : h.entries) {
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

void write_all(int fd, const void* data, std::size_t n, const std::string& path)
{
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
        const ssize_t put = ::write(fd, p, n);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) throw IoError(detail::cat("safetensors: cannot write '", path, "': ", std::strerror(errno)));
        p += put;
        n -= static_cast<std::size_t>(put);
    }
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
    Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (f.fd < 0) src.fail("cannot open for reading: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(f.fd, &st) != 0) src.fail("cannot stat: ", std::strerror(errno));
    if (!S_ISREG(st.st_mode)) src.fail("not a regular file");
    const auto total = static_cast<std::uint64_t>(st.st_size);

    check_too_short(total, src);
    unsigned char prefix[8];
    pread_all(f.fd, 0, prefix, 8, src, "the header length");
    const std::uint64_t n = checked_header_len(read_u64_le(prefix), total, src);
    std::string text(n, '\0');
    pread_all(f.fd, 8, text.data(), n, src, "the header");
    Header h = parse_header(text, total - 8 - n, src);
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
    const std::string tmp = path + ".tmp";
    {
        Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (f.fd < 0) throw IoError(detail::cat("safetensors: cannot open '", tmp, "' for writing: ", std::strerror(errno)));
        try {
            write_all(f.fd, header.data(), header.size(), tmp);
            for (const auto& [name, t] : tensors) write_all(f.fd, t.value().raw(), t.value().nbytes(), tmp);
            if (::fsync(f.fd) != 0) throw IoError(detail::cat("safetensors: cannot fsync '", tmp, "': ", std::strerror(errno)));
            const int fd = f.fd;
            f.fd = -1;
            if (::close(fd) != 0) throw IoError(detail::cat("safetensors: cannot close '", tmp, "': ", std::strerror(errno)));
        } catch (...) {
            ::unlink(tmp.c_str());
            throw;
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw IoError(detail::cat("safetensors: cannot rename '", tmp, "' to '", path, "': ", std::strerror(err)));
    }
    // make the rename itself durable; a filesystem that cannot fsync a directory still
    // has the complete file, so a failure here is not an error
    std::string dir = std::filesystem::path(path).parent_path().string();
    Fd d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.fd >= 0) (void)::fsync(d.fd);
}

}  // namespace spool::io
