// Basic layers, mirroring torch.nn: Linear, Embedding, LayerNorm, Dropout, ReLU, GELU,
// Sequential, ModuleList, and positional encodings (sinusoidal, learned). Options
// structs carry PyTorch's field names and defaults; constructors validate them.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nn/module.hpp"

namespace spool::nn {

// ---- Linear --------------------------------------------------------------------------------
struct LinearOptions {
    std::int64_t in_features = 0;
    std::int64_t out_features = 0;
    bool bias = true;
    DType dtype = DType::f32;
};
/// y = x Wᵀ + b. weight [out, in] and bias [out] ~ U(-1/√in, 1/√in) (kaiming_uniform with a=√5).
class Linear : public Cloneable<Linear> {
public:
    explicit Linear(const LinearOptions& options);
    Linear(std::int64_t in, std::int64_t out, bool bias = true) : Linear(LinearOptions{in, out, bias}) {}
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::string extra_repr() const override;
    LinearOptions options;
    Tensor weight, bias;

protected:
    Linear(const LinearOptions& options, const char* type_name);
};

/// nn.MultiheadAttention's out_proj type name in PyTorch printouts.
class NonDynamicallyQuantizableLinear : public Linear {
public:
    explicit NonDynamicallyQuantizableLinear(const LinearOptions& o) : Linear(o, "NonDynamicallyQuantizableLinear") {}
    std::shared_ptr<Module> clone() const override;
};

// ---- Embedding -----------------------------------------------------------------------------
struct EmbeddingOptions {
    std::int64_t num_embeddings = 0;
    std::int64_t embedding_dim = 0;
    std::optional<std::int64_t> padding_idx = std::nullopt;  ///< negative counts from the end
    DType dtype = DType::f32;
};
/// weight [num_embeddings, embedding_dim] ~ N(0, 1), the padding row zero and never updated.
class Embedding : public Cloneable<Embedding> {
public:
    explicit Embedding(const EmbeddingOptions& options);
    Tensor forward(const Tensor& ids) const;
    Tensor operator()(const Tensor& ids) const { return forward(ids); }
    std::string extra_repr() const override;
    EmbeddingOptions options;
    Tensor weight;
};

// ---- LayerNorm -----------------------------------------------------------------------------
struct LayerNormOptions {
    std::vector<std::int64_t> normalized_shape;
    double eps = 1e-5;
    bool elementwise_affine = true;
    bool bias = true;
    DType dtype = DType::f32;
};
class LayerNorm : public Cloneable<LayerNorm> {
public:
    explicit LayerNorm(const LayerNormOptions& options);
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::string extra_repr() const override;
    LayerNormOptions options;
    Tensor weight, bias;
};

// ---- Dropout and activations -----------------------------------------------------------------
struct DropoutOptions {
    double p = 0.5;
};
class Dropout : public Cloneable<Dropout> {
public:
    explicit Dropout(const DropoutOptions& options = {});
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::string extra_repr() const override;
    DropoutOptions options;
};

struct NoOptions {};
class ReLU : public Cloneable<ReLU> {
public:
    explicit ReLU(const NoOptions& = {}) : Cloneable("ReLU") {}
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    NoOptions options;
};

struct GELUOptions {
    std::string approximate = "none";
};
class GELU : public Cloneable<GELU> {
public:
    explicit GELU(const GELUOptions& options = {});
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::string extra_repr() const override;
    GELUOptions options;
};

// ---- containers ------------------------------------------------------------------------------
/// Modules applied in order; each must have Tensor forward(const Tensor&).
class Sequential : public Module {
public:
    Sequential() : Module("Sequential") {}
    template <class M>
    Sequential& push_back(std::shared_ptr<M> m)
    {
        register_module(std::to_string(steps_.size()), m);
        steps_.push_back({[m](const Tensor& x) { return m->forward(x); },
                          [m](Sequential& into) { into.push_back(std::static_pointer_cast<M>(m->clone())); }});
        return *this;
    }
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::shared_ptr<Module> clone() const override;
    std::size_t size() const { return steps_.size(); }

private:
    struct Step {
        std::function<Tensor(const Tensor&)> forward;
        std::function<void(Sequential&)> clone_into;  ///< appends a deep copy, typed
    };
    std::vector<Step> steps_;
};

/// An indexed list of submodules of one type, registered as "0", "1", ...
template <class M>
class ModuleList : public Module {
public:
    ModuleList() : Module("ModuleList") {}
    void push_back(std::shared_ptr<M> m)
    {
        register_module(std::to_string(items_.size()), m);
        items_.push_back(std::move(m));
    }
    std::size_t size() const { return items_.size(); }
    const std::shared_ptr<M>& operator[](std::size_t i) const { return items_[i]; }
    auto begin() const { return items_.begin(); }
    auto end() const { return items_.end(); }
    std::shared_ptr<Module> clone() const override
    {
        auto c = std::make_shared<ModuleList<M>>();
        for (const auto& m : items_) c->push_back(std::static_pointer_cast<M>(m->clone()));
        c->train(is_training());
        return c;
    }

private:
    std::vector<std::shared_ptr<M>> items_;
};

// ---- positional encodings -------------------------------------------------------------------
struct PositionalEncodingOptions {
    std::int64_t d_model = 0;
    std::int64_t max_len = 5000;
    double dropout = 0.0;
    bool batch_first = false;
    DType dtype = DType::f32;
};
/// x + PE[position], PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...), then
/// dropout. The table is a non-persistent buffer (derived, not saved).
class PositionalEncoding : public Cloneable<PositionalEncoding> {
public:
    explicit PositionalEncoding(const PositionalEncodingOptions& options);
    /// x [T, N, E] (or [N, T, E] with batch_first); offset shifts positions (incremental decoding).
    Tensor forward(const Tensor& x, std::int64_t offset = 0) const;
    Tensor operator()(const Tensor& x, std::int64_t offset = 0) const { return forward(x, offset); }
    std::string extra_repr() const override;
    PositionalEncodingOptions options;
    Tensor pe;  ///< [max_len, d_model]
};

/// x + W[position] with a learned table W [max_len, d_model] ~ N(0, 1), then dropout.
class LearnedPositionalEmbedding : public Cloneable<LearnedPositionalEmbedding> {
public:
    explicit LearnedPositionalEmbedding(const PositionalEncodingOptions& options);
    Tensor forward(const Tensor& x, std::int64_t offset = 0) const;
    Tensor operator()(const Tensor& x, std::int64_t offset = 0) const { return forward(x, offset); }
    std::string extra_repr() const override;
    PositionalEncodingOptions options;
    Tensor weight;
};

}  // namespace spool::nn
