// Weights move through safetensors by state_dict name: a model saved and loaded into a
// fresh one (different initial weights) gives the same outputs; tied weights survive.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>

#include "spool.hpp"

using namespace spool;

TEST_CASE("Transformer state_dict -> safetensors -> fresh model: same outputs")
{
    nn::TransformerOptions o{.d_model = 8, .nhead = 2, .num_encoder_layers = 2, .num_decoder_layers = 2,
                             .dim_feedforward = 16, .dropout = 0.0};
    manual_seed(1);
    nn::Transformer a(o);
    manual_seed(2);
    nn::Transformer b(o);
    Tensor src = randn({5, 2, 8}), tgt = randn({4, 2, 8});
    nn::TransformerArgs args{.tgt_mask = nn::generate_square_subsequent_mask(4)};
    CHECK(a(src, tgt, args).tolist() != b(src, tgt, args).tolist());
    auto path = (std::filesystem::temp_directory_path() / "spool_test_transformer.safetensors").string();
    io::save_safetensors(path, a.state_dict(), {{"format", "pt"}});
    io::SafetensorsFile f = io::load_safetensors(path);
    CHECK(f.metadata.at("format") == "pt");
    CHECK(f.tensors.size() == a.state_dict().size());
    b.load_state_dict(f.tensors);
    CHECK(a(src, tgt, args).tolist() == b(src, tgt, args).tolist());
    std::remove(path.c_str());
}

TEST_CASE("tied Seq2Seq weights load from every saved name")
{
    nn::Seq2SeqOptions o{.src_vocab = 9, .tgt_vocab = 9, .d_model = 8, .nhead = 2, .num_encoder_layers = 1,
                         .num_decoder_layers = 1, .dim_feedforward = 8, .dropout = 0.0, .max_len = 16,
                         .tie_weights = true};
    manual_seed(3);
    nn::Seq2SeqTransformer a(o);
    manual_seed(4);
    nn::Seq2SeqTransformer b(o);
    std::string bytes = io::to_safetensors_bytes(a.state_dict());
    b.load_state_dict(io::from_safetensors_bytes(bytes).tensors);
    CHECK(b.generator->weight.same(b.src_embed->weight));  // still tied after loading
    CHECK(b.generator->weight.tolist() == a.src_embed->weight.tolist());
    Tensor s = from_vector(std::vector<std::int64_t>{3, 4, 5, 6}, {2, 2});
    CHECK(a(s, s).tolist() == b(s, s).tolist());
}
