#include "nn/layers.hpp"

#include <cmath>
#include <sstream>

#include "autograd/ops.hpp"
#include "autograd/ops_nn.hpp"
#include "autograd/tape.hpp"
#include "nn/init.hpp"

namespace spool::nn {

namespace {
std::string py_bool(bool b) { return b ? "True" : "False"; }
std::string num(double v)
{
    std::ostringstream os;
    os << v;
    std::string s = os.str();
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
}
}  // namespace

// ---- Linear ------------------------------------------------------------------------------------

Linear::Linear(const LinearOptions& o) : Linear(o, "Linear") {}

Linear::Linear(const LinearOptions& o, const char* type_name) : Cloneable(type_name), options(o)
{
    SPOOL_CHECK(o.in_features > 0 && o.out_features > 0, ValueError, type_name,
                ": in_features and out_features must be positive; got in_features=", o.in_features,
                ", out_features=", o.out_features);
    weight = register_parameter("weight", empty({o.out_features, o.in_features}, {.dtype = o.dtype}));
    init::kaiming_uniform_(weight, std::sqrt(5.0));  // bound 1/sqrt(in), PyTorch's reset_parameters
    if (o.bias) {
        bias = register_parameter("bias", empty({o.out_features}, {.dtype = o.dtype}));
        double b = 1.0 / std::sqrt(static_cast<double>(o.in_features));
        init::uniform_(bias, -b, b);
    }
}

Tensor Linear::forward(const Tensor& x) const
{
    SPOOL_CHECK(x.defined() && x.dim() >= 1 && x.shape()[x.dim() - 1] == options.in_features, ShapeError, type_name(),
                ": expected input [..., ", options.in_features, "]; got ", x.defined() ? to_string(x.shape()) : "undefined");
    return linear(x, weight, bias);
}

std::string Linear::extra_repr() const
{
    return detail::cat("in_features=", options.in_features, ", out_features=", options.out_features,
                       ", bias=", py_bool(options.bias));
}

std::shared_ptr<Module> NonDynamicallyQuantizableLinear::clone() const
{
    auto c = std::make_shared<NonDynamicallyQuantizableLinear>(options);
    c->copy_state_from(*this);
    return c;
}

// ---- Embedding -----------------------------------------------------------------------------------

Embedding::Embedding(const EmbeddingOptions& o) : Cloneable("Embedding"), options(o)
{
    SPOOL_CHECK(o.num_embeddings > 0 && o.embedding_dim > 0, ValueError,
                "Embedding: num_embeddings and embedding_dim must be positive; got ", o.num_embeddings, " and ",
                o.embedding_dim);
    if (options.padding_idx) {
        std::int64_t p = *options.padding_idx;
        SPOOL_CHECK(p >= -o.num_embeddings && p < o.num_embeddings, ValueError,
                    "Embedding: padding_idx must be within num_embeddings; got ", p, " for ", o.num_embeddings);
        if (p < 0) options.padding_idx = p + o.num_embeddings;
    }
    weight = register_parameter("weight", randn({o.num_embeddings, o.embedding_dim}, {.dtype = o.dtype}));
    if (options.padding_idx) {
        std::int64_t p = *options.padding_idx;
        for (std::int64_t j = 0; j < o.embedding_dim; ++j) weight.value().set(p * o.embedding_dim + j, 0.0);
    }
}

Tensor Embedding::forward(const Tensor& ids) const
{
    SPOOL_CHECK(ids.defined() && ids.dtype() == DType::i64, TypeError, "Embedding: ids must be an int64 tensor; got ",
                ids.defined() ? dtype_name(ids.dtype()) : "undefined");
    return embedding(weight, ids, options.padding_idx);
}

std::string Embedding::extra_repr() const
{
    std::string s = detail::cat(options.num_embeddings, ", ", options.embedding_dim);
    if (options.padding_idx) s += detail::cat(", padding_idx=", *options.padding_idx);
    return s;
}

// ---- LayerNorm ------------------------------------------------------------------------------------

LayerNorm::LayerNorm(const LayerNormOptions& o) : Cloneable("LayerNorm"), options(o)
{
    SPOOL_CHECK(!o.normalized_shape.empty(), ValueError, "LayerNorm: normalized_shape must not be empty");
    SPOOL_CHECK(o.eps > 0, ValueError, "LayerNorm: eps must be positive; got ", o.eps);
    Shape s(o.normalized_shape);
    if (o.elementwise_affine) {
        weight = register_parameter("weight", ones(s, {.dtype = o.dtype}));
        if (o.bias) bias = register_parameter("bias", zeros(s, {.dtype = o.dtype}));
    }
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, options.normalized_shape, weight, bias, options.eps); }

std::string LayerNorm::extra_repr() const
{
    std::string shape = "(";
    for (std::size_t i = 0; i < options.normalized_shape.size(); ++i)
        shape += (i ? ", " : "") + std::to_string(options.normalized_shape[i]);
    shape += options.normalized_shape.size() == 1 ? ",)" : ")";
    return shape + ", eps=" + [&] {
        std::ostringstream os;
        os << options.eps;
        return os.str();
    }() + ", elementwise_affine=" + py_bool(options.elementwise_affine);
}

// ---- Dropout, activations ----------------------------------------------------------------------------

Dropout::Dropout(const DropoutOptions& o) : Cloneable("Dropout"), options(o)
{
    SPOOL_CHECK(o.p >= 0 && o.p <= 1, ValueError, "Dropout: probability has to be between 0 and 1; got ", o.p);
}

Tensor Dropout::forward(const Tensor& x) const { return dropout(x, options.p, is_training()); }

std::string Dropout::extra_repr() const { return "p=" + num(options.p) + ", inplace=False"; }

Tensor ReLU::forward(const Tensor& x) const { return relu(x); }

GELU::GELU(const GELUOptions& o) : Cloneable("GELU"), options(o)
{
    SPOOL_CHECK(o.approximate == "none" || o.approximate == "tanh", ValueError,
                "GELU: approximate must be 'none' or 'tanh'; got '", o.approximate, "'");
}

Tensor GELU::forward(const Tensor& x) const { return gelu(x, options.approximate); }

std::string GELU::extra_repr() const { return "approximate='" + options.approximate + "'"; }

// ---- Sequential -----------------------------------------------------------------------------------------

Tensor Sequential::forward(const Tensor& x) const
{
    Tensor h = x;
    for (const auto& st : steps_) h = st.forward(h);
    return h;
}

std::shared_ptr<Module> Sequential::clone() const
{
    auto c = std::make_shared<Sequential>();
    for (const auto& st : steps_) st.clone_into(*c);
    c->train(is_training());
    return c;
}

// ---- positional encodings ----------------------------------------------------------------------------------

PositionalEncoding::PositionalEncoding(const PositionalEncodingOptions& o) : Cloneable("PositionalEncoding"), options(o)
{
    SPOOL_CHECK(o.d_model > 0 && o.max_len > 0, ValueError, "PositionalEncoding: d_model and max_len must be positive; got ",
                o.d_model, " and ", o.max_len);
    SPOOL_CHECK(o.dropout >= 0 && o.dropout <= 1, ValueError, "PositionalEncoding: dropout must be in [0, 1]; got ",
                o.dropout);
    Value table = Value::empty(Shape{o.max_len, o.d_model}, DType::f64);
    double* t = table.data<double>();
    for (std::int64_t pos = 0; pos < o.max_len; ++pos)
        for (std::int64_t i = 0; i < o.d_model; i += 2) {
            // 1 / 10000^(i/d) computed as exp(-ln(10000) i / d), as in "The Annotated Transformer"
            double div = std::exp(-std::log(10000.0) * static_cast<double>(i) / static_cast<double>(o.d_model));
            t[pos * o.d_model + i] = std::sin(static_cast<double>(pos) * div);
            if (i + 1 < o.d_model) t[pos * o.d_model + i + 1] = std::cos(static_cast<double>(pos) * div);
        }
    pe = register_buffer("pe", spool::to(Tensor(table), o.dtype), false);
}

namespace {
Tensor add_positions(const Tensor& x, const Tensor& table, std::int64_t offset, const PositionalEncodingOptions& o,
                     const char* who, bool training)
{
    SPOOL_CHECK(x.defined() && x.dim() == 3 && x.shape()[2] == o.d_model, ShapeError, who, ": expected input ",
                o.batch_first ? "[N, T, " : "[T, N, ", o.d_model, "]; got ", x.defined() ? to_string(x.shape()) : "undefined");
    std::int64_t T = x.shape()[o.batch_first ? 1 : 0];
    SPOOL_CHECK(offset >= 0 && offset + T <= o.max_len, ValueError, who, ": positions [", offset, ", ", offset + T,
                ") exceed max_len ", o.max_len);
    Tensor p = slice(table, 0, offset, offset + T);        // [T, E]
    p = unsqueeze(p, o.batch_first ? 0 : 1);                // [1, T, E] or [T, 1, E]
    return dropout(x + p, o.dropout, training);
}
}  // namespace

Tensor PositionalEncoding::forward(const Tensor& x, std::int64_t offset) const
{
    return add_positions(x, pe, offset, options, "PositionalEncoding", is_training());
}

std::string PositionalEncoding::extra_repr() const
{
    return detail::cat("d_model=", options.d_model, ", max_len=", options.max_len, ", dropout=", num(options.dropout));
}

LearnedPositionalEmbedding::LearnedPositionalEmbedding(const PositionalEncodingOptions& o)
    : Cloneable("LearnedPositionalEmbedding"), options(o)
{
    SPOOL_CHECK(o.d_model > 0 && o.max_len > 0, ValueError,
                "LearnedPositionalEmbedding: d_model and max_len must be positive; got ", o.d_model, " and ", o.max_len);
    weight = register_parameter("weight", randn({o.max_len, o.d_model}, {.dtype = o.dtype}));
}

Tensor LearnedPositionalEmbedding::forward(const Tensor& x, std::int64_t offset) const
{
    return add_positions(x, weight, offset, options, "LearnedPositionalEmbedding", is_training());
}

std::string LearnedPositionalEmbedding::extra_repr() const
{
    return detail::cat("max_len=", options.max_len, ", d_model=", options.d_model);
}

}  // namespace spool::nn
