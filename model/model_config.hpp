// Configuration of the GPT-style decoder and its attention per layer. Every model choice is a
// typed enum, parsed once from its config name (parse_* below); the model never compares names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/chunk_attention_params.hpp"
#include "pattern/alpha_schedule.hpp"
#include "pattern/dilated_offsets.hpp"
#include "pattern/paper_convention.hpp"

namespace reach::model {

// Which keys a query sees: every earlier key, its local window, the window plus dilated
// offsets from a base sequence (pattern::OffsetBase) scaled by the layer's alpha, or
// hierarchical chunk sparse attention (docs/chunk_attention.md: window layers below, the
// chunk encoder at the middle layer, window + top-k chunk retrieval from there up).
enum class AttentionFamily { dense, window, fibonacci, power_of_two, chunk };
// Chunk family: what a chunk's landmark is made from: the encoder's output at a learned CLS
// token appended to the chunk, the projected mean of the chunk's encoded tokens, or the mean of
// the chunk's keys per head, with no landmark projection (mean_keys: the paper's "no CLS
// encoder" ablation, with chunk_encoder_layers = 0).
enum class ChunkLandmark { cls, mean, mean_keys };
// Chunk family: what scores a query's candidate chunks. retrieval: the layer's own retrieval
// query r against the unit-normalised landmark; moba: the token query q itself against the
// plain mean of the chunk's keys, so a chunk's score is the mean of q's scores over its keys
// (MoBA's parameter-free gate; needs chunk_encoder_layers = 0 and chunk_landmark = mean_keys).
enum class ChunkScoring { retrieval, moba };
// Chunk family: where the retrieved output goes: only into the MLP's input (the bypassing
// path, out = h + mlp(norm(h + retrieved))) or into the residual stream like any attention.
enum class ChunkResidual { bypass, standard };
// Chunk family: enforced selection sparsity. enforced: a query with C candidate chunks reads
// clamp(ceil(chunk_fraction * C), 1, chunk_top_k) of them, so every query with >= 2
// candidates must choose, at any training length; none: min(C, chunk_top_k), so queries with
// C <= chunk_top_k read every candidate (no choice while the training length is short).
enum class ChunkSparsity { enforced, none };
using kernels::ChunkWeighting;
// How positions enter attention: RoPE on queries and keys, an ALiBi distance bias, none
// (NoPE), or NAPE (the first half of the heads NoPE, the second half ALiBi with the slopes
// of a model with that many heads).
enum class Positions { rope, alibi, nope, nape };
// How scores become attention weights over the key set: softmax; alpha-entmax (alpha =
// entmax_alpha); ASEntmax (entmax of scores times delta_h + beta_h * log(n + 1)^gamma_h, all
// three learned per head); SSMax (softmax of scores times beta_h * log(n + 1), beta_h learned).
// n is the number of keys the query sees. See docs/entmax.md.
enum class Normalizer { softmax, entmax, asentmax, ssmax };
// ASEntmax's beta and gamma: learned per head, or per query from the layer's input h_i
// (beta_i = softplus(w_beta . h_i + b), gamma_i = 2 tanh(w_gamma . h_i + b), per head: the
// authors' "adapt-softplus-tanh" variant). See docs/entmax.md.
enum class EntmaxScale { per_head, per_query };
// entmax / asentmax alpha: fixed at entmax_alpha, or learned per head as 1 + sigmoid(theta_h)
// in (1, 2), starting at entmax_alpha.
enum class EntmaxAlpha { fixed, learned };
// The blocks' normalisation layers: LayerNorm (with bias) or RMSNorm (scale only, eps 1e-6).
enum class Norm { layernorm, rmsnorm };
// The MLP: GELU (fc -> gelu -> out) or SwiGLU (down(silu(gate x) * up x)).
enum class Mlp { gelu, swiglu };
using pattern::AlphaSchedule;

// Parsers of the config names (the names to_string gives, plus the aliases pattern/ accepts:
// "fib", "pow2", "linear"). A bad name throws std::invalid_argument naming the key
// ("model.attention") and the allowed names.
AttentionFamily parse_attention_family(const std::string& name);
Positions parse_positions(const std::string& name);
Normalizer parse_normalizer(const std::string& name);
EntmaxScale parse_entmax_scale(const std::string& name);
EntmaxAlpha parse_entmax_alpha(const std::string& name);
Norm parse_norm(const std::string& name);
Mlp parse_mlp(const std::string& name);
pattern::OffsetConvention parse_convention(const std::string& name);
AlphaSchedule parse_schedule(const std::string& name);
ChunkLandmark parse_chunk_landmark(const std::string& name);
ChunkResidual parse_chunk_residual(const std::string& name);
ChunkSparsity parse_chunk_sparsity(const std::string& name);
// model.chunk_local: window, fibonacci or power_of_two.
AttentionFamily parse_chunk_local(const std::string& name);
ChunkScoring parse_chunk_scoring(const std::string& name);
ChunkWeighting parse_chunk_weighting(const std::string& name);
std::string to_string(AttentionFamily family);
std::string to_string(ChunkLandmark landmark);
std::string to_string(ChunkResidual residual);
std::string to_string(ChunkSparsity sparsity);
std::string to_string(ChunkScoring scoring);
using kernels::to_string;
std::string to_string(Positions positions);
std::string to_string(Normalizer normalizer);
std::string to_string(EntmaxScale scale);
std::string to_string(EntmaxAlpha alpha);
std::string to_string(Norm norm);
std::string to_string(Mlp mlp);
using pattern::to_string;
// The names each parser accepts (without aliases), in declaration order, for help and errors.
std::vector<std::string> attention_family_names();
std::vector<std::string> positions_names();
std::vector<std::string> normalizer_names();
std::vector<std::string> entmax_scale_names();
std::vector<std::string> entmax_alpha_names();
std::vector<std::string> norm_names();
std::vector<std::string> mlp_names();
std::vector<std::string> convention_names();
std::vector<std::string> schedule_names();
std::vector<std::string> chunk_landmark_names();
std::vector<std::string> chunk_residual_names();
std::vector<std::string> chunk_sparsity_names();
std::vector<std::string> chunk_local_names();
std::vector<std::string> chunk_scoring_names();
std::vector<std::string> chunk_weighting_names();

// Window plus dilated offsets (fibonacci, power_of_two): the families with an alpha schedule.
bool is_dilated(AttentionFamily family);
// The offset base of a dilated family; throws std::logic_error for dense and window.
pattern::OffsetBase offset_base(AttentionFamily family);
// ALiBi or NAPE: a per-head distance bias on the scores.
bool has_distance_bias(Positions positions);

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t layers = 4;
  int64_t d_model = 128;
  int64_t heads = 4;
  int64_t mlp_ratio = 4;
  AttentionFamily attention = AttentionFamily::fibonacci;
  // Alpha across depth for fibonacci / power_of_two.
  AlphaSchedule schedule = AlphaSchedule::stagger;
  double alpha = 1.0;      // fixed
  double alpha_min = 1.0;  // stagger / coprime / learned init
  double alpha_max = 3.0;
  int64_t window = 32;
  int64_t reach = 0;  // maximum offset R; 0 = the training sequence length
  Positions positions = Positions::rope;
  double rope_base = 10000.0;
  Normalizer normalizer = Normalizer::softmax;         // over whichever key set `attention` gives
  double entmax_alpha = 1.5;                           // in (1, 2]
  EntmaxScale entmax_scale = EntmaxScale::per_head;    // asentmax only
  EntmaxAlpha entmax_alpha_mode = EntmaxAlpha::fixed;  // entmax / asentmax only

  // Chunk family (attention = chunk; docs/chunk_attention.md).
  int64_t chunk_size = 64;              // S: tokens per chunk
  int64_t chunk_top_k = 8;              // k: most chunks a query reads
  int64_t chunk_encoder_layers = 1;     // bidirectional encoder layers; 0 = linear (no encoder)
  int64_t chunk_encoder_mlp_ratio = 4;  // encoder MLP hidden size / d_model
  ChunkLandmark chunk_landmark = ChunkLandmark::cls;
  ChunkResidual chunk_residual = ChunkResidual::bypass;
  ChunkSparsity chunk_sparsity = ChunkSparsity::enforced;
  ChunkScoring chunk_scoring = ChunkScoring::retrieval;
  double chunk_fraction = 0.5;  // enforced sparsity: share of the candidates read, in (0, 1]
  ChunkWeighting chunk_weighting = ChunkWeighting::softmax;
  int64_t chunk_every = 1;  // from the middle layer up, every chunk_every-th layer retrieves
  // The family of the layers that do not retrieve (below the chunking layer, and between
  // retrieval layers when chunk_every > 1): window, or fibonacci / power_of_two (the dilated
  // layer of that family: the window plus the offsets scaled by the layer's alpha under
  // model.schedule), so chunk retrieval can sit on Fibonacci-dilated layers.
  AttentionFamily chunk_local = AttentionFamily::window;
  // Grouped-query attention: K/V heads, each shared by heads / kv_heads query heads (0 = heads).
  int64_t kv_heads = 0;
  Norm norm = Norm::layernorm;
  Mlp mlp = Mlp::gelu;
  int64_t mlp_hidden = 0;  // 0 = derive (mlp_hidden_of)
  bool bias = true;        // biases in the MLP's linear layers (attention has none)
  double init_std = 0.02;  // N(0, init_std) weights; residual projections / sqrt(2 layers)
  // Whose definition of window and offsets: reach's general form, or the main paper's exact
  // one (window = distances 0..W, capped rungs, its rounding; pattern/paper_convention.hpp).
  pattern::OffsetConvention convention = pattern::OffsetConvention::reach;
};

// K/V heads (kv_heads, or heads when 0).
int64_t kv_heads_of(const ModelConfig& config);
// The MLP's hidden width: mlp_hidden, else mlp_ratio * d_model (GELU) or the paper's SwiGLU
// width, 8/3 d_model rounded up to even.
int64_t mlp_hidden_of(const ModelConfig& config);
// Keys in the local window as the kernels count them: W (reach), W + 1 (paper: distances 0..W).
int64_t kernel_window(const ModelConfig& config);

// Throws std::invalid_argument naming the first bad field.
void validate(const ModelConfig& config);

// Chunk family: the layer holding the chunk encoder (layers / 2), and whether layer `layer`
// retrieves (the encoder layer and every chunk_every-th layer above it).
int64_t chunk_encoder_layer(const ModelConfig& config);
bool is_chunk_retrieval_layer(const ModelConfig& config, int64_t layer);

// Named presets: "paper" (16 layers, 512 hidden, 8 heads, W 64: the main paper's recipe; with a
// 16,384-token vocabulary it has 58.8M parameters, the paper's ~60M, which does not state its
// vocabulary), "tiny" (4 x 128, trains in minutes on 2 cores), "micro" (tests).
ModelConfig preset(const std::string& name);

}  // namespace reach::model
