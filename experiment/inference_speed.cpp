#include "experiment/inference_speed.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include "train/device.hpp"

namespace reach::experiment {

double inference_tokens_per_s(model::Gpt& model, const torch::Device& device, bool bf16,
                              int64_t batch, int64_t seq_len, int64_t vocab, double min_seconds) {
  const auto tokens =
      torch::randint(0, vocab, {batch, seq_len}, torch::TensorOptions().dtype(torch::kLong))
          .to(device);
  const train::Bf16Autocast autocast(bf16);
  std::vector<double> seconds;
  double total = 0;
  for (int pass = 0; pass < 22 && (pass < 7 || total < min_seconds); ++pass) {
    train::synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    const auto logits = model(tokens);
    train::synchronize(device);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass >= 2) {
      seconds.push_back(s);
      total += s;
    }
  }
  std::sort(seconds.begin(), seconds.end());
  return static_cast<double>(batch * seq_len) / seconds[seconds.size() / 2];
}

}  // namespace reach::experiment
