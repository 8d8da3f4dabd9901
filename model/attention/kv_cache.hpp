// Keys and values of the tokens seen so far, per layer, for incremental decoding: a prefill
// fills it, each decode step appends its tokens and reads the keys its family needs.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace reach::model::attention {

struct LayerKvCache {
  // [B, H, n, head_dim] for positions 0..n-1; keys carry RoPE at their own positions.
  // With a capacity they are views of the first n rows of key_buffer / value_buffer.
  torch::Tensor keys, values;
  // Anything else a family keeps between steps (e.g. the chunk family's landmarks of the
  // completed chunks), under names the family chooses.
  std::map<std::string, torch::Tensor> state;
  // > 0: the buffers [B, H, capacity, head_dim] are allocated by the first append and
  // appends copy into them (a decode step never copies the cache); 0: appends concatenate.
  int64_t capacity = 0;
  torch::Tensor key_buffer, value_buffer;

  // Batched decode of requests of different lengths (infer/batch_session): the buffers are
  // [max_requests, H, capacity, head_dim] and request b holds rows 0..lengths[b]-1 (keys and
  // values then view the first requests x the longest length). Empty: one length for all.
  std::vector<int64_t> lengths;

  // The longest request's length when batched.
  int64_t length() const { return keys.defined() ? keys.size(2) : 0; }
  bool batched() const { return !lengths.empty(); }
  // Appends [B, H, t, head_dim] keys and values after the cached ones; throws
  // std::length_error past the capacity.
  void append(const torch::Tensor& k, const torch::Tensor& v);
  // Batched: adds a request whose keys and values [1, H, n, head_dim] came from its own
  // prefill (the first allocates buffers for max_requests requests of capacity rows).
  void add_request(const torch::Tensor& k, const torch::Tensor& v, int64_t max_requests,
                   int64_t capacity);
  // Batched: one token per request [requests, H, 1, head_dim], each after its own rows;
  // throws std::length_error past the capacity.
  void append_batched(const torch::Tensor& k, const torch::Tensor& v);
  // Batched, the rows on the device: writes request b's token at row rows[b] (int64
  // [requests] on the buffers' device) and leaves the host lengths alone (advance_batched
  // moves them on once the step has run): a step captured in a CUDA graph.
  void write_batched(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& rows);
  // Batched: every request one token longer (after write_batched wrote that token's row);
  // throws std::length_error past the capacity.
  void advance_batched();
  // A capacity cache of B sequences of one length (a prefill or fill_random_kv_cache over a
  // batch) becomes a batched cache of B requests of that length, each free to grow alone.
  void split_into_requests();

 private:
  void view_batched();
};

class KvCache {
 public:
  explicit KvCache(int64_t layers) : layers_(static_cast<size_t>(layers)) {}
  // Preallocate every layer for `tokens` positions (before the first append).
  void reserve(int64_t tokens);
  LayerKvCache& layer(int64_t index);
  // Tokens cached (the position of the next token); layer 0's count, which every layer shares.
  int64_t length() const { return layers_.empty() ? 0 : layers_.front().length(); }
  int64_t layers() const { return static_cast<int64_t>(layers_.size()); }
  // Batched: each request's length (layer 0's, which every layer shares).
  std::vector<int64_t> layer_lengths() const {
    return layers_.empty() ? std::vector<int64_t>{} : layers_.front().lengths;
  }

 private:
  std::vector<LayerKvCache> layers_;
};

}  // namespace reach::model::attention
