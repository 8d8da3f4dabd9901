// The model's loss entry points and the training loop's chunked loss (train.loss_chunk_rows,
// ops::linear_cross_entropy): forward is head(hidden_states) bit for bit; loss(..., 0) is the
// full-logits cross_entropy bit for bit (the CPU trains exactly as before); the chunked loss and
// every parameter gradient match the full logits (float64, max relative difference < 1e-10:
// summation order only); the automatic choice of chunk rows and the config key; the loop with
// the chunked loss on the CPU (the logged logits still reach the hooks). On a GPU (suite
// ChunkedLossCuda, label gpu; skips without one): one bf16 autocast step with the chunked loss
// against the full logits, and three training steps of the loop.
//
// GPU bounds (bf16 autocast, the tiny preset at a 8,192-token vocabulary): the loss within
// 1e-3 relative (both paths compute the same bf16 logits and differ in float32 summation order
// and in which cuBLAS kernel a chunk's product takes: per-row terms shift by <= 2^-9 relative,
// the mean much less); every parameter gradient within 1e-2 relative L2 (upstream of the head
// both paths get d hidden rounded to bf16, ~4e-3 relative per element at worst, and the tied
// weight's head part is summed per chunk, each chunk rounded to bf16 once); after three loop
// steps (AdamW, lr 1e-3) the logged losses within 1e-2 relative (a wrong loss or gradient
// shows as O(0.1) at once).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "model/gpt.hpp"
#include "model/model_config.hpp"
#include "train/device.hpp"
#include "train/loop.hpp"
#include "train/loss_chunk_rows.hpp"
#include "train/optimizer.hpp"
#include "train/task_config.hpp"
#include "train/train_config.hpp"

namespace reach::train {
namespace {

model::ModelConfig micro(int64_t vocab) {
  auto c = model::preset("micro");
  c.vocab_size = vocab;
  c.reach = 24;
  return c;
}

double max_rel(const torch::Tensor& got, const torch::Tensor& want) {
  const auto g = got.to(torch::kCPU, torch::kFloat64), w = want.to(torch::kCPU, torch::kFloat64);
  return (g - w).abs().max().item<double>() / w.abs().max().item<double>();
}

double rel_l2(const torch::Tensor& got, const torch::Tensor& want) {
  const auto g = got.to(torch::kCPU, torch::kFloat64), w = want.to(torch::kCPU, torch::kFloat64);
  return (g - w).norm().item<double>() / w.norm().item<double>();
}

std::vector<torch::Tensor> gradients(model::Gpt& net) {
  std::vector<torch::Tensor> out;
  for (const auto& p : net->parameters()) {
    out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  }
  return out;
}

TEST(ChunkedLoss, ForwardIsTheHeadOfTheHiddenStatesBitForBit) {
  torch::manual_seed(2);
  model::Gpt net(micro(40));
  const auto tokens = torch::randint(0, 40, {2, 24}, torch::kInt64);
  const auto hidden = net->hidden_states(tokens);
  EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{2, 24, 32}));
  EXPECT_TRUE(torch::equal(net(tokens), net->head(hidden)));
}

TEST(ChunkedLoss, FullLogitsLossIsTorchCrossEntropyBitForBit) {
  torch::manual_seed(3);
  model::Gpt net(micro(40));
  const auto tokens = torch::randint(0, 40, {2, 24}, torch::kInt64);
  auto targets = torch::randint(0, 40, {2, 24}, torch::kInt64);
  targets.index_put_({0, torch::indexing::Slice(0, 5)}, -100);
  const auto logits = net(tokens);
  const auto want = torch::nn::functional::cross_entropy(
      logits.view({-1, 40}), targets.view({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  EXPECT_TRUE(torch::equal(net->loss(tokens, targets, -100, 0), want));
  try {
    net->loss(tokens, targets, -100, -1);
    ADD_FAILURE() << "chunk_rows -1 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("chunk_rows must be >= 0"), std::string::npos);
  }
}

TEST(ChunkedLoss, ChunkedLossAndGradientsMatchTheFullLogits) {
  auto c = micro(57);
  c.attention = model::AttentionFamily::dense;
  torch::manual_seed(4);
  model::Gpt net(c);
  net->to(torch::kFloat64);
  const auto tokens = torch::randint(0, 57, {2, 24}, torch::kInt64);
  auto targets = torch::randint(0, 57, {2, 24}, torch::kInt64);
  targets.index_put_({1, torch::indexing::Slice(10, 17)}, 7);  // ignore_index 7 (in range)
  const auto full = net->loss(tokens, targets, 7, 0);
  full.backward();
  const auto want = gradients(net);
  for (const int64_t chunk_rows : {1, 7, 48, 100}) {  // 48 = B * T
    net->zero_grad();
    const auto chunked = net->loss(tokens, targets, 7, chunk_rows);
    chunked.backward();
    EXPECT_LT(std::abs(chunked.item<double>() - full.item<double>()) / full.item<double>(), 1e-12)
        << "chunk_rows " << chunk_rows;
    const auto got = gradients(net);
    const auto names = net->named_parameters().keys();
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LT(max_rel(got[i], want[i]), 1e-10) << names[i] << ", chunk_rows " << chunk_rows;
    }
  }
}

TEST(LossChunkRows, AutoChunksOnCudaFromAVocabularyOf4096) {
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cpu, 32768), 0);  // the CPU keeps the full logits
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, 256), 0);
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, 4095), 0);
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, 32768), 0);  // full logits: faster (measured)
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, 131071), 0);
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, 131072), 512);            // 2^26 logits per chunk
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, 200000), 256);            // a multiple of 128
  EXPECT_EQ(resolve_loss_chunk_rows(-1, cuda, int64_t{1} << 22), 128);  // at least 128
  EXPECT_EQ(resolve_loss_chunk_rows(0, cuda, 32768), 0);
  EXPECT_EQ(resolve_loss_chunk_rows(5, cpu, 10), 5);
  EXPECT_THROW(resolve_loss_chunk_rows(-2, cpu, 10), std::invalid_argument);
}

TEST(LossChunkRows, ConfigKeyDefaultsToAutoAndIsChecked) {
  EXPECT_EQ(parse_train_config("", {}).loss_chunk_rows, kLossChunkRowsAuto);
  EXPECT_EQ(parse_train_config("", {"train.loss_chunk_rows=512"}).loss_chunk_rows, 512);
  EXPECT_EQ(parse_task_config("", {"train.loss_chunk_rows=0"}).loss_chunk_rows, 0);
  const auto c = parse_train_config("", {"train.loss_chunk_rows=96"});
  EXPECT_EQ(parse_train_config(to_toml(c), {}).loss_chunk_rows, 96);
  for (const auto& parse : {+[](const std::vector<std::string>& o) { parse_train_config("", o); },
                            +[](const std::vector<std::string>& o) { parse_task_config("", o); }}) {
    try {
      parse({"train.loss_chunk_rows=-2"});
      ADD_FAILURE() << "train.loss_chunk_rows = -2 accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("train.loss_chunk_rows must be >= -1, got -2"),
                std::string::npos)
          << e.what();
    }
  }
}

struct LoopRun {
  std::vector<double> losses;
  std::vector<torch::Tensor> logged_logits;
  std::vector<torch::Tensor> weights;
};

// `steps` loop steps of a fresh model (seeded: the same weights every call) on fixed batches.
LoopRun run_steps(const model::ModelConfig& config, const torch::Device& device, bool bf16,
                  int64_t loss_chunk_rows, int64_t steps) {
  torch::manual_seed(7);
  model::Gpt net(config);
  net->to(device);
  auto optimizer = make_adamw(*net, 1e-3, 0.1);
  LoopSettings s;
  s.steps = steps;
  s.lr = 1e-3;
  s.min_lr = 1e-3;
  s.log_every = 1;
  s.tokens_per_step = 4 * 24;
  s.bf16 = bf16;
  s.quiet = true;
  s.loss_chunk_rows = loss_chunk_rows;
  s.first_loss_reference = std::log(static_cast<double>(config.vocab_size));
  LoopRun run;
  LoopHooks hooks;
  hooks.batch = [&](int64_t step, bool pinned) {
    torch::manual_seed(100 + static_cast<uint64_t>(step));
    auto sequence = torch::randint(0, config.vocab_size, {4, 25}, torch::kInt64);
    if (pinned) sequence = sequence.pin_memory();
    return StepBatch{sequence, {}, {}, {}};
  };
  hooks.logged_step = [&](const StepBatch&, const torch::Tensor& logits, nlohmann::json&) {
    run.logged_logits.push_back(logits.to(torch::kCPU, torch::kFloat32));
  };
  hooks.metrics = [&](const nlohmann::json& line) {
    run.losses.push_back(line["loss"].get<double>());
  };
  run_loop(net, optimizer, device, 0, s, hooks);
  for (const auto& p : net->parameters()) run.weights.push_back(p.detach().to(torch::kCPU));
  return run;
}

TEST(ChunkedLoss, TheLoopTrainsAlikeAndStillLogsTheLogits) {
  const auto config = micro(61);
  const auto full = run_steps(config, torch::kCPU, false, 0, 3);
  const auto chunked = run_steps(config, torch::kCPU, false, 10, 3);  // 96 rows: 10 chunks
  ASSERT_EQ(full.losses.size(), 3u);
  ASSERT_EQ(chunked.losses.size(), 3u);
  ASSERT_EQ(chunked.logged_logits.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    // float32: the same function in another summation order (~1e-7 per operation).
    EXPECT_LT(std::abs(chunked.losses[i] - full.losses[i]) / full.losses[i], 1e-5) << i;
    EXPECT_EQ(chunked.logged_logits[i].sizes(), (std::vector<int64_t>{4, 24, 61}));
    EXPECT_LT(max_rel(chunked.logged_logits[i], full.logged_logits[i]), 1e-4) << i;
  }
  for (size_t i = 0; i < full.weights.size(); ++i) {
    EXPECT_LT(rel_l2(chunked.weights[i], full.weights[i]), 1e-4) << i;
  }
}

TEST(ChunkedLossCuda, TrainingStepMatchesFullLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto config = model::preset("tiny");
  config.vocab_size = 8192;
  config.reach = config.window;  // >= the window (32), as validate() wants
  const torch::Device cuda(torch::kCUDA, 0);

  // One step's loss and gradients under bf16 autocast, as the loop computes them.
  torch::manual_seed(8);
  model::Gpt net(config);
  net->to(cuda);
  const auto tokens = torch::randint(0, config.vocab_size, {16, 24}, torch::kInt64).to(cuda);
  const auto targets = torch::randint(0, config.vocab_size, {16, 24}, torch::kInt64).to(cuda);
  const auto step = [&](int64_t chunk_rows) {
    net->zero_grad();
    torch::Tensor loss;
    {
      const Bf16Autocast autocast(true);
      loss = net->loss(tokens, targets, -100, chunk_rows);
    }
    loss.backward();
    return std::pair{loss.item<double>(), gradients(net)};
  };
  const auto [full_loss, full_grads] = step(0);
  const auto [chunked_loss, chunked_grads] = step(100);  // 384 rows: 4 chunks, the last of 84
  EXPECT_LT(std::abs(chunked_loss - full_loss) / full_loss, 1e-3);
  const auto names = net->named_parameters().keys();
  for (size_t i = 0; i < full_grads.size(); ++i) {
    EXPECT_LT(rel_l2(chunked_grads[i], full_grads[i]), 1e-2) << names[i];
  }

  // Three steps of the loop (fused AdamW), chunked (96 rows: 3 chunks) vs the full logits.
  const auto full = run_steps(config, cuda, true, 0, 3);
  const auto chunked = run_steps(config, cuda, true, 40, 3);
  ASSERT_EQ(full.losses.size(), 3u);
  ASSERT_EQ(chunked.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_LT(std::abs(chunked.losses[i] - full.losses[i]) / full.losses[i], 1e-2) << "step " << i;
  }
}

}  // namespace
}  // namespace reach::train
