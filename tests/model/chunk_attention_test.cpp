// The chunk family (model/attention/chunk_*): the layer against a float64 reference written
// from the definition (docs/chunk_attention.md), finite differences for its parameters,
// decode over the KV cache against the full forward, budgets and bad configs.
//
// Tolerances: the layer in float64 agrees with the reference to summation order, 1e-10 of
// outputs of size ~1 (float64 eps 2e-16 times a few hundred terms per sum, with margin).
// Finite differences: central, step 1e-6, in float64: truncation ~ step^2 * f''' and rounding
// ~ eps / step ~ 1e-10, so 1e-6 of the gradient's scale (+ 1e-8 absolute) is safe; the
// selection (top-k indices) does not change under such a step for random inputs (gaps between
// scores are ~1e-2). Decode in float64: the same sums in other orders, 1e-9.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "io/remove_tree.hpp"
#include "model/attention/chunk_retrieval.hpp"
#include "model/attention/dilated.hpp"
#include "model/attention/factory.hpp"
#include "model/attention/window.hpp"
#include "model/gpt.hpp"
#include "train/checkpoint.hpp"

namespace reach::model {
namespace {

using attention::AttentionOutput;
using attention::ChunkRetrievalAttention;
using attention::ForwardContext;
using torch::Tensor;

ModelConfig chunk_config() {
  auto c = preset("micro");  // 2 layers, d 32, 2 heads, W 8
  c.attention = AttentionFamily::chunk;
  c.window = 5;
  c.chunk_size = 4;
  c.chunk_top_k = 3;
  c.chunk_encoder_layers = 1;
  c.chunk_encoder_mlp_ratio = 2;
  return c;
}

// A layer that exposes compute() (the whole layer: window + encoder + retrieval).
class Exposed : public ChunkRetrievalAttention {
 public:
  using ChunkRetrievalAttention::ChunkRetrievalAttention;
  AttentionOutput run(const Tensor& x, ForwardContext& context) { return compute(x, context); }
};

// ---- the float64 reference, written from the definition ----

Tensor ref_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b) {
  const auto mean = x.mean(-1, true);
  const auto var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / torch::sqrt(var + 1e-5) * w + b;
}

Tensor ref_gelu(const Tensor& x) { return 0.5 * x * (1 + torch::erf(x / std::sqrt(2.0))); }

// NeoX RoPE on [..., L, hd] at positions first..first+L-1.
Tensor ref_rope(const Tensor& x, int64_t first, double base) {
  const int64_t len = x.size(-2), hd = x.size(-1), half = hd / 2;
  auto out = x.clone();
  auto xa = x.accessor<double, 3>();  // [H, L, hd]
  auto oa = out.accessor<double, 3>();
  for (int64_t h = 0; h < x.size(0); ++h) {
    for (int64_t p = 0; p < len; ++p) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(first + p) *
                             std::pow(base, -static_cast<double>(i) / static_cast<double>(half));
        const double x1 = xa[h][p][i], x2 = xa[h][p][i + half];
        oa[h][p][i] = x1 * std::cos(angle) - x2 * std::sin(angle);
        oa[h][p][i + half] = x1 * std::sin(angle) + x2 * std::cos(angle);
      }
    }
  }
  return out;
}

Tensor softmax_vec(const std::vector<double>& s) {
  const double m = *std::max_element(s.begin(), s.end());
  std::vector<double> e(s.size());
  double z = 0;
  for (size_t i = 0; i < s.size(); ++i) z += (e[i] = std::exp(s[i] - m));
  for (auto& v : e) v /= z;
  return torch::tensor(e, torch::kFloat64);
}

struct Reference {
  Tensor residual, mlp_input;  // [T, D] (batch 1)
};

// One batch element x [T, D] through the encoder layer of `c` with parameters `p`.
Reference reference_layer(const ModelConfig& c, const std::map<std::string, Tensor>& p,
                          const Tensor& x) {
  const int64_t t = x.size(0), d = c.d_model, heads = c.heads, hd = d / heads;
  const int64_t s = c.chunk_size, w = c.window;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  auto split = [&](const Tensor& y) { return y.view({y.size(0), heads, hd}).transpose(0, 1); };
  // Window attention with RoPE: keys t-W+1..t.
  const auto qkv = torch::matmul(x, p.at("qkv.weight").t());
  const auto q = ref_rope(split(qkv.narrow(1, 0, d)).contiguous(), 0, c.rope_base);
  const auto k = ref_rope(split(qkv.narrow(1, d, d)).contiguous(), 0, c.rope_base);
  const auto v = split(qkv.narrow(1, 2 * d, d));
  auto local = torch::zeros({heads, t, hd}, torch::kFloat64);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < t; ++i) {
      const int64_t first = std::max<int64_t>(0, i - w + 1);
      std::vector<double> sc;
      for (int64_t j = first; j <= i; ++j)
        sc.push_back((q[h][i] * k[h][j]).sum().item<double>() * scale);
      const auto a = softmax_vec(sc);
      for (int64_t j = first; j <= i; ++j) local[h][i] += a[j - first] * v[h][j];
    }
  }
  const auto residual =
      torch::matmul(local.transpose(0, 1).reshape({t, d}), p.at("proj.weight").t());
  // Encoder: per chunk, tokens (+ CLS last), bidirectional layers, final norm.
  const int64_t chunks = t / s;
  const bool cls = c.chunk_encoder_layers > 0 && c.chunk_landmark == ChunkLandmark::cls;
  auto chunk_keys = torch::zeros({heads, chunks * s, hd}, torch::kFloat64);
  auto chunk_values = chunk_keys.clone();
  auto landmarks = torch::zeros({heads, chunks, hd}, torch::kFloat64);
  for (int64_t ci = 0; ci < chunks; ++ci) {
    auto h = x.narrow(0, ci * s, s);
    if (cls) h = torch::cat({h, p.at("encoder.cls").view({1, d})}, 0);
    const int64_t len = h.size(0);
    for (int64_t l = 0; l < c.chunk_encoder_layers; ++l) {
      const std::string e = "encoder.layers." + std::to_string(l) + ".";
      const auto n1 = ref_layer_norm(h, p.at(e + "ln1.weight"), p.at(e + "ln1.bias"));
      const auto eqkv = torch::matmul(n1, p.at(e + "qkv.weight").t());
      const auto eq = ref_rope(split(eqkv.narrow(1, 0, d)).contiguous(), 0, c.rope_base);
      const auto ek = ref_rope(split(eqkv.narrow(1, d, d)).contiguous(), 0, c.rope_base);
      const auto ev = split(eqkv.narrow(1, 2 * d, d));
      auto y = torch::zeros({heads, len, hd}, torch::kFloat64);
      for (int64_t hh = 0; hh < heads; ++hh) {
        for (int64_t i = 0; i < len; ++i) {
          std::vector<double> sc;
          for (int64_t j = 0; j < len; ++j)
            sc.push_back((eq[hh][i] * ek[hh][j]).sum().item<double>() * scale);
          const auto a = softmax_vec(sc);
          for (int64_t j = 0; j < len; ++j) y[hh][i] += a[j] * ev[hh][j];
        }
      }
      h = h + torch::matmul(y.transpose(0, 1).reshape({len, d}), p.at(e + "proj.weight").t());
      const auto n2 = ref_layer_norm(h, p.at(e + "ln2.weight"), p.at(e + "ln2.bias"));
      const auto hidden =
          ref_gelu(torch::matmul(n2, p.at(e + "fc.weight").t()) + p.at(e + "fc.bias"));
      h = h + torch::matmul(hidden, p.at(e + "out.weight").t()) + p.at(e + "out.bias");
    }
    h = ref_layer_norm(h, p.at("encoder.ln_f.weight"), p.at("encoder.ln_f.bias"));
    const auto tokens = h.narrow(0, 0, s);
    const auto summary = cls ? h[s] : tokens.mean(0);
    const auto kv = torch::matmul(tokens, p.at("encoder.kv.weight").t());
    chunk_keys.narrow(1, ci * s, s).copy_(split(kv.narrow(1, 0, d)));
    chunk_values.narrow(1, ci * s, s).copy_(split(kv.narrow(1, d, d)));
    if (c.chunk_landmark == ChunkLandmark::mean_keys) {
      // The mean key of each head (written out), unit-normalised unless MoBA scores it.
      auto lm = torch::zeros({heads, hd}, torch::kFloat64);
      for (int64_t u = ci * s; u < (ci + 1) * s; ++u) lm += chunk_keys.select(1, u);
      lm = lm / static_cast<double>(s);
      landmarks.select(1, ci).copy_(
          c.chunk_scoring == ChunkScoring::moba ? lm : lm / lm.norm(2, -1, true));
      continue;
    }
    const auto lm = torch::matmul(summary, p.at("encoder.landmark.weight").t()).view({heads, hd});
    landmarks.select(1, ci).copy_(lm / lm.norm(2, -1, true));
  }
  // Retrieval (NoPE): candidates are fully past chunks not wholly inside the window.
  const auto qr = torch::matmul(x, p.at("retrieval_query.weight").t());
  // MoBA: no retrieval query; the token query scores the chunks.
  const bool moba = c.chunk_scoring == ChunkScoring::moba;
  EXPECT_EQ(qr.size(1), moba ? d : 2 * d);
  const auto rq = split(qr.narrow(1, 0, d)), rr = moba ? rq : split(qr.narrow(1, d, d));
  auto retrieved = torch::zeros({heads, t, hd}, torch::kFloat64);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < t; ++i) {
      std::vector<int64_t> cand;
      for (int64_t ci = 0; ci < chunks; ++ci) {
        if (i >= (ci + 1) * s && ci * s <= i - w) cand.push_back(ci);
      }
      const auto count = static_cast<int64_t>(cand.size());
      if (count == 0) continue;
      int64_t read = std::min(count, c.chunk_top_k);
      if (c.chunk_sparsity == ChunkSparsity::enforced) {
        const auto budget = std::clamp<int64_t>(
            static_cast<int64_t>(std::ceil(c.chunk_fraction * static_cast<double>(count) - 1e-12)),
            1, c.chunk_top_k);
        read = std::min(count, budget);
      }
      std::vector<double> score(static_cast<size_t>(chunks));
      for (auto ci : cand) score[ci] = (rr[h][i] * landmarks[h][ci]).sum().item<double>() * scale;
      std::stable_sort(cand.begin(), cand.end(),
                       [&](int64_t a, int64_t b) { return score[a] > score[b]; });
      cand.resize(static_cast<size_t>(read));
      std::vector<double> weight;
      if (c.chunk_weighting == ChunkWeighting::softmax) {
        std::vector<double> sel;
        for (auto ci : cand) sel.push_back(score[ci]);
        const auto sm = softmax_vec(sel);
        for (int64_t j = 0; j < read; ++j) weight.push_back(sm[j].item<double>());
      } else {
        // Stick-breaking, nearest (highest index) chunk first.
        for (auto ci : cand) {
          double wgt = 1 / (1 + std::exp(-score[ci]));
          for (auto other : cand) {
            if (other > ci) wgt *= 1 - 1 / (1 + std::exp(-score[other]));
          }
          weight.push_back(wgt);
        }
      }
      for (int64_t j = 0; j < read; ++j) {
        const int64_t ci = cand[j];
        std::vector<double> sc;
        for (int64_t u = ci * s; u < (ci + 1) * s; ++u) {
          sc.push_back((rq[h][i] * chunk_keys[h][u]).sum().item<double>() * scale);
        }
        const auto a = softmax_vec(sc);
        for (int64_t u = 0; u < s; ++u) {
          retrieved[h][i] += weight[j] * a[u] * chunk_values[h][ci * s + u];
        }
      }
    }
  }
  const auto out =
      torch::matmul(retrieved.transpose(0, 1).reshape({t, d}), p.at("retrieval_proj.weight").t());
  if (c.chunk_residual == ChunkResidual::bypass) return {residual, out};
  return {residual + out, torch::zeros_like(out)};
}

// The encoder layer of `c` in float64 with every parameter randomised (LayerNorm weights
// and biases too: their defaults 1 and 0 would hide mistakes).
std::shared_ptr<Exposed> random_layer(const ModelConfig& c, uint64_t seed) {
  torch::manual_seed(static_cast<int64_t>(seed));
  auto layer = std::make_shared<Exposed>(c, chunk_encoder_layer(c));
  layer->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  for (auto& p : layer->parameters()) p.normal_(0.0, 0.4);
  return layer;
}

std::map<std::string, Tensor> parameters_of(const torch::nn::Module& m) {
  std::map<std::string, Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach();
  return out;
}

AttentionOutput run_layer(Exposed& layer, const Tensor& x) {
  ForwardContext context;
  auto out = layer.run(x, context);
  if (!out.mlp_input.defined()) out.mlp_input = torch::zeros_like(out.residual);
  return out;
}

struct Variant {
  std::string name;
  ModelConfig config;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  out.push_back({"cls+bypass+enforced", chunk_config()});
  auto none = chunk_config();
  none.chunk_sparsity = ChunkSparsity::none;
  none.chunk_residual = ChunkResidual::standard;
  none.chunk_landmark = ChunkLandmark::mean;
  out.push_back({"mean+standard+none", none});
  auto linear = chunk_config();
  linear.chunk_encoder_layers = 0;
  linear.chunk_landmark = ChunkLandmark::mean;
  linear.chunk_fraction = 0.3;
  out.push_back({"linear", linear});
  auto deep = chunk_config();
  deep.chunk_encoder_layers = 2;
  deep.chunk_weighting = ChunkWeighting::stick_breaking;
  deep.window = 2;
  deep.chunk_size = 3;
  out.push_back({"2 layers+stick_breaking", deep});
  auto mean_keys = chunk_config();  // the "no CLS encoder" ablation
  mean_keys.chunk_encoder_layers = 0;
  mean_keys.chunk_landmark = ChunkLandmark::mean_keys;
  out.push_back({"mean_keys (no encoder)", mean_keys});
  auto encoded_keys = chunk_config();
  encoded_keys.chunk_landmark = ChunkLandmark::mean_keys;
  out.push_back({"mean_keys of encoded tokens", encoded_keys});
  auto moba = mean_keys;
  moba.chunk_scoring = ChunkScoring::moba;
  out.push_back({"moba", moba});
  return out;
}

TEST(ChunkAttention, LayerMatchesTheFloat64Reference) {
  for (const auto& [name, c] : variants()) {
    auto layer = random_layer(c, 11);
    torch::manual_seed(12);
    const auto x = torch::randn({2, 27, c.d_model}, torch::kFloat64);  // a trailing partial chunk
    torch::NoGradGuard no_grad;
    const auto out = run_layer(*layer, x);
    const auto p = parameters_of(*layer);
    for (int64_t b = 0; b < 2; ++b) {
      const auto ref = reference_layer(c, p, x[b]);
      EXPECT_LT((out.residual[b] - ref.residual).abs().max().item<double>(), 1e-10) << name;
      EXPECT_LT((out.mlp_input[b] - ref.mlp_input).abs().max().item<double>(), 1e-10) << name;
      // Not a trivially passing comparison: the retrieved part is there and of size ~1.
      if (c.chunk_residual == ChunkResidual::bypass) {
        EXPECT_GT(ref.mlp_input.abs().max().item<double>(), 0.1) << name;
      }
    }
  }
}

TEST(ChunkAttention, GradientsOfTheNewParametersMatchFiniteDifferences) {
  for (const auto& [name, c] : variants()) {
    auto layer = random_layer(c, 21);
    torch::manual_seed(22);
    const auto x = torch::randn({1, 22, c.d_model}, torch::kFloat64);
    const auto r1 = torch::randn({1, 22, c.d_model}, torch::kFloat64);
    const auto r2 = torch::randn({1, 22, c.d_model}, torch::kFloat64);
    auto loss = [&] {
      const auto out = run_layer(*layer, x);
      return (out.residual * r1).sum() + (out.mlp_input * r2).sum();
    };
    layer->zero_grad();
    loss().backward();
    for (auto& item : layer->named_parameters()) {
      const auto& key = item.key();
      if (key == "qkv.weight" || key == "proj.weight") continue;  // the window's, tested elsewhere
      auto param = item.value();
      ASSERT_TRUE(param.grad().defined()) << name << " " << key;
      const auto grad = param.grad().clone();
      const double grad_scale = grad.abs().max().item<double>();
      EXPECT_GT(grad_scale, 0) << name << " " << key;
      auto flat = param.view({-1});
      torch::NoGradGuard no_grad;
      for (int64_t probe = 0; probe < 3; ++probe) {
        const int64_t i = (probe * 7919 + 13) % flat.numel();
        const double saved = flat[i].item<double>();
        constexpr double kStep = 1e-6;
        flat[i] = saved + kStep;
        const double up = loss().item<double>();
        flat[i] = saved - kStep;
        const double down = loss().item<double>();
        flat[i] = saved;
        const double numeric = (up - down) / (2 * kStep);
        EXPECT_NEAR(grad.view({-1})[i].item<double>(), numeric, 1e-6 * grad_scale + 1e-8)
            << name << " " << key << "[" << i << "]";
      }
    }
  }
}

TEST(ChunkAttention, FactoryPlacesWindowEncoderAndRetrievalLayers) {
  auto c = chunk_config();
  c.layers = 6;
  c.chunk_every = 2;
  auto retrieval = [&](int64_t l) {
    return std::dynamic_pointer_cast<ChunkRetrievalAttention>(attention::make_attention(c, l));
  };
  for (int64_t l : {0, 1, 2, 4}) {
    EXPECT_EQ(retrieval(l), nullptr) << l;
    EXPECT_NE(
        std::dynamic_pointer_cast<attention::WindowAttention>(attention::make_attention(c, l)),
        nullptr);
  }
  ASSERT_NE(retrieval(3), nullptr);
  EXPECT_TRUE(retrieval(3)->encodes());
  ASSERT_NE(retrieval(5), nullptr);
  EXPECT_FALSE(retrieval(5)->encodes());
  // Checkpoint names of the encoder layer's attention.
  Gpt net(chunk_config());
  const auto params = net->named_parameters();
  for (const char* key :
       {"blocks.1.attn.encoder.cls", "blocks.1.attn.encoder.layers.0.qkv.weight",
        "blocks.1.attn.encoder.kv.weight", "blocks.1.attn.encoder.landmark.weight",
        "blocks.1.attn.retrieval_query.weight", "blocks.1.attn.retrieval_proj.weight"}) {
    EXPECT_TRUE(params.contains(key)) << key;
  }
  // MoBA scoring: no landmark projection, no CLS, a token query only (D -> D).
  auto moba = chunk_config();
  moba.chunk_encoder_layers = 0;
  moba.chunk_landmark = ChunkLandmark::mean_keys;
  moba.chunk_scoring = ChunkScoring::moba;
  Gpt moba_net(moba);
  const auto moba_params = moba_net->named_parameters();
  EXPECT_FALSE(moba_params.contains("blocks.1.attn.encoder.landmark.weight"));
  EXPECT_FALSE(moba_params.contains("blocks.1.attn.encoder.cls"));
  EXPECT_EQ(moba_params["blocks.1.attn.retrieval_query.weight"].sizes(),
            torch::IntArrayRef({moba.d_model, moba.d_model}));
  EXPECT_FALSE(params.contains("blocks.0.attn.retrieval_query.weight"));
}

// model.chunk_local = fibonacci: the layers that do not retrieve are the Fibonacci model's
// dilated layers (the same offsets as a Fibonacci-stagger model's layer at that index), the
// retrieval layers are unchanged, the model trains, and decode over the cache matches the full
// forward.
TEST(ChunkAttention, LocalLayersCanBeFibonacciDilated) {
  auto c = chunk_config();
  c.layers = 6;
  c.chunk_every = 2;
  c.reach = 64;
  c.schedule = AlphaSchedule::stagger;
  c.chunk_local = AttentionFamily::fibonacci;
  validate(c);
  auto fibonacci = c;
  fibonacci.attention = AttentionFamily::fibonacci;
  for (int64_t l : {0, 1, 2, 4}) {
    const auto layer = attention::make_attention(c, l);
    ASSERT_NE(std::dynamic_pointer_cast<attention::DilatedAttention>(layer), nullptr) << l;
    EXPECT_FALSE(layer->integer_offsets().empty()) << l;
    EXPECT_EQ(layer->integer_offsets(), attention::make_attention(fibonacci, l)->integer_offsets())
        << l;
    EXPECT_EQ(layer->alpha(), attention::make_attention(fibonacci, l)->alpha()) << l;
  }
  for (int64_t l : {3, 5}) {
    EXPECT_NE(std::dynamic_pointer_cast<ChunkRetrievalAttention>(attention::make_attention(c, l)),
              nullptr)
        << l;
  }
  // Training: every parameter gets a gradient.
  c.layers = 3;
  c.chunk_every = 1;
  torch::manual_seed(43);
  Gpt net(c);
  const auto tokens = torch::randint(0, 256, {2, 40}, torch::kInt64);
  const auto logits = net(tokens);
  torch::nn::functional::cross_entropy(logits.view({-1, 256}), tokens.view({-1})).backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
  // Decode: prefill, then one token at a time, against the full forward.
  net->to(torch::kFloat64);
  net->eval();
  torch::NoGradGuard no_grad;
  const auto full = net(tokens);
  attention::KvCache cache(c.layers);
  ForwardContext context;
  context.cache = &cache;
  auto step = net->forward_with(context, tokens.narrow(1, 0, 10));
  EXPECT_LT((step - full.narrow(1, 0, 10)).abs().max().item<double>(), 1e-9);
  for (int64_t p = 10; p < tokens.size(1); ++p) {
    context.position = p;
    step = net->forward_with(context, tokens.narrow(1, p, 1));
    EXPECT_LT((step - full.narrow(1, p, 1)).abs().max().item<double>(), 1e-9) << "at " << p;
  }
}

// Prefill, then one token at a time (the decode kernel) and a few at once (the general
// path): the full forward's logits at every position, with and without a chunks budget.
TEST(ChunkAttention, DecodeOverTheCacheMatchesTheFullForward) {
  auto c = chunk_config();
  c.layers = 3;  // a window layer, the encoder layer, a retrieval layer reading its memory
  torch::manual_seed(31);
  Gpt net(c);
  net->to(torch::kFloat64);
  net->eval();
  const auto tokens = torch::randint(0, 256, {2, 45}, torch::kInt64);
  torch::NoGradGuard no_grad;
  for (const std::optional<int64_t> chunks :
       {std::optional<int64_t>{}, std::optional<int64_t>{1}}) {
    ForwardContext whole;
    whole.budget.chunks = chunks;
    const auto full = net->forward_with(whole, tokens);
    attention::KvCache cache(c.layers);
    attention::BudgetUsage usage;
    ForwardContext context;
    context.cache = &cache;
    context.budget.chunks = chunks;
    context.usage = &usage;
    constexpr int64_t kPrefill = 10;
    auto logits = net->forward_with(context, tokens.narrow(1, 0, kPrefill));
    EXPECT_LT((logits - full.narrow(1, 0, kPrefill)).abs().max().item<double>(), 1e-9);
    int64_t p = kPrefill;
    while (p < tokens.size(1)) {
      const int64_t step = p < 30 ? 1 : 5;  // the decode kernel, then the general path
      context.position = p;
      // Counting runs every query through the decode kernel: off for the general path.
      context.usage = step == 1 ? &usage : nullptr;
      logits = net->forward_with(context, tokens.narrow(1, p, step));
      EXPECT_LT((logits - full.narrow(1, p, step)).abs().max().item<double>(), 1e-9)
          << "at " << p << (chunks ? " with a budget" : "");
      p += step;
    }
    EXPECT_GT(usage.keys, 0);
  }
  // The budget changes what is read.
  ForwardContext one;
  one.budget.chunks = 1;
  EXPECT_FALSE(torch::allclose(net->forward_with(one, tokens), net(tokens)));
}

TEST(ChunkAttention, ModelTrainsEveryParameterGetsAGradient) {
  auto c = chunk_config();
  c.layers = 3;
  torch::manual_seed(41);
  Gpt net(c);
  const auto tokens = torch::randint(0, 256, {2, 33}, torch::kInt64);
  const auto logits = net(tokens);
  torch::nn::functional::cross_entropy(logits.view({-1, 256}), tokens.view({-1})).backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

// A checkpoint of a chunk model (config.toml with every model.chunk_* key, the encoder's and
// retrieval layers' weights) loads into the same model.
TEST(ChunkAttention, CheckpointRoundTrip) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "reach_chunk_ckpt_test";
  reach::io::remove_tree(dir);
  auto config = train::parse_train_config(
      "[model]\npreset = \"micro\"\nattention = \"chunk\"\nchunk_size = 4\n",
      {"run.out_dir=" + dir.string(), "model.vocab_size=256", "model.chunk_top_k=3",
       "model.chunk_encoder_layers=2", "model.chunk_landmark=cls", "model.chunk_residual=standard",
       "model.chunk_sparsity=none", "model.chunk_fraction=0.25",
       "model.chunk_weighting=stick_breaking", "model.chunk_every=1",
       "model.chunk_encoder_mlp_ratio=3"});
  torch::manual_seed(51);
  Gpt net(config.model);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  const auto x = torch::randint(0, 256, {2, 21}, torch::kInt64);
  net(x).sum().backward();
  opt.step();
  train::save_checkpoint(config.out_dir, 3, net, opt, config, *data::make_byte_tokenizer());
  auto loaded = train::load_checkpoint(*train::latest_checkpoint(config.out_dir));
  const auto& m = loaded.config.model;
  EXPECT_EQ(m.attention, AttentionFamily::chunk);
  EXPECT_EQ(m.chunk_size, 4);
  EXPECT_EQ(m.chunk_top_k, 3);
  EXPECT_EQ(m.chunk_encoder_layers, 2);
  EXPECT_EQ(m.chunk_encoder_mlp_ratio, 3);
  EXPECT_EQ(m.chunk_residual, ChunkResidual::standard);
  EXPECT_EQ(m.chunk_sparsity, ChunkSparsity::none);
  EXPECT_DOUBLE_EQ(m.chunk_fraction, 0.25);
  EXPECT_EQ(m.chunk_weighting, ChunkWeighting::stick_breaking);
  EXPECT_EQ(m.chunk_scoring, ChunkScoring::retrieval);
  const auto moba = train::parse_train_config(
      train::to_toml(train::parse_train_config(
          "[model]\nattention = \"chunk\"\n",
          {"model.chunk_encoder_layers=0", "model.chunk_landmark=mean_keys",
           "model.chunk_scoring=moba"})),
      {});
  EXPECT_EQ(moba.model.chunk_scoring, ChunkScoring::moba);
  EXPECT_EQ(moba.model.chunk_landmark, ChunkLandmark::mean_keys);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded.model(x), net(x)));
  reach::io::remove_tree(dir);
}

TEST(ChunkAttention, BadConfigKeysAreClearErrors) {
  auto expect_error = [](const std::string& set, const std::string& fragment) {
    try {
      train::parse_train_config("[model]\nattention = \"chunk\"\n", {set});
      FAIL() << "expected an error with '" << fragment << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("model.chunk_size=0", "model.chunk_size must be >= 1, got 0");
  expect_error("model.chunk_fraction=0", "model.chunk_fraction must be in (0, 1], got 0");
  expect_error("model.chunk_landmark=max",
               "model.chunk_landmark must be cls, mean or mean_keys, got 'max'");
  expect_error("model.chunk_scoring=gate",
               "model.chunk_scoring must be retrieval or moba, got 'gate'");
  // MoBA scoring has no encoder: the other keys must say so, not be silently ignored.
  expect_error("model.chunk_scoring=moba",
               "needs model.chunk_encoder_layers = 0 and "
               "model.chunk_landmark = 'mean_keys', got 1 and 'cls'");
  expect_error("model.chunk_residual=skip",
               "model.chunk_residual must be bypass or standard, got 'skip'");
  expect_error("model.chunk_weighting=sum",
               "model.chunk_weighting must be softmax or stick_breaking, got 'sum'");
  expect_error("model.chunk_encoder_layers=0", "needs model.chunk_landmark = 'mean'");
  expect_error("model.chunk_local=dense",
               "model.chunk_local must be window, fibonacci or power_of_two, got 'dense'");
  const auto help = train::train_config_help();
  EXPECT_NE(help.find("chunk_sparsity"), std::string::npos);
}

TEST(ChunkAttention, BadConfigsAndBudgetsAreClearErrors) {
  auto expect_error = [](const ModelConfig& c, const std::string& fragment) {
    try {
      validate(c);
      FAIL() << "expected an error with '" << fragment << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  auto c = chunk_config();
  c.chunk_size = 0;
  expect_error(c, "model.chunk_size must be >= 1, got 0");
  c = chunk_config();
  c.chunk_top_k = 0;
  expect_error(c, "model.chunk_top_k must be >= 1");
  c = chunk_config();
  c.chunk_fraction = 1.5;
  expect_error(c, "model.chunk_fraction must be in (0, 1]");
  c = chunk_config();
  c.chunk_encoder_layers = -1;
  expect_error(c, "model.chunk_encoder_layers must be >= 0");
  c = chunk_config();
  c.chunk_encoder_layers = 0;
  expect_error(c, "needs model.chunk_landmark = 'mean' or 'mean_keys'");
  c = chunk_config();
  c.chunk_encoder_layers = 0;
  c.chunk_landmark = ChunkLandmark::mean;
  c.chunk_scoring = ChunkScoring::moba;
  expect_error(c, "model.chunk_scoring = 'moba'");
  c.chunk_landmark = ChunkLandmark::mean_keys;
  c.chunk_encoder_layers = 1;
  expect_error(c, "got 1 and 'mean_keys'");
  c = chunk_config();
  c.chunk_local = AttentionFamily::dense;
  expect_error(c, "model.chunk_local (the layers that do not retrieve) must be 'window'");
  c = chunk_config();
  c.chunk_every = 0;
  expect_error(c, "model.chunk_every must be >= 1");
  c = chunk_config();
  c.positions = Positions::alibi;
  expect_error(c, "model.positions = 'rope' or 'nope'");
  c = chunk_config();
  c.normalizer = Normalizer::entmax;
  expect_error(c, "model.normalizer = 'softmax' only");
  EXPECT_THROW(parse_chunk_landmark("max"), std::invalid_argument);
  EXPECT_THROW(parse_chunk_weighting("sum"), std::invalid_argument);
  try {
    parse_chunk_sparsity("some");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("model.chunk_sparsity must be enforced or none"),
              std::string::npos)
        << e.what();
  }
  Gpt net(chunk_config());
  ForwardContext zero;
  zero.budget.chunks = 0;
  try {
    net->forward_with(zero, torch::randint(0, 256, {1, 12}, torch::kInt64));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("chunks must be >= 1, got 0"), std::string::npos);
  }
}

}  // namespace
}  // namespace reach::model
