// Safetensors: round trips of every dtype (scalars and zero-size tensors included), order
// and metadata kept, the atomic write, a fixture written from PyTorch tensors
// (tests/fixtures/make_safetensors_fixture.py), a corpus of hostile files each giving an
// IoError with its message, and randomized corruptions of a valid file (run under ASan +
// UBSan in CI): each parses or throws IoError, nothing else.
#include <doctest/doctest.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/alloc_counter.hpp"
#include "io/temp_dir.hpp"
#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using namespace spool::io;
using nlohmann::json;
using spool::test::message_of;
using spool::test::read_file;
using spool::test::TempDir;
using spool::test::write_file;

namespace {

std::string le_u64(std::uint64_t v)
{
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
    return s;
}

/// A safetensors byte string from header text and data (declared length = header size).
std::string file_bytes(const std::string& header, const std::string& data = "")
{
    return le_u64(header.size()) + header + data;
}

/// The IoError message from parsing a header with data, minus the "safetensors: <memory>: " prefix.
std::string parse_error(const std::string& header, const std::string& data = "")
{
    const std::string prefix = "safetensors: <memory>: ";
    std::string m = message_of<IoError>([&] { (void)from_safetensors_bytes(file_bytes(header, data)); });
    return m.rfind(prefix, 0) == 0 ? m.substr(prefix.size()) : "<unprefixed> " + m;
}

std::string raw_bytes(const Tensor& t) { return {static_cast<const char*>(t.value().raw()), t.value().nbytes()}; }

/// Same name, dtype, shape and bytes (bitwise, so NaN and -0.0 count).
void check_same(const NamedTensors& got, const NamedTensors& want)
{
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        CAPTURE(want[i].first);
        CHECK(got[i].first == want[i].first);
        CHECK(got[i].second.dtype() == want[i].second.dtype());
        CHECK(to_string(got[i].second.shape()) == to_string(want[i].second.shape()));
        CHECK(raw_bytes(got[i].second) == raw_bytes(want[i].second));
        CHECK_FALSE(got[i].second.requires_grad());
    }
}

/// Every dtype, a scalar and a zero-size tensor of each, names deliberately not sorted.
NamedTensors sample_tensors()
{
    manual_seed(7);
    const double nan = std::nan("");
    return {
        {"z.weight", randn({3, 4})},
        {"a.f64", from_vector(std::vector<double>{1.5, -0.0, nan, 1e-310, -1e308}, {5}, {.dtype = f64})},
        {"m.i64", from_vector(std::vector<std::int64_t>{INT64_MIN, -1, 0, 1, INT64_MAX, 42}, {2, 1, 3})},
        {"mask", from_vector(std::vector<bool>{true, false, false, true, true, false}, {2, 3})},
        {"scalar.f32", scalar(3.25)},
        {"scalar.f64", scalar(-2.0, {.dtype = f64})},
        {"scalar.i64", full({}, 9, {.dtype = i64})},
        {"scalar.bool", full({}, 1, {.dtype = bool_})},
        {"empty.f32", zeros({0, 4})},
        {"empty.f64", zeros({2, 0}, {.dtype = f64})},
        {"empty.i64", zeros({0}, {.dtype = i64})},
        {"empty.bool", zeros({3, 0, 2}, {.dtype = bool_})},
        {"x.f32", from_vector(std::vector<float>{-0.0f, INFINITY, -INFINITY, 1e-45f}, {4})},
    };
}

}  // namespace

// ---- round trips ---------------------------------------------------------------------------

TEST_CASE("round trip in memory: every dtype, scalars, zero-size tensors, order and metadata kept")
{
    const NamedTensors tensors = sample_tensors();
    const std::map<std::string, std::string> meta{{"format", "pt"}, {"step", "1200"}, {"unicode", "héllo ✓"}};
    const SafetensorsFile f = from_safetensors_bytes(to_safetensors_bytes(tensors, meta));
    check_same(f.tensors, tensors);
    CHECK(f.metadata == meta);

    const SafetensorsFile g = from_safetensors_bytes(to_safetensors_bytes({}));
    CHECK(g.tensors.empty());
    CHECK(g.metadata.empty());
}

TEST_CASE("written layout: padded header, keys in order, contiguous offsets")
{
    const NamedTensors tensors = sample_tensors();
    const std::string bytes = to_safetensors_bytes(tensors, {{"k", "v"}});
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    CHECK(n % 8 == 0);
    const std::string header = bytes.substr(8, n);
    const std::size_t last = header.find_last_not_of(' ');  // JSON, then 0..7 spaces of padding
    CHECK(header[last] == '}');
    CHECK(header.size() - 1 - last < 8);
    CHECK(header.find("{\"__metadata__\":{\"k\":\"v\"},\"z.weight\":{") == 0);
    CHECK(header.find("\"a.f64\"") > header.find("\"z.weight\""));

    const json h = json::parse(header);
    CHECK(h.at("z.weight").at("dtype") == "F32");
    CHECK(h.at("a.f64").at("dtype") == "F64");
    CHECK(h.at("m.i64").at("dtype") == "I64");
    CHECK(h.at("mask").at("dtype") == "BOOL");
    CHECK(h.at("scalar.f32").at("shape") == json::array());
    std::uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        CAPTURE(name);
        CHECK(h.at(name).at("data_offsets") == json::array({offset, offset + t.value().nbytes()}));
        offset += t.value().nbytes();
    }
    CHECK(bytes.size() == 8 + n + offset);
}

TEST_CASE("zero-size tensors sharing an offset keep the writer's order")
{
    const NamedTensors tensors{{"b", zeros({0})}, {"a", zeros({0})}, {"w", ones({2})}, {"c", zeros({0, 2})},
                               {"v", ones({1})}, {"e", zeros({0})}};
    check_same(from_safetensors_bytes(to_safetensors_bytes(tensors)).tensors, tensors);
}

TEST_CASE("save and load a file; the write is atomic and leaves no temporary file")
{
    TempDir dir;
    const std::string path = dir / "model.safetensors";
    const NamedTensors tensors = sample_tensors();
    save_safetensors(path, tensors, {{"format", "pt"}});
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
    CHECK(read_file(path) == to_safetensors_bytes(tensors, {{"format", "pt"}}));
    const SafetensorsFile f = load_safetensors(path);
    check_same(f.tensors, tensors);
    CHECK(f.metadata.at("format") == "pt");

    // overwriting replaces the whole file
    const NamedTensors smaller{{"only", scalar(1.0)}};
    save_safetensors(path, smaller);
    check_same(load_safetensors(path).tensors, smaller);
    CHECK(load_safetensors(path).metadata.empty());
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_CASE("file errors name the path")
{
    TempDir dir;
    const std::string missing = dir / "missing.safetensors";
    CHECK(message_of<IoError>([&] { (void)load_safetensors(missing); }) ==
          "safetensors: " + missing + ": cannot open for reading: No such file or directory");
    CHECK(message_of<IoError>([&] { (void)load_safetensors(dir.path.string()); }) ==
          "safetensors: " + dir.path.string() + ": not a regular file (a directory)");

    const std::string nodir = dir / "no/such/dir/model.safetensors";
    CHECK(message_of<IoError>([&] { save_safetensors(nodir, {{"w", ones({2})}}); }) ==
          "safetensors: cannot save '" + nodir + "': cannot create a temporary file beside it: No such file or directory");

    // a truncated file on disk: the error names the file and the tensor ranges it checked
    const std::string path = dir / "cut.safetensors";
    const std::string bytes = to_safetensors_bytes({{"w", ones({4})}});
    std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 4);
    CHECK(message_of<IoError>([&] { (void)load_safetensors(path); }) ==
          "safetensors: " + path + ": tensor 'w' data_offsets [0, 16] are out of bounds for a data buffer of 12 bytes "
                                   "(need begin <= end <= 12)");
    std::ofstream(path, std::ios::binary) << bytes.substr(0, 5);
    CHECK(message_of<IoError>([&] { (void)load_safetensors(path); }) ==
          "safetensors: " + path + ": file is 5 bytes, shorter than the 8-byte header length");
}

TEST_CASE("save rejects bad arguments before touching the disk")
{
    TempDir dir;
    const std::string path = dir / "bad.safetensors";
    CHECK(message_of<ValueError>([&] { save_safetensors(path, {{"w", ones({1})}, {"w", ones({2})}}); }) ==
          "save_safetensors: duplicate tensor name 'w'");
    CHECK(message_of<ValueError>([&] { save_safetensors(path, {{"__metadata__", ones({1})}}); }) ==
          "save_safetensors: '__metadata__' is reserved and cannot name a tensor");
    CHECK(message_of<ValueError>([&] { save_safetensors(path, {{"w", Tensor()}}); }) ==
          "save_safetensors: tensor 'w' is undefined");
    CHECK(message_of<ValueError>([&] { (void)to_safetensors_bytes({{"bad\xff", ones({1})}}); })
              .rfind("save_safetensors: tensor names and metadata must be valid UTF-8", 0) == 0);
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
}

// ---- a file written from PyTorch tensors -----------------------------------------------------

namespace {
DType dtype_from(const std::string& name)
{
    if (name == "float32") return f32;
    if (name == "float64") return f64;
    if (name == "int64") return i64;
    REQUIRE(name == "bool");
    return bool_;
}

/// Element i of t equals the fixture's value exactly (floats are given as float.hex()).
bool same_element(const Tensor& t, std::int64_t i, const json& want)
{
    switch (t.dtype()) {
    case DType::f32:
    case DType::f64: {
        const double w = std::strtod(want.get<std::string>().c_str(), nullptr);
        const double got = t.dtype() == DType::f32 ? double{t.data<float>()[i]} : t.data<double>()[i];
        if (std::isnan(w)) return std::isnan(got);
        return std::bit_cast<std::uint64_t>(got) == std::bit_cast<std::uint64_t>(w);
    }
    case DType::i64: return t.data<std::int64_t>()[i] == want.get<std::int64_t>();
    case DType::b8: return t.data<bool>()[i] == want.get<bool>();
    }
    return false;
}
}  // namespace

TEST_CASE("fixture written from PyTorch tensors loads with names, order, dtypes, shapes and values")
{
    const SafetensorsFile f = load_safetensors(SPOOL_FIXTURE_DIR "/torch_tensors.safetensors");
    std::ifstream in(SPOOL_FIXTURE_DIR "/torch_tensors.json");
    REQUIRE(in);
    const json want = json::parse(in);

    CHECK(f.metadata == want.at("metadata").get<std::map<std::string, std::string>>());
    const json& tensors = want.at("tensors");
    REQUIRE(f.tensors.size() == tensors.size());
    for (std::size_t k = 0; k < f.tensors.size(); ++k) {
        const auto& [name, t] = f.tensors[k];
        const json& w = tensors[k];
        CAPTURE(name);
        CHECK(name == w.at("name").get<std::string>());  // data order, not the header's alphabetical order
        CHECK(t.dtype() == dtype_from(w.at("dtype")));
        CHECK(t.shape() == Shape(w.at("shape").get<std::vector<std::int64_t>>()));
        REQUIRE(static_cast<std::size_t>(t.numel()) == w.at("data").size());
        for (std::int64_t i = 0; i < t.numel(); ++i) {
            CAPTURE(i);
            CHECK_MESSAGE(same_element(t, i, w.at("data")[i]), "got ", t.at(i), ", want ", w.at("data")[i].dump());
        }
    }

    // and spool writes it back byte for byte except for key order and layout: a re-read matches
    check_same(from_safetensors_bytes(to_safetensors_bytes(f.tensors, f.metadata)).tensors, f.tensors);
}

// ---- hostile files ---------------------------------------------------------------------------

TEST_CASE("hostile: sizes and the header length")
{
    CHECK(message_of<IoError>([] { (void)from_safetensors_bytes(""); }) ==
          "safetensors: <memory>: file is 0 bytes, shorter than the 8-byte header length");
    CHECK(message_of<IoError>([] { (void)from_safetensors_bytes("abc"); }) ==
          "safetensors: <memory>: file is 3 bytes, shorter than the 8-byte header length");
    CHECK(message_of<IoError>([] { (void)from_safetensors_bytes(le_u64(1000) + "{}"); }) ==
          "safetensors: <memory>: header length 1000 exceeds the 2 bytes that follow it");
    CHECK(message_of<IoError>([] { (void)from_safetensors_bytes(le_u64(std::uint64_t{1} << 63) + "{}"); }) ==
          "safetensors: <memory>: header length 9223372036854775808 exceeds the limit of 100000000 bytes");
    CHECK(message_of<IoError>([] { (void)from_safetensors_bytes(le_u64(UINT64_MAX)); }) ==
          "safetensors: <memory>: header length 18446744073709551615 exceeds the limit of 100000000 bytes");
    CHECK(parse_error("").rfind("header is not valid JSON (", 0) == 0);
}

TEST_CASE("hostile: header JSON")
{
    CHECK(parse_error("{\"a\": ").rfind("header is not valid JSON (parse error", 0) == 0);
    CHECK(parse_error("{} trailing").rfind("header is not valid JSON (", 0) == 0);
    CHECK(parse_error("{\"\xff\": 1}").rfind("header is not valid JSON (", 0) == 0);
    CHECK(parse_error(std::string("{\"a\0\": 1}", 9)).rfind("header is not valid JSON (", 0) == 0);
    CHECK(parse_error("[1, 2]") == "header must be a JSON object; got array");
    CHECK(parse_error("\"text\"") == "header must be a JSON object; got string");
    CHECK(parse_error("{\"w\": {\"shape\": [[[1]]]}}") ==
          "header nests deeper than a safetensors header ({name: {\"shape\": [...]}})");
    CHECK(parse_error(std::string(100000, '[') + std::string(100000, ']')) ==
          "header nests deeper than a safetensors header ({name: {\"shape\": [...]}})");
    std::string long_shape = "{\"w\": {\"dtype\": \"F32\", \"shape\": [1";
    for (int i = 0; i < 1000; ++i) long_shape += ",1";
    CHECK(parse_error(long_shape + "], \"data_offsets\": [0, 4]}}") ==
          "header has an array of more than 64 elements; not a safetensors header");
    CHECK(parse_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}, \"a\": 1}", "abcd") ==
          "duplicate tensor name 'a'");
    CHECK(parse_error("{\"a\": {\"dtype\": \"F32\", \"dtype\": \"F64\", \"shape\": [], \"data_offsets\": [0, 4]}}", "abcd") ==
          "duplicate key 'dtype' in entry 'a'");
    CHECK(parse_error("{\"__metadata__\": [1]}") == "__metadata__ must be an object of strings; got [1]");
    CHECK(parse_error("{\"__metadata__\": {\"k\": 1}}") == "__metadata__ value of 'k' must be a string; got 1");
}

TEST_CASE("hostile: entries")
{
    auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
        return "{\"w\": {\"dtype\": " + dtype + ", \"shape\": " + shape + ", \"data_offsets\": " + offsets + "}}";
    };
    const std::string eight(8, '\0');
    CHECK(parse_error("{\"w\": 3}") == "tensor 'w' entry must be a JSON object; got 3");
    CHECK(parse_error("{\"w\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", eight) == "tensor 'w' has no 'dtype'");
    CHECK(parse_error("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", eight) == "tensor 'w' has no 'shape'");
    CHECK(parse_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}", eight) == "tensor 'w' has no 'data_offsets'");

    CHECK(parse_error(entry("5", "[2]", "[0, 8]"), eight) == "tensor 'w' dtype must be a string; got 5");
    CHECK(parse_error(entry("\"F128\"", "[2]", "[0, 8]"), eight) == "tensor 'w' has unknown dtype \"F128\"");
    CHECK(parse_error(entry("\"float32\"", "[2]", "[0, 8]"), eight) == "tensor 'w' has unknown dtype \"float32\"");
    for (const char* tag : {"F16", "BF16", "I32", "U8", "I8", "U64", "F8_E4M3"}) {
        CAPTURE(tag);
        CHECK(parse_error(entry(std::string("\"") + tag + "\"", "[2]", "[0, 8]"), eight) ==
              std::string("tensor 'w' has dtype ") + tag + ", which spool does not read (supported: F32, F64, I64, BOOL)");
    }

    CHECK(parse_error(entry("\"F32\"", "3", "[0, 8]"), eight) == "tensor 'w' shape must be a list of integers; got 3");
    for (const char* shape : {"[2, -1]", "[2.0]", "[\"2\"]", "[null]", "[1e30]"}) {
        CAPTURE(shape);
        const json s = json::parse(shape);
        const std::string want =
            "tensor 'w' shape " + s.dump() + " has dimension " + s.back().dump() + "; dimensions must be non-negative integers";
        CHECK(parse_error(entry("\"F32\"", shape, "[0, 8]"), eight) == want);
    }
    CHECK(parse_error(entry("\"F32\"", "[1, 1, 1, 1, 1, 1, 1, 1, 2]", "[0, 8]"), eight) ==
          "tensor 'w' shape [1,1,1,1,1,1,1,1,2] has 9 dimensions; spool supports at most 8");
    // the product of the non-zero dims must be a size spool can hold (bytes fit in ptrdiff_t),
    // zero-size tensors included: reducing (0, 2^62, 4) over dim 0 would give (2^62, 4)
    for (const char* shape : {"[4294967296, 4294967296]", "[4294967296, 4294967296, 0]", "[0, 4611686018427387904, 4]",
                              "[0, 2305843009213693952, 2]", "[18446744073709551615]", "[4611686018427387904]",
                              "[1152921504606846976]"}) {
        CAPTURE(shape);
        CHECK(parse_error(entry("\"F64\"", shape, "[0, 8]"), eight) ==
              "tensor 'w' shape " + json::parse(shape).dump() +
                  " has more elements than spool allows (1152921504606846975, so that its size in bytes fits in ptrdiff_t)");
    }
    // the largest shape spool allows, but not in the buffer: refused before any allocation
    CHECK(parse_error(entry("\"F64\"", "[1152921504606846975]", "[0, 8]"), eight) ==
          "tensor 'w' data_offsets [0, 8] do not match shape (1152921504606846975,) float64 (9223372036854775800 bytes)");
    const SafetensorsFile zero_size = from_safetensors_bytes(
        file_bytes(entry("\"F64\"", "[0, 1152921504606846975]", "[0, 0]")));
    CHECK(zero_size.tensors.at(0).second.shape() == Shape{0, 1152921504606846975});

    for (const char* bad : {"[0]", "[0, 8, 16]", "[-1, 8]", "[0, 8.0]", "{\"begin\": 0}", "null", "[\"0\", 8]"}) {
        CAPTURE(bad);
        CHECK(parse_error(entry("\"F32\"", "[2]", bad), eight) ==
              std::string("tensor 'w' data_offsets must be [begin, end] with non-negative integers; got ") +
                  json::parse(bad).dump());
    }
    CHECK(parse_error(entry("\"F32\"", "[2]", "[8, 0]"), eight) ==
          "tensor 'w' data_offsets [8, 0] are out of bounds for a data buffer of 8 bytes (need begin <= end <= 8)");
    CHECK(parse_error(entry("\"F32\"", "[4]", "[0, 16]"), eight) ==
          "tensor 'w' data_offsets [0, 16] are out of bounds for a data buffer of 8 bytes (need begin <= end <= 8)");
    CHECK(parse_error(entry("\"F32\"", "[2]", "[0, 18446744073709551615]"), eight) ==
          "tensor 'w' data_offsets [0, 18446744073709551615] are out of bounds for a data buffer of 8 bytes "
          "(need begin <= end <= 8)");
    CHECK(parse_error(entry("\"F32\"", "[3]", "[0, 8]"), eight) ==
          "tensor 'w' data_offsets [0, 8] do not match shape (3,) float32 (12 bytes)");
    CHECK(parse_error(entry("\"F64\"", "[]", "[0, 4]"), "abcd") ==
          "tensor 'w' data_offsets [0, 4] do not match shape () float64 (8 bytes)");
    CHECK(parse_error("{\"encoder.weight\": {\"dtype\": \"F32\", \"shape\": [5, 6], \"data_offsets\": [0, 100]}}",
                      std::string(100, '\0')) ==
          "tensor 'encoder.weight' data_offsets [0, 100] do not match shape (5, 6) float32 (120 bytes)");
}

TEST_CASE("hostile: buffer coverage and BOOL bytes")
{
    auto two = [](const std::string& a_offsets, const std::string& b_offsets) {
        return "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": " + a_offsets +
               "}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": " + b_offsets + "}}";
    };
    const std::string data16(16, '\0');
    CHECK(parse_error(two("[0, 8]", "[4, 12]"), data16) == "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
    CHECK(parse_error(two("[0, 8]", "[0, 8]"), data16) == "tensors 'a' [0, 8] and 'b' [0, 8] overlap");
    CHECK(parse_error(two("[0, 8]", "[12, 20]"), std::string(20, '\0')) ==
          "data buffer bytes [8, 12) belong to no tensor (a gap before 'b'); tensors must cover the buffer exactly");
    CHECK(parse_error(two("[4, 12]", "[12, 20]"), std::string(20, '\0')) ==
          "data buffer bytes [0, 4) belong to no tensor (a gap before 'a'); tensors must cover the buffer exactly");
    CHECK(parse_error(two("[0, 8]", "[8, 16]"), std::string(20, '\0')) ==
          "data buffer bytes [16, 20) belong to no tensor (after the last one, 'b'); tensors must cover the buffer exactly");
    CHECK(parse_error("{}", "abcd") ==
          "data buffer bytes [0, 4) belong to no tensor (the header lists none); tensors must cover the buffer exactly");
    // a zero-size tensor inside another's bytes is an overlap too (as in the reference)
    CHECK(parse_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                      " \"z\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]}}",
                      std::string(8, '\0')) == "tensors 'a' [0, 8] and 'z' [4, 4] overlap");

    const std::string mask = "{\"mask\": {\"dtype\": \"BOOL\", \"shape\": [3], \"data_offsets\": [0, 3]}}";
    CHECK(parse_error(mask, std::string("\x01\x00\x02", 3)) ==
          "tensor 'mask' (BOOL) element 2 has byte value 2; BOOL bytes must be 0 or 1");
    CHECK(parse_error(mask, std::string("\xff\x00\x00", 3)) ==
          "tensor 'mask' (BOOL) element 0 has byte value 255; BOOL bytes must be 0 or 1");
    const SafetensorsFile ok = from_safetensors_bytes(file_bytes(mask, std::string("\x01\x00\x01", 3)));
    CHECK(ok.tensors.at(0).second.tolist() == std::vector<double>{1, 0, 1});

    // a hostile name is clipped in messages
    const std::string huge_name(100000, 'n');
    const std::string m = parse_error("{\"" + huge_name + "\": 1}");
    CHECK(m.size() < 300);
    CHECK(m == "tensor '" + std::string(200, 'n') + "...' entry must be a JSON object; got 1");
}

TEST_CASE("valid oddities: padding, unknown fields, a metadata-only file")
{
    // header padded with spaces (as the reference writer does) and an extra field (ignored)
    const SafetensorsFile f = from_safetensors_bytes(
        file_bytes("{\"w\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8], \"extra\": [1]}}       ",
                   le_u64(77)));
    REQUIRE(f.tensors.size() == 1);
    CHECK(f.tensors[0].second.item() == 77);
    // a zero-size tensor with a huge (but not overflowing) dimension
    const SafetensorsFile z = from_safetensors_bytes(
        file_bytes("{\"z\": {\"dtype\": \"F32\", \"shape\": [0, 1099511627776], \"data_offsets\": [0, 0]}}"));
    CHECK(z.tensors.at(0).second.shape() == Shape{0, 1099511627776});
    const SafetensorsFile m = from_safetensors_bytes(file_bytes("{\"__metadata__\": {\"a\": \"b\"}}"));
    CHECK(m.tensors.empty());
    CHECK(m.metadata.at("a") == "b");
}

// ---- randomized robustness -------------------------------------------------------------------

TEST_CASE("randomized corruption: every variant parses or throws IoError, nothing else")
{
    const std::string valid = to_safetensors_bytes(sample_tensors(), {{"format", "pt"}});
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(valid[i]);

    std::mt19937_64 rng(20240612);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    int parsed = 0, rejected = 0;
    for (int variant = 0; variant < 4000; ++variant) {
        std::string v = valid;
        const int kind = variant % 6;
        if (kind == 0) {  // flip a few random bytes anywhere
            for (int k = 1 + static_cast<int>(pick(4)); k > 0; --k) v[pick(v.size())] ^= static_cast<char>(1 + pick(255));
        } else if (kind == 1) {  // truncate
            v.resize(pick(v.size()));
        } else if (kind == 2) {  // insert random bytes
            std::string ins(1 + pick(16), '\0');
            for (char& c : ins) c = static_cast<char>(pick(256));
            v.insert(pick(v.size() + 1), ins);
        } else if (kind == 3) {  // change a digit of the header: shapes and offsets go wrong
            for (int k = 1 + static_cast<int>(pick(3)); k > 0; --k) {
                const std::size_t at = 8 + pick(header_len);
                if (v[at] >= '0' && v[at] <= '9') v[at] = static_cast<char>('0' + pick(10));
            }
        } else if (kind == 4) {  // damage the data: only BOOL bytes can be invalid
            const std::size_t data = 8 + header_len;
            v[data + pick(v.size() - data)] = static_cast<char>(pick(256));
        } else {  // damage the header length
            const std::uint64_t len = pick(3) == 0 ? rng() : header_len + pick(64) - 32;
            v.replace(0, 8, le_u64(len));
        }
        try {
            (void)from_safetensors_bytes(v);
            ++parsed;
        } catch (const IoError&) {
            ++rejected;
        } catch (const std::exception& e) {
            FAIL_CHECK("variant ", variant, " (kind ", kind, ") threw a non-IoError: ", e.what());
        }
    }
    MESSAGE(parsed, " variants parsed, ", rejected, " rejected with IoError");
    CHECK(parsed > 0);
    CHECK(rejected > 0);
}
