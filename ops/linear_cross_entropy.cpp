#include "ops/linear_cross_entropy.hpp"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/version.h>

#include <algorithm>
#include <stdexcept>
#include <string>

// Newer LibTorch APIs, by the version that has them.
#define REACH_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace reach::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

[[noreturn]] void fail(const std::string& message) {
  throw std::invalid_argument("linear_cross_entropy: " + message);
}

std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// The autocast dtype for tensors on `device`, if autocast is on there.
std::optional<torch::ScalarType> autocast_dtype(const torch::Device& device) {
#if REACH_TORCH_AT_LEAST(2, 4)
  const auto type = device.type();
  if ((type == torch::kCUDA || type == torch::kCPU) && at::autocast::is_autocast_enabled(type)) {
    return at::autocast::get_autocast_dtype(type);
  }
#else
  if (device.is_cuda() && at::autocast::is_enabled()) return at::autocast::get_autocast_gpu_dtype();
  if (device.is_cpu() && at::autocast::is_cpu_enabled()) {
    return at::autocast::get_autocast_cpu_dtype();
  }
#endif
  return std::nullopt;
}

// What autocast casts: float32, float16 and bfloat16 (never float64).
bool autocast_casts(torch::ScalarType t) {
  return t == torch::kFloat || t == torch::kHalf || t == torch::kBFloat16;
}

// The dtype of the head's matrix products: the one matmul(hidden, weight.t()) would compute in.
torch::ScalarType product_dtype(const torch::Tensor& hidden, const torch::Tensor& weight) {
  const auto h = hidden.scalar_type(), w = weight.scalar_type();
  if (const auto autocast = autocast_dtype(hidden.device());
      autocast && autocast_casts(h) && autocast_casts(w)) {
    return *autocast;
  }
  if (h != w) {
    fail(std::string("hidden is ") + c10::toString(h) + " but weight is " + c10::toString(w) +
         " (outside autocast both must have one dtype)");
  }
  return h;
}

// Softmax statistics: float32, or float64 for float64 products.
torch::ScalarType statistics_dtype(torch::ScalarType product) {
  return product == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// One chunk's logits in the statistics dtype (a fresh tensor: callers modify it in place).
torch::Tensor chunk_logits(const torch::Tensor& hidden_rows, const torch::Tensor& weight,
                           torch::ScalarType statistics) {
  auto logits = torch::matmul(hidden_rows, weight.t());
  return logits.scalar_type() == statistics ? logits : logits.to(statistics);
}

// Inputs: hidden and weight in the product dtype; safe_targets (ignored rows point at class 0)
// and scored (bool) [N]; count, the number of scored rows (a tensor, so nothing is read back
// from the device).
class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& safe_targets,
                               const torch::Tensor& scored, int64_t chunk_rows) {
    const auto product = product_dtype(hidden, weight);
    const auto statistics = statistics_dtype(product);
    const auto h = hidden.to(product).contiguous();
    const auto w = weight.to(product).contiguous();
    // The products run in exactly the dtype chosen above (autocast would do the same cast).
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const int64_t rows = h.size(0);
    auto logsumexp = torch::empty({rows}, h.options().dtype(statistics));
    auto nll_sum = torch::zeros({}, h.options().dtype(statistics));
    for (int64_t start = 0; start < rows; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, rows - start);
      const auto logits = chunk_logits(h.narrow(0, start, n), w, statistics);
      const auto lse = logits.logsumexp(1);
      logsumexp.narrow(0, start, n).copy_(lse);
      const auto target_logit =
          logits.gather(1, safe_targets.narrow(0, start, n).unsqueeze(1)).squeeze(1);
      nll_sum.add_(((lse - target_logit) * scored.narrow(0, start, n)).sum());
    }
    const auto count = scored.sum().to(statistics);
    ctx->save_for_backward({h, w, safe_targets, scored, logsumexp, count});
    ctx->saved_data["chunk_rows"] = chunk_rows;
    ctx->saved_data["hidden_dtype"] = static_cast<int64_t>(hidden.scalar_type());
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return nll_sum / count;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &w = saved[1], &safe_targets = saved[2], &scored = saved[3],
               &logsumexp = saved[4], &count = saved[5];
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const auto hidden_dtype =
        static_cast<torch::ScalarType>(ctx->saved_data["hidden_dtype"].toInt());
    const auto weight_dtype =
        static_cast<torch::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    const bool want_hidden = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);
    const auto product = h.scalar_type();
    const auto statistics = logsumexp.scalar_type();
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);

    // d loss / d logit_ij = (softmax_ij - [j == t_i]) * grad / count on scored rows, 0 elsewhere;
    // count clamped to 1 so that no scored row (count 0) gives zeros rather than 0 * inf.
    const auto row_scale =
        scored.to(statistics) * (grad_outputs[0].to(statistics) / count.clamp_min(1));
    const int64_t rows = h.size(0);
    torch::Tensor d_hidden, d_weight;
    if (want_hidden) d_hidden = torch::empty_like(h);
    if (want_weight) d_weight = torch::zeros(w.sizes(), w.options().dtype(statistics));
    for (int64_t start = 0; start < rows && (want_hidden || want_weight); start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, rows - start);
      const auto h_rows = h.narrow(0, start, n);
      auto g = chunk_logits(h_rows, w, statistics);
      g.sub_(logsumexp.narrow(0, start, n).unsqueeze(1)).exp_();
      g.scatter_add_(1, safe_targets.narrow(0, start, n).unsqueeze(1),
                     torch::full({n, 1}, -1.0, g.options()));
      g.mul_(row_scale.narrow(0, start, n).unsqueeze(1));
      const auto g_product = g.scalar_type() == product ? g : g.to(product);
      if (want_hidden) {
        auto out = d_hidden.narrow(0, start, n);
        torch::mm_out(out, g_product, w);
      }
      if (want_weight) {
        if (product == statistics) {
          d_weight.addmm_(g_product.t(), h_rows);
        } else {
          // Each chunk's product is rounded to the product dtype once, then summed in float32.
          d_weight.add_(torch::mm(g_product.t(), h_rows));
        }
      }
    }
    return {want_hidden ? d_hidden.to(hidden_dtype) : torch::Tensor(),
            want_weight ? d_weight.to(weight_dtype) : torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear_cross_entropy(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& targets,
                                   std::optional<int64_t> ignore_index, int64_t chunk_rows) {
  if (!hidden.defined() || !weight.defined() || !targets.defined()) {
    fail("hidden, weight and targets must all be defined tensors");
  }
  if (hidden.dim() != 2) fail("hidden must be [N, D], got " + shape_of(hidden));
  if (weight.dim() != 2) fail("weight must be [V, D], got " + shape_of(weight));
  if (targets.dim() != 1) fail("targets must be [N], got " + shape_of(targets));
  if (hidden.size(1) != weight.size(1)) {
    fail("hidden " + shape_of(hidden) + " and weight " + shape_of(weight) +
         " must have the same D (last dimension)");
  }
  if (targets.size(0) != hidden.size(0)) {
    fail("targets " + shape_of(targets) + " must have one entry per row of hidden " +
         shape_of(hidden));
  }
  if (weight.size(0) < 1) fail("weight has no rows (vocabulary of 0)");
  if (!hidden.is_floating_point() || !weight.is_floating_point()) {
    fail(std::string("hidden and weight must be floating point, got ") +
         c10::toString(hidden.scalar_type()) + " and " + c10::toString(weight.scalar_type()));
  }
  if (targets.scalar_type() != torch::kLong && targets.scalar_type() != torch::kInt) {
    fail(std::string("targets must be int64 or int32 class indices, got ") +
         c10::toString(targets.scalar_type()));
  }
  if (hidden.device() != weight.device() || hidden.device() != targets.device()) {
    fail("hidden, weight and targets must be on one device, got " + hidden.device().str() + ", " +
         weight.device().str() + " and " + targets.device().str());
  }
  if (chunk_rows < 1) fail("chunk_rows must be >= 1, got " + std::to_string(chunk_rows));

  const int64_t vocab = weight.size(0);
  const auto t = targets.to(torch::kLong);
  const auto scored = ignore_index ? t.ne(*ignore_index) : torch::ones_like(t, torch::kBool);
  if (t.is_cpu()) {
    const auto bad = scored & ((t < 0) | (t >= vocab));
    if (bad.any().item<bool>()) {
      const int64_t row = bad.nonzero()[0][0].item<int64_t>();
      fail("target " + std::to_string(t[row].item<int64_t>()) + " at row " + std::to_string(row) +
           " is outside [0, " + std::to_string(vocab) + ")" +
           (ignore_index ? " and is not ignore_index " + std::to_string(*ignore_index) : ""));
    }
  }
  const auto safe_targets = t.masked_fill(scored.logical_not(), 0);
  return LinearCrossEntropyFunction::apply(hidden, weight, safe_targets, scored, chunk_rows);
}

}  // namespace reach::ops
