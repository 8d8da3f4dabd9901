#include "model/attention/chunk_retrieval.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "model/attention/layer_offsets.hpp"
#include "ops/chunk_attention.hpp"
#include "ops/chunk_attention_decode.hpp"

namespace reach::model::attention {
namespace {

constexpr const char* kKeys = "chunk.keys";
constexpr const char* kValues = "chunk.values";
constexpr const char* kLandmarks = "chunk.landmarks";
constexpr const char* kPending = "chunk.pending";

// `buffer` with at least `rows` rows along dim 2 (zeros beyond the old ones), growing by
// doubling so a decode step rarely copies.
torch::Tensor with_rows(const torch::Tensor& buffer, int64_t rows, const torch::Tensor& like,
                        int64_t reserve) {
  if (buffer.defined() && buffer.size(2) >= rows) return buffer;
  const int64_t old = buffer.defined() ? buffer.size(2) : 0;
  const int64_t capacity = std::max({rows, 2 * old, reserve});
  auto shape = like.sizes().vec();
  shape[2] = capacity;
  auto grown = torch::zeros(shape, like.options());
  if (old > 0) grown.narrow(2, 0, old).copy_(buffer);
  return grown;
}

// [B, H, t, d] -> [B, H, n, d]: zero rows after the first t.
torch::Tensor zero_padded(const torch::Tensor& x, int64_t n) {
  if (x.size(2) == n) return x;
  auto shape = x.sizes().vec();
  shape[2] = n - x.size(2);
  return torch::cat({x, torch::zeros(shape, x.options())}, 2);
}

}  // namespace

double kv_cache_bytes_per_token(const ModelConfig& c, double element_bytes) {
  double entries = 2.0 * static_cast<double>(c.layers * c.d_model);
  if (c.attention == AttentionFamily::chunk) {
    entries += 2.0 * static_cast<double>(c.d_model) +
               static_cast<double>(c.d_model) / static_cast<double>(c.chunk_size);
  }
  return entries * element_bytes;
}

void fill_random_kv_cache(const ModelConfig& c, KvCache& cache, int64_t n,
                          const torch::TensorOptions& options, int64_t batch) {
  const int64_t heads = c.heads, hd = c.d_model / c.heads, s = c.chunk_size;
  for (int64_t l = 0; l < c.layers; ++l) {
    cache.layer(l).append(torch::randn({batch, heads, n, hd}, options),
                          torch::randn({batch, heads, n, hd}, options));
  }
  if (c.attention != AttentionFamily::chunk) return;
  auto& layer = cache.layer(chunk_encoder_layer(c));
  const int64_t capacity = std::max(layer.capacity, n);
  auto keys = torch::zeros({batch, heads, capacity, hd}, options);
  auto values = torch::zeros({batch, heads, capacity, hd}, options);
  keys.narrow(2, 0, n / s * s).normal_();
  values.narrow(2, 0, n / s * s).normal_();
  auto landmarks = torch::zeros({batch, heads, capacity / s + 1, hd}, options);
  landmarks.narrow(2, 0, n / s)
      .copy_(
          torch::nn::functional::normalize(torch::randn({1, heads, n / s, hd}, options),
                                           torch::nn::functional::NormalizeFuncOptions().dim(-1)));
  layer.state[kKeys] = keys;
  layer.state[kValues] = values;
  layer.state[kLandmarks] = landmarks;
  layer.state[kPending] = torch::randn({batch, n % s, c.d_model}, options);
}

ChunkRetrievalAttention::ChunkRetrievalAttention(const ModelConfig& config, int64_t layer)
    : WindowAttention(config, layer) {
  const int64_t d = config.d_model;
  if (layer == chunk_encoder_layer(config)) {
    encoder_ = register_module("encoder", ChunkEncoder(config));
  }
  // MoBA scoring has no retrieval query: the token query scores the chunks itself.
  const int64_t queries = config.chunk_scoring == ChunkScoring::moba ? 1 : 2;
  query_ = register_module("retrieval_query",
                           torch::nn::Linear(torch::nn::LinearOptions(d, queries * d).bias(false)));
  retrieval_proj_ = register_module("retrieval_proj",
                                    torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
}

pattern::ChunkSelection ChunkRetrievalAttention::selection(const AttentionBudget& budget,
                                                           int64_t n) const {
  const auto& c = config();
  pattern::ChunkSelection s;
  s.chunk_size = c.chunk_size;
  s.top_k = c.chunk_top_k;
  if (budget.chunks && budget.chunk_rule) {
    throw std::invalid_argument(
        "attention budget: give the chunks a query reads either as a count or as a rule of its "
        "candidates, not both");
  }
  if (budget.chunks) {
    if (*budget.chunks < 1) {
      throw std::invalid_argument("attention budget: chunks must be >= 1, got " +
                                  std::to_string(*budget.chunks));
    }
    s.top_k = *budget.chunks;
  }
  // Chunks wholly inside the local window are the window's already.
  s.window = budget_window(c.window, budget);
  if (c.chunk_sparsity == ChunkSparsity::enforced) {
    s.rule = pattern::ChunkBudgetRule::fraction;
    s.fraction = c.chunk_fraction;
    s.min_k = 1;
  }
  if (budget.chunk_rule) {
    s.rule = budget.chunk_rule->kind;
    s.fraction = budget.chunk_rule->coefficient;
    s.min_k = 1;
    // Slots: what the rule gives the sequence's last query (the rule grows with C, and C(t)
    // with t), so no query's count is capped by them.
    const int64_t most = pattern::candidate_chunks(s, std::max<int64_t>(n - 1, 0));
    s.top_k = std::max<int64_t>(most, 1);
    pattern::validate(s);
    s.top_k = std::max<int64_t>(pattern::selected_chunks(s, most), 1);
  }
  return s;
}

AttentionOutput ChunkRetrievalAttention::compute(const torch::Tensor& x, ForwardContext& context) {
  if (!context.positions.empty()) {
    // The unfinished chunk's inputs wait in the cache per request length, which a ragged
    // batch does not keep yet: refuse rather than mix requests' chunks.
    throw std::invalid_argument(
        "chunk attention: batched decode of requests of different lengths is not supported for "
        "the chunk family; decode each request in its own session");
  }
  auto local = AttentionLayer::compute(x, context);  // the window, through WindowAttention
  if (encodes()) publish_memory(x, context);
  auto retrieved = retrieve(x, context);
  if (config().chunk_residual == ChunkResidual::bypass) return {local.residual, retrieved};
  return {local.residual + retrieved, {}};
}

void ChunkRetrievalAttention::publish_memory(const torch::Tensor& x, ForwardContext& context) {
  const int64_t b = x.size(0), t = x.size(1), s = config().chunk_size;
  const int64_t heads = config().heads, hd = head_dim();
  const auto empty = [&](int64_t rows) { return torch::zeros({b, heads, rows, hd}, x.options()); };
  if (context.cache == nullptr) {
    const int64_t chunks = t / s;
    if (chunks == 0) {
      context.publish(kKeys, empty(t));
      context.publish(kValues, empty(t));
      context.publish(kLandmarks, empty(0));
      return;
    }
    const auto memory = encoder_(x.narrow(1, 0, chunks * s));
    // The trailing partial chunk's rows are never read (it has no landmark).
    context.publish(kKeys, zero_padded(memory.keys, t));
    context.publish(kValues, zero_padded(memory.values, t));
    context.publish(kLandmarks, memory.landmarks);
    return;
  }
  // Decode: the inputs of the unfinished chunk wait in the cache until it completes.
  auto& state = context.cache->layer(layer()).state;
  const int64_t n = context.position + t, done = context.position / s, now = n / s;
  const auto& pending = state[kPending];
  const auto inputs = pending.defined() ? torch::cat({pending, x}, 1) : x;
  const auto reserve = context.cache->layer(layer()).capacity;
  auto keys = with_rows(state[kKeys], n, empty(0), reserve);
  auto values = with_rows(state[kValues], n, empty(0), reserve);
  // The decode kernel wants >= capacity / S landmark rows.
  auto landmarks = with_rows(state[kLandmarks], keys.size(2) / s + 1, empty(0), 0);
  if (now > done) {
    const auto memory = encoder_(inputs.narrow(1, 0, (now - done) * s));
    keys.narrow(2, done * s, (now - done) * s).copy_(memory.keys);
    values.narrow(2, done * s, (now - done) * s).copy_(memory.values);
    landmarks.narrow(2, done, now - done).copy_(memory.landmarks);
  }
  state[kPending] = inputs.narrow(1, (now - done) * s, inputs.size(1) - (now - done) * s).clone();
  state[kKeys] = keys;
  state[kValues] = values;
  state[kLandmarks] = landmarks;
  context.publish(kKeys, keys);
  context.publish(kValues, values);
  context.publish(kLandmarks, landmarks);
}

torch::Tensor ChunkRetrievalAttention::retrieve(const torch::Tensor& x,
                                                const ForwardContext& context) {
  const int64_t b = x.size(0), t = x.size(1), d = config().d_model, heads = config().heads;
  const int64_t s = config().chunk_size;
  const bool moba = config().chunk_scoring == ChunkScoring::moba;
  const auto parts =
      query_(x).view({b, t, moba ? 1 : 2, heads, head_dim()}).permute({2, 0, 3, 1, 4});
  // NoPE; with MoBA scoring the token query is the retrieval query too (the op sums both
  // gradients), so a chunk scores the mean of q's scores over its keys.
  const auto q = parts[0].contiguous(), r = moba ? q : parts[1].contiguous();
  // n: the tokens the newest query sees (with a cache: the cached ones and these).
  const int64_t n = (context.cache != nullptr ? context.position : 0) + t;
  ops::ChunkAttentionOptions options;
  options.selection = selection(context.budget, n);
  options.weighting = config().chunk_weighting;
  const auto& mass = context.budget.chunk_mass;
  if (mass && !(*mass > 0.0 && *mass <= 1.0)) {
    throw std::invalid_argument("attention budget: chunk mass must be in (0, 1], got " +
                                std::to_string(*mass));
  }
  const bool cut = mass && *mass < 1.0;
  const bool cpu_inference = q.device().is_cpu() && !torch::GradMode::is_enabled();
  if (cut && !cpu_inference) {
    throw std::invalid_argument(
        "attention budget: chunk_mass (the dynamic chunk budget) runs on the CPU decode kernel "
        "only, without gradients; the model is on " +
        q.device().str());
  }
  const auto dtype = q.scalar_type();
  const auto keys = context.read(kKeys).to(dtype), values = context.read(kValues).to(dtype),
             landmarks = context.read(kLandmarks).to(dtype);
  // The decode kernel serves a decode step, a mass cut (a cut per query) and counting the
  // chunks read (each query's selection): every query of this input at once, row by row the
  // same operator as the full forward.
  const bool kernel =
      cpu_inference && (cut || context.usage != nullptr || (context.cache != nullptr && t == 1));
  torch::Tensor out;  // [B, H, t, hd]
  if (kernel) {
    const auto lengths = torch::full({b}, n, torch::kLong);
    c10::optional<torch::Tensor> masses;
    if (cut) masses = torch::full({b}, *mass, torch::kDouble);
    torch::Tensor read;
    out = ops::chunk_attention_decode(q, r, keys, values, landmarks, lengths, options, c10::nullopt,
                                      masses, context.usage != nullptr ? &read : nullptr);
    if (context.usage) context.usage->keys += read.sum().item<int64_t>() * s;
  } else if (context.cache == nullptr) {
    out = ops::chunk_attention(q, keys, values, r, landmarks, options);
  } else {
    // Exact for any number of new tokens: zero queries before them, their rows kept.
    const auto pad = [&](const torch::Tensor& y) {
      auto shape = y.sizes().vec();
      shape[2] = context.position;
      return torch::cat({torch::zeros(shape, y.options()), y}, 2);
    };
    out = ops::chunk_attention(pad(q), keys.narrow(2, 0, n), values.narrow(2, 0, n), pad(r),
                               landmarks.narrow(2, 0, n / s), options)
              .narrow(2, context.position, t);
  }
  return retrieval_proj_(out.transpose(1, 2).reshape({b, t, d}));
}

}  // namespace reach::model::attention
