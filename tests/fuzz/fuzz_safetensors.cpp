// libFuzzer target for the safetensors reader (scripts/fuzz.sh builds and runs it): any
// input must parse or throw spool::IoError. Anything else — another exception, a crash,
// an out-of-bounds access or UB (ASan + UBSan), a leak — is a finding. A file that parses
// must also survive a round trip: written back and read again, the same tensors.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace spool;
    io::SafetensorsFile f;
    try {
        f = io::from_safetensors_bytes(std::string_view(reinterpret_cast<const char*>(data), size));
    } catch (const IoError&) {
        return 0;  // rejected cleanly: the expected outcome for most inputs
    }
    const io::SafetensorsFile again = io::from_safetensors_bytes(io::to_safetensors_bytes(f.tensors, f.metadata));
    if (again.metadata != f.metadata || again.tensors.size() != f.tensors.size()) std::abort();
    for (std::size_t i = 0; i < f.tensors.size(); ++i) {
        const Value& a = f.tensors[i].second.value();
        const Value& b = again.tensors[i].second.value();
        if (again.tensors[i].first != f.tensors[i].first || a.shape() != b.shape() || a.dtype() != b.dtype() ||
            a.nbytes() != b.nbytes() || (a.nbytes() > 0 && std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0))
            std::abort();
    }
    return 0;
}
