#include "eval/perplexity.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace reach::eval {

std::vector<LengthResult> evaluate_lengths(const LogitsFn& logits,
                                           const std::vector<std::vector<int64_t>>& documents,
                                           const std::vector<int64_t>& lengths, int64_t max_tokens,
                                           int64_t tokens_per_batch,
                                           const std::vector<int64_t>& token_bytes) {
  if (max_tokens < 1) {
    throw std::invalid_argument("evaluation max_tokens must be >= 1, got " +
                                std::to_string(max_tokens));
  }
  torch::NoGradGuard no_grad;
  std::vector<LengthResult> results;
  for (int64_t length : lengths) {
    if (length < 1) throw std::invalid_argument("evaluation length must be >= 1");
    std::vector<std::pair<size_t, int64_t>> windows;  // (document, start)
    for (size_t d = 0; d < documents.size(); ++d) {
      const auto n = static_cast<int64_t>(documents[d].size());
      for (int64_t s = 0; s + length + 1 <= n; s += length) {
        if (static_cast<int64_t>(windows.size() + 1) * length > max_tokens && !windows.empty())
          break;
        windows.emplace_back(d, s);
      }
      if (static_cast<int64_t>(windows.size()) * length >= max_tokens) break;
    }
    if (windows.empty()) {
      int64_t longest = 0;
      for (const auto& doc : documents) longest = std::max<int64_t>(longest, doc.size());
      throw std::invalid_argument("evaluation length " + std::to_string(length) +
                                  " is longer than every held-out document (longest: " +
                                  std::to_string(longest > 0 ? longest - 1 : 0) + " tokens)");
    }
    LengthResult r;
    r.length = length;
    r.windows = static_cast<int64_t>(windows.size());
    torch::Tensor position_sum = torch::zeros({length}, torch::kFloat64);
    const int64_t per_batch = std::max<int64_t>(1, tokens_per_batch / length);
    double total = 0;
    int64_t bytes = 0;
    for (size_t w0 = 0; w0 < windows.size(); w0 += static_cast<size_t>(per_batch)) {
      const size_t w1 = std::min(windows.size(), w0 + static_cast<size_t>(per_batch));
      auto batch = torch::empty({static_cast<int64_t>(w1 - w0), length + 1}, torch::kInt64);
      auto acc = batch.accessor<int64_t, 2>();
      for (size_t w = w0; w < w1; ++w) {
        const auto& doc = documents[windows[w].first];
        for (int64_t t = 0; t <= length; ++t) {
          const int64_t id = doc[windows[w].second + t];
          acc[static_cast<int64_t>(w - w0)][t] = id;
          if (t > 0 && id >= 0 && id < static_cast<int64_t>(token_bytes.size()))
            bytes += token_bytes[static_cast<size_t>(id)];
        }
      }
      auto input = batch.narrow(1, 0, length), target = batch.narrow(1, 1, length);
      auto logp = torch::log_softmax(logits(input).to(torch::kFloat64), -1);
      // The logits may come from a GPU; the sums are kept on the CPU.
      auto nll = -logp.gather(-1, target.to(logp.device()).unsqueeze(-1)).squeeze(-1);  // [B, L]
      position_sum += nll.sum(0).cpu();
      total += nll.sum().item<double>();
    }
    r.tokens = r.windows * length;
    r.mean_nll = total / static_cast<double>(r.tokens);
    r.perplexity = std::exp(r.mean_nll);
    if (!token_bytes.empty() && bytes > 0) {
      r.bytes = bytes;
      r.bits_per_byte = total / std::log(2.0) / static_cast<double>(bytes);
    }
    const int64_t buckets = std::min<int64_t>(8, length);
    for (int64_t b = 0; b < buckets; ++b) {
      const int64_t lo = b * length / buckets, hi = (b + 1) * length / buckets;
      r.bucket_nll.push_back(position_sum.narrow(0, lo, hi - lo).sum().item<double>() /
                             static_cast<double>((hi - lo) * r.windows));
    }
    results.push_back(r);
  }
  return results;
}

void require_heldout_length(const std::vector<std::vector<int64_t>>& documents,
                            const std::vector<int64_t>& lengths, const std::string& remedy) {
  if (lengths.empty()) return;
  const int64_t needed = *std::max_element(lengths.begin(), lengths.end());
  int64_t longest = 0;
  for (const auto& doc : documents) longest = std::max<int64_t>(longest, doc.size());
  if (longest >= needed + 1) return;
  throw std::invalid_argument("the held-out text is too short to evaluate at length " +
                              std::to_string(needed) + ": that needs a held-out document of " +
                              std::to_string(needed + 1) + " tokens, the longest has " +
                              std::to_string(longest) + " (" + std::to_string(documents.size()) +
                              " held-out documents); " + remedy);
}

}  // namespace reach::eval
