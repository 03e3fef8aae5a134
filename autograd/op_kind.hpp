// The list of differentiable ops. Every kind has exactly one row in the op table
// (autograd/op_table.cpp); a static_assert there fails to compile until it does.
#pragma once
#include <cstdint>

namespace spool {

#define SPOOL_OP_KINDS(X)                                                                           \
    X(Add, "add") X(Sub, "sub") X(Mul, "mul") X(Div, "div") X(Neg, "neg")                           \
    X(AddScalar, "add_scalar") X(MulScalar, "mul_scalar") X(PowScalar, "pow")                       \
    X(Exp, "exp") X(Log, "log") X(Sqrt, "sqrt") X(Abs, "abs")                                       \
    X(Tanh, "tanh") X(Sigmoid, "sigmoid") X(Relu, "relu") X(Gelu, "gelu") X(Clamp, "clamp")         \
    X(Softmax, "softmax") X(LogSoftmax, "log_softmax")                                              \
    X(Sum, "sum") X(Mean, "mean") X(Max, "max") X(Var, "var")                                       \
    X(Reshape, "reshape") X(Permute, "permute") X(Slice, "slice") X(Split, "split") X(Concat, "concat") \
    X(BroadcastTo, "broadcast_to") X(Matmul, "matmul") X(IndexSelect, "index_select")               \
    X(MaskedFill, "masked_fill") X(Where, "where") X(Dropout, "dropout") X(ReluDropout, "relu_dropout") \
    X(CrossEntropy, "cross_entropy") X(LogSumExp, "logsumexp") X(LogSigmoid, "logsigmoid")          \
    X(Cast, "to")                                                                                   \
    X(Linear, "linear") X(LayerNorm, "layer_norm") X(Attention, "scaled_dot_product_attention")

enum class OpKind : std::uint16_t {
#define SPOOL_X(kind, name) kind,
    SPOOL_OP_KINDS(SPOOL_X)
#undef SPOOL_X
    count
};

inline constexpr int op_count = static_cast<int>(OpKind::count);

/// The op's user-facing name ("matmul"), used in every error message.
const char* op_name(OpKind k);

}  // namespace spool
