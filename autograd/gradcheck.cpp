#include "autograd/gradcheck.hpp"

#include <cmath>
#include <sstream>

#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"
#include "tensor/random.hpp"

namespace spool {

namespace {

struct Checker {
    const GradcheckFn& fn;
    std::vector<Tensor> inputs;
    const GradcheckOptions& opts;
    RngState rng;
    std::vector<int> diff;  // indices of inputs that require grad
    GradcheckResult res;

    Tensor eval()
    {
        set_rng_state(rng);
        Tensor y = fn(inputs);
        SPOOL_CHECK(y.defined() && y.dtype() == DType::f64, TypeError, "gradcheck: the function must return a float64 tensor");
        return y;
    }

    /// Analytical vector-Jacobian product: gradients of <seed, f(x)> for every diff input.
    std::vector<Value> vjp(const Value& seed)
    {
        std::vector<Value> saved;
        for (int i : diff) {
            saved.push_back(inputs[i].impl()->grad);
            inputs[i].impl()->grad = Value();
        }
        std::vector<Value> g;
        {
            Tape tape;
            set_rng_state(rng);
            Tensor y = fn(inputs);
            if (y.requires_grad()) tape.backward(y, Tensor(seed));
        }
        for (std::size_t k = 0; k < diff.size(); ++k) {
            auto& impl = *inputs[diff[k]].impl();
            g.push_back(impl.grad.defined() ? impl.grad : Value::zeros(impl.value.shape(), DType::f64));
            impl.grad = saved[k];
        }
        return g;
    }

    /// (f(x + eps d) - f(x - eps d)) / 2 eps, with d given per diff input (or e_elem of input).
    std::vector<double> numeric(int input, std::int64_t elem, const std::vector<Value>* dir)
    {
        auto perturb = [&](double s) {
            if (dir) {
                for (std::size_t k = 0; k < diff.size(); ++k) {
                    double* p = inputs[diff[k]].data<double>();
                    const double* d = (*dir)[k].data<double>();
                    for (std::int64_t j = 0; j < inputs[diff[k]].numel(); ++j) p[j] += s * d[j];
                }
            } else {
                inputs[input].data<double>()[elem] += s;
            }
        };
        const double e = opts.eps;
        double* restore = nullptr;
        double orig = 0;
        if (!dir) restore = inputs[input].data<double>() + elem, orig = *restore;
        std::vector<Value> origs;
        if (dir)
            for (int i : diff) origs.push_back(inputs[i].value().clone());
        perturb(e);
        Value yp = eval().value().clone();
        if (restore) *restore = orig;
        else
            for (std::size_t k = 0; k < diff.size(); ++k)
                std::copy_n(origs[k].data<double>(), origs[k].numel(), inputs[diff[k]].data<double>());
        perturb(-e);
        Value ym = eval().value();
        if (restore) *restore = orig;
        else
            for (std::size_t k = 0; k < diff.size(); ++k)
                std::copy_n(origs[k].data<double>(), origs[k].numel(), inputs[diff[k]].data<double>());
        std::vector<double> col(yp.numel());
        for (std::int64_t j = 0; j < yp.numel(); ++j) col[j] = (yp.data<double>()[j] - ym.data<double>()[j]) / (2 * e);
        return col;
    }

    void compare(double a, double n, const std::string& where)
    {
        ++res.checked;
        double err = std::abs(a - n);
        if (err > res.max_abs_err || std::isnan(err)) res.max_abs_err = err;
        if (!(err <= opts.atol + opts.rtol * std::abs(n)) && res.ok) {
            res.ok = false;
            std::ostringstream os;
            os.precision(10);
            os << "gradcheck: mismatch at " << where << ": analytical " << a << ", numerical " << n << " (|diff| " << err
               << " > atol " << opts.atol << " + rtol " << opts.rtol << " * |numerical|)";
            res.message = os.str();
        }
    }
};

}  // namespace

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& opts)
{
    Checker c{fn, inputs, opts, get_rng_state(), {}, {}};
    std::int64_t in_numel = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
        SPOOL_CHECK(inputs[i].dtype() == DType::f64, TypeError, "gradcheck: input ", i,
                    " requires grad and must be float64 for a meaningful check; got ", dtype_name(inputs[i].dtype()));
        c.diff.push_back(static_cast<int>(i));
        in_numel += inputs[i].numel();
    }
    SPOOL_CHECK(!c.diff.empty(), ValueError, "gradcheck: no input requires grad");
    Tensor y0 = c.eval();
    std::int64_t out_numel = y0.numel();
    const bool full = out_numel * in_numel <= opts.max_full_jacobian;
    c.res.full_jacobian = full;
    if (full) {
        // analytical Jacobian row by row (one backward per output element), numerical column
        // by column (two evaluations per input element)
        std::vector<std::vector<Value>> rows(out_numel);
        for (std::int64_t j = 0; j < out_numel; ++j) {
            Value seed = Value::zeros(y0.shape(), DType::f64);
            seed.data<double>()[j] = 1;
            rows[j] = c.vjp(seed);
        }
        for (std::size_t k = 0; k < c.diff.size(); ++k)
            for (std::int64_t e = 0; e < inputs[c.diff[k]].numel(); ++e) {
                auto col = c.numeric(c.diff[k], e, nullptr);
                for (std::int64_t j = 0; j < out_numel; ++j)
                    c.compare(rows[j][k].data<double>()[e], col[j],
                              detail::cat("input ", c.diff[k], " element ", e, ", output element ", j));
            }
    } else {
        for (int r = 0; r < opts.random_directions; ++r) {
            // draw directions without disturbing the generator the function sees
            RngState keep = get_rng_state();
            set_rng_state({0x9c4ec4ULL + static_cast<std::uint64_t>(r), 0});
            Value seed = randn(y0.shape(), {.dtype = DType::f64}).value();
            std::vector<Value> dir;
            for (int i : c.diff) dir.push_back(randn(inputs[i].shape(), {.dtype = DType::f64}).value());
            set_rng_state(keep);
            auto g = c.vjp(seed);
            double a = 0;
            for (std::size_t k = 0; k < c.diff.size(); ++k)
                for (std::int64_t e = 0; e < dir[k].numel(); ++e) a += g[k].data<double>()[e] * dir[k].data<double>()[e];
            auto col = c.numeric(-1, 0, &dir);
            double n = 0;
            for (std::int64_t j = 0; j < seed.numel(); ++j) n += seed.data<double>()[j] * col[j];
            c.compare(a, n, detail::cat("random direction ", r));
        }
    }
    set_rng_state(c.rng);
    return c.res;
}

}  // namespace spool
