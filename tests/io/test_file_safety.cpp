// The file system as a hostile user leaves it: links and files planted at temporary
// names, permission bits of a replaced file, concurrent writers, FIFOs and devices where
// a file should be; and the loader's memory on huge hostile headers (counted by
// alloc_counter.cpp), which must stay a small multiple of the file's size.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/alloc_counter.hpp"
#include "io/temp_dir.hpp"
#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using namespace spool::io;
using spool::test::message_of;
using spool::test::read_file;
using spool::test::TempDir;
using spool::test::write_file;

namespace {

/// Names in dir other than the given ones: temporaries a save left behind.
std::vector<std::string> other_files(const TempDir& dir, const std::vector<std::string>& expected)
{
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
        const std::string name = e.path().filename().string();
        bool known = false;
        for (const auto& x : expected) known = known || x == name;
        if (!known) out.push_back(name);
    }
    return out;
}

mode_t mode_of(const std::string& path)
{
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

}  // namespace

// ---- writing ---------------------------------------------------------------------------------

TEST_CASE("save never writes through a link or a file planted at the old temporary name")
{
    TempDir dir;
    const std::string path = dir / "model.safetensors", victim = dir / "victim";
    write_file(victim, "precious");
    std::filesystem::create_symlink(victim, path + ".tmp");  // the name spool used to write
    write_file(path + ".tmp.1", "also precious");

    const NamedTensors w{{"w", ones({3})}};
    save_safetensors(path, w);
    CHECK(read_file(victim) == "precious");
    CHECK(std::filesystem::is_symlink(path + ".tmp"));
    CHECK(read_file(path + ".tmp.1") == "also precious");
    CHECK(load_safetensors(path).tensors.at(0).second.tolist() == std::vector<double>{1, 1, 1});
    // and nothing else is left: the temporary was renamed over the target
    CHECK(other_files(dir, {"model.safetensors", "victim", "model.safetensors.tmp", "model.safetensors.tmp.1"}).empty());
}

TEST_CASE("save keeps the permission bits of the file it replaces; a new file gets 0666 minus the umask")
{
    TempDir dir;
    const std::string path = dir / "model.safetensors";
    const mode_t old_mask = ::umask(022);
    save_safetensors(path, {{"w", ones({1})}});
    CHECK(mode_of(path) == 0644);
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    save_safetensors(path, {{"w", zeros({2})}});
    CHECK(mode_of(path) == 0640);
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    save_safetensors(path, {{"w", zeros({3})}});
    CHECK(mode_of(path) == 0600);
    ::umask(old_mask);
    CHECK(load_safetensors(path).tensors.at(0).second.shape() == Shape{3});
}

TEST_CASE("a failed save removes its temporary file and leaves the target as it was")
{
    TempDir dir;
    const std::string target = dir / "a_directory";
    std::filesystem::create_directory(target);
    CHECK(message_of<IoError>([&] { save_safetensors(target, {{"w", ones({2})}}); }) ==
          "safetensors: cannot save '" + target + "': cannot rename the temporary file over it: Is a directory");
    CHECK(other_files(dir, {"a_directory"}).empty());
    CHECK(std::filesystem::is_directory(target));
}

TEST_CASE("two processes saving to one path never share a temporary file")
{
    TempDir dir;
    const std::string path = dir / "shared.safetensors";
    // built before fork: the children only write (no kernels, so no OpenMP after fork)
    const std::vector<NamedTensors> contents{{{"w", full({1000}, 1)}}, {{"w", full({1000}, 2)}}};
    std::vector<pid_t> kids;
    for (int k = 0; k < 2; ++k) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int status = 0;
            try {
                for (int i = 0; i < 40; ++i) save_safetensors(path, contents[k]);
            } catch (...) {
                status = 1;
            }
            ::_exit(status);
        }
        kids.push_back(pid);
    }
    for (pid_t pid : kids) {
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    }
    // the file is one writer's whole file, never a mix of both
    const Tensor w = load_safetensors(path).tensors.at(0).second;
    const double first = w.at(0);
    CHECK((first == 1 || first == 2));
    CHECK(w.tolist() == std::vector<double>(1000, first));
    CHECK(other_files(dir, {"shared.safetensors"}).empty());
}

// ---- reading: what is not a regular file -----------------------------------------------------

TEST_CASE("load refuses a FIFO, a device and a directory at once, without blocking")
{
    TempDir dir;
    const std::string fifo = dir / "fifo.safetensors";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // opening a FIFO for reading blocks until a writer comes; if load did, SIGALRM ends the run
    ::alarm(10);
    CHECK(message_of<IoError>([&] { (void)load_safetensors(fifo); }) ==
          "safetensors: " + fifo + ": not a regular file (a FIFO)");
    CHECK(message_of<IoError>([&] { (void)load_safetensors("/dev/null"); }) ==
          "safetensors: /dev/null: not a regular file (a character device)");
    CHECK(message_of<IoError>([&] { (void)load_safetensors(dir.path.string()); }) ==
          "safetensors: " + dir.path.string() + ": not a regular file (a directory)");
    // a link to a regular file is followed; a link to a FIFO is refused the same way
    std::filesystem::create_symlink(fifo, dir / "link");
    CHECK(message_of<IoError>([&] { (void)load_safetensors(dir / "link"); }) ==
          "safetensors: " + (dir / "link") + ": not a regular file (a FIFO)");
    ::alarm(0);
}

// ---- reading: memory on hostile headers ------------------------------------------------------

namespace {

std::string le_u64(std::uint64_t v)
{
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
    return s;
}

/// Peak bytes (heap through operator new, plus tensor storage) that loading path costs,
/// divided by the file's size.
double load_memory_factor(const std::string& path, std::size_t& tensors_loaded)
{
    const std::size_t file_size = std::filesystem::file_size(path);
    const std::size_t storage_before = allocator_stats().bytes_in_use;
    spool::test::reset_heap_peak();
    const std::size_t heap_before = spool::test::heap_bytes_in_use();
    {
        const SafetensorsFile f = load_safetensors(path);
        tensors_loaded = f.tensors.size();
        // storage is only allocated during a load, never freed: what is in use now is its peak
        const std::size_t storage = allocator_stats().bytes_in_use - storage_before;
        const std::size_t heap = spool::test::heap_peak_bytes() - heap_before;
        MESSAGE(path, ": ", file_size, " bytes, heap peak ", heap, " + storage ", storage, " bytes");
        return static_cast<double>(heap + storage) / static_cast<double>(file_size);
    }
}

}  // namespace

TEST_CASE("loading a huge hostile header costs a small multiple of the file, not a JSON document")
{
    TempDir dir;
    constexpr std::size_t header_target = 4'000'000;  // ~4 MB headers, each a different attack

    // many tiny tensors: the most entries (and Tensor objects) a header size can hold
    std::string many = "{";
    for (std::size_t i = 0; many.size() < header_target; ++i)
        many += (i ? ",\"" : "\"") + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
    many += "}";
    write_file(dir / "many.safetensors", le_u64(many.size()) + many);

    // one huge name, one huge metadata string, and as many metadata entries as allowed
    const std::string long_name = "{\"" + std::string(header_target, 'n') +
                                  "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_file(dir / "name.safetensors", le_u64(long_name.size()) + long_name + std::string(4, '\0'));
    const std::string long_meta = "{\"__metadata__\":{\"k\":\"" + std::string(header_target, 'v') + "\"}}";
    write_file(dir / "meta.safetensors", le_u64(long_meta.size()) + long_meta);
    std::string keys = "{\"__metadata__\":{";
    for (int i = 0; i < 65536; ++i) keys += (i ? ",\"" : "\"") + std::to_string(i) + "\":\"\"";
    keys += "}}";
    write_file(dir / "keys.safetensors", le_u64(keys.size()) + keys);

    // an ordinary file: a few large tensors, where the data is nearly all of the file
    save_safetensors(dir / "data.safetensors", {{"a", zeros({500'000})}, {"b", zeros({500, 1000})}});

    std::size_t n = 0;
    const double f_many = load_memory_factor(dir / "many.safetensors", n);
    CHECK(n > 60'000);
    CHECK(f_many < 10.0);  // a Tensor object (~400 bytes) per ~55-byte entry: the worst case
    const double f_name = load_memory_factor(dir / "name.safetensors", n);
    CHECK(n == 1);
    CHECK(f_name < 5.5);  // text + the JSON lexer's two growing copies of the token
    const double f_meta = load_memory_factor(dir / "meta.safetensors", n);
    CHECK(f_meta < 5.5);
    const double f_keys = load_memory_factor(dir / "keys.safetensors", n);
    CHECK(f_keys < 12.0);  // capped at 65,536 entries: 8 MB at most, whatever the file
    const double f_data = load_memory_factor(dir / "data.safetensors", n);
    CHECK(n == 2);
    CHECK(f_data < 1.1);
    MESSAGE("memory / file size: tiny tensors ", f_many, ", long name ", f_name, ", long metadata ", f_meta,
            ", 65536 metadata keys ", f_keys, ", data ", f_data);

    // one entry more than the metadata cap is refused while parsing
    std::string too_many = keys.substr(0, keys.size() - 2) + ",\"x\":\"\"}}";
    write_file(dir / "too_many.safetensors", le_u64(too_many.size()) + too_many);
    CHECK(message_of<IoError>([&] { (void)load_safetensors(dir / "too_many.safetensors"); }) ==
          "safetensors: " + (dir / "too_many.safetensors") + ": __metadata__ has more than 65536 entries");
}
