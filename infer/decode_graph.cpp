#include "infer/decode_graph.hpp"

#include <stdexcept>
#include <string>

#ifdef REACH_DECODE_GRAPH_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "model/attention/forward_context.hpp"
#include "model/autocast_cache_off.hpp"

namespace reach::infer {

struct DecodeGraph::Captured {
#ifdef REACH_DECODE_GRAPH_CUDA
  at::cuda::CUDAGraph graph;
#endif
};

bool DecodeGraph::available() {
#ifdef REACH_DECODE_GRAPH_CUDA
  return true;
#else
  return false;
#endif
}

std::string DecodeGraph::problem(const model::Gpt& model, const model::attention::KvCache& cache) {
  if (auto why = model_problem(model); !why.empty()) return why;
  const auto& c = model->config();
  if (cache.layers() != c.layers) {
    return "the cache has " + std::to_string(cache.layers()) + " layers, the model " +
           std::to_string(c.layers);
  }
  if (cache.layers() == 0 || cache.layer_lengths().empty()) {
    return "the cache must be batched, with at least one request (BatchSession's, or "
           "KvCache::split_into_requests)";
  }
  return {};
}

std::string DecodeGraph::model_problem(const model::Gpt& model) {
  if (!available()) return "this build's LibTorch has no CUDA (no CUDA graphs)";
  const auto device = model->parameters().front().device();
  if (!device.is_cuda()) return "the model is on " + device.str() + ", not a CUDA device";
  const auto& c = model->config();
  if (c.attention == model::AttentionFamily::chunk) {
    return "the chunk family keeps its chunk memory per cache, not per request (no batched step)";
  }
  if (c.normalizer != model::Normalizer::softmax) {
    return "the CUDA decode kernel takes softmax only (entmax, ASEntmax and SSMax decode "
           "eagerly)";
  }
  if (c.positions == model::Positions::alibi || c.positions == model::Positions::nape) {
    return "ALiBi / NAPE slopes go to the device per step: RoPE or NoPE only";
  }
  for (const auto& block : model->blocks) {
    if (block->attn->host_value().defined()) {
      return "a learned schedule reads alpha on the host each step: freeze it first "
             "(Gpt::freeze_schedules)";
    }
  }
  return {};
}

DecodeGraph::DecodeGraph(model::Gpt model, model::attention::KvCache& cache)
    : model_(std::move(model)), cache_(cache) {
  if (const auto why = problem(model_, cache_); !why.empty()) {
    throw std::invalid_argument("decode graph: " + why);
  }
  const auto lengths = cache_.layer_lengths();
  requests_ = static_cast<int64_t>(lengths.size());
  const auto device = model_->parameters().front().device();
  const auto on = torch::TensorOptions().device(device);
  tokens_ = torch::zeros({requests_}, on.dtype(torch::kLong));
  positions_ = torch::tensor(lengths, torch::kLong).to(device);
  lengths_ = (positions_ + 1).to(torch::kInt);
  captured_ = std::make_unique<Captured>();
}

DecodeGraph::~DecodeGraph() = default;

torch::Tensor DecodeGraph::run_step() {
  model::attention::ForwardContext context;
  context.cache = &cache_;
  context.positions = cache_.layer_lengths();
  context.device_positions = positions_;
  context.device_lengths = lengths_;
  auto logits = model_->forward_with(context, tokens_.view({requests_, 1})).select(1, 0);
  // The next step's positions and lengths, by the graph itself: nothing to upload.
  positions_.add_(1);
  lengths_.add_(1);
  return logits;
}

torch::Tensor DecodeGraph::step(const torch::Tensor& tokens) {
  if (tokens.numel() != requests_) {
    throw std::invalid_argument("decode graph: step got " + std::to_string(tokens.numel()) +
                                " tokens for " + std::to_string(requests_) + " requests");
  }
  if (cache_.layer_lengths().size() != static_cast<size_t>(requests_)) {
    throw std::logic_error("decode graph: the cache's requests changed since the graph was made");
  }
  const int64_t capacity = cache_.layer(0).capacity;
  const auto lengths = cache_.layer_lengths();
  for (size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] + 1 > capacity) {
      throw std::length_error("decode graph: request " + std::to_string(b) + " holds " +
                              std::to_string(lengths[b]) +
                              " tokens; one more exceeds its capacity " + std::to_string(capacity));
    }
  }
#ifdef REACH_DECODE_GRAPH_CUDA
  torch::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard device_guard(tokens_.device());
  tokens_.copy_(tokens.reshape({requests_}).to(torch::kLong));
  if (steps_ < 2) {
    // The first step eagerly, the second captured: both on a side stream (capture needs one,
    // and the first run there sets up what the capture must not allocate, such as the BLAS
    // handle's workspace for that stream), fenced by device synchronisations (once).
    const model::AutocastCacheOff autocast_cache_off;
    auto side = at::cuda::getStreamFromPool();
    at::cuda::device_synchronize();
    {
      const c10::cuda::CUDAStreamGuard stream_guard(side);
      if (steps_ == 0) {
        logits_ = run_step();
      } else {
        captured_->graph.capture_begin();
        try {
          logits_ = run_step();
        } catch (...) {
          try {
            captured_->graph.capture_end();
          } catch (...) {  // the first error is the one to report
          }
          throw;
        }
        captured_->graph.capture_end();
      }
    }
    at::cuda::device_synchronize();
  }
  if (steps_ >= 1) {
    captured_->graph.replay();
    ++replays_;
  }
#else
  throw std::logic_error("decode graph: " + problem(model_, cache_));
#endif
  for (int64_t l = 0; l < cache_.layers(); ++l) cache_.layer(l).advance_batched();
  ++steps_;
  return logits_;
}

}  // namespace reach::infer
