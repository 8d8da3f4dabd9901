#include "model/model_config.hpp"

#include <array>
#include <stdexcept>
#include <utility>

#include "pattern/dilated_offsets.hpp"
#include "pattern/paper_convention.hpp"

namespace reach::model {
namespace {

template <class E, size_t N = 4>
using Names = std::array<std::pair<E, const char*>, N>;

constexpr Names<AttentionFamily, 5> kAttention{{{AttentionFamily::dense, "dense"},
                                                {AttentionFamily::window, "window"},
                                                {AttentionFamily::fibonacci, "fibonacci"},
                                                {AttentionFamily::power_of_two, "power_of_two"},
                                                {AttentionFamily::chunk, "chunk"}}};
constexpr Names<ChunkLandmark, 3> kChunkLandmark{{{ChunkLandmark::cls, "cls"},
                                                  {ChunkLandmark::mean, "mean"},
                                                  {ChunkLandmark::mean_keys, "mean_keys"}}};
constexpr Names<ChunkScoring, 2> kChunkScoring{
    {{ChunkScoring::retrieval, "retrieval"}, {ChunkScoring::moba, "moba"}}};
constexpr Names<ChunkResidual, 2> kChunkResidual{
    {{ChunkResidual::bypass, "bypass"}, {ChunkResidual::standard, "standard"}}};
constexpr Names<AttentionFamily, 3> kChunkLocal{{{AttentionFamily::window, "window"},
                                                 {AttentionFamily::fibonacci, "fibonacci"},
                                                 {AttentionFamily::power_of_two, "power_of_two"}}};
constexpr Names<ChunkSparsity, 2> kChunkSparsity{
    {{ChunkSparsity::enforced, "enforced"}, {ChunkSparsity::none, "none"}}};
constexpr Names<Positions> kPositions{{{Positions::rope, "rope"},
                                       {Positions::alibi, "alibi"},
                                       {Positions::nope, "nope"},
                                       {Positions::nape, "nape"}}};
constexpr Names<Normalizer> kNormalizer{{{Normalizer::softmax, "softmax"},
                                         {Normalizer::entmax, "entmax"},
                                         {Normalizer::asentmax, "asentmax"},
                                         {Normalizer::ssmax, "ssmax"}}};
constexpr Names<EntmaxScale, 2> kEntmaxScale{
    {{EntmaxScale::per_head, "per_head"}, {EntmaxScale::per_query, "per_query"}}};
constexpr Names<EntmaxAlpha, 2> kEntmaxAlpha{
    {{EntmaxAlpha::fixed, "fixed"}, {EntmaxAlpha::learned, "learned"}}};
constexpr Names<Norm, 2> kNorm{{{Norm::layernorm, "layernorm"}, {Norm::rmsnorm, "rmsnorm"}}};
constexpr Names<Mlp, 2> kMlp{{{Mlp::gelu, "gelu"}, {Mlp::swiglu, "swiglu"}}};

template <class E, size_t N>
std::vector<std::string> names_of(const Names<E, N>& names) {
  std::vector<std::string> out;
  for (const auto& [value, name] : names) out.emplace_back(name);
  return out;
}

// "a, b, c or d"
std::string alternatives(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    out += names[i];
  }
  return out;
}

[[noreturn]] void bad_name(const char* key, const std::vector<std::string>& names,
                           const std::string& got) {
  throw std::invalid_argument(std::string(key) + " must be " + alternatives(names) + ", got '" +
                              got + "'");
}

template <class E, size_t N>
E parse_name(const char* key, const Names<E, N>& names, const std::string& name) {
  for (const auto& [value, text] : names) {
    if (name == text) return value;
  }
  bad_name(key, names_of(names), name);
}

template <class E, size_t N>
std::string name_of(const Names<E, N>& names, E value) {
  for (const auto& [v, text] : names) {
    if (v == value) return text;
  }
  throw std::logic_error("enum value without a name");
}

void validate_chunk(const ModelConfig& c) {
  auto at_least = [](int64_t v, int64_t min, const char* name) {
    if (v < min) {
      throw std::invalid_argument(std::string("model.") + name + " must be >= " +
                                  std::to_string(min) + ", got " + std::to_string(v));
    }
  };
  at_least(c.chunk_size, 1, "chunk_size");
  at_least(c.chunk_top_k, 1, "chunk_top_k");
  at_least(c.chunk_encoder_layers, 0, "chunk_encoder_layers");
  at_least(c.chunk_encoder_mlp_ratio, 1, "chunk_encoder_mlp_ratio");
  at_least(c.chunk_every, 1, "chunk_every");
  if (c.chunk_local != AttentionFamily::window && !is_dilated(c.chunk_local)) {
    throw std::invalid_argument(
        "model.chunk_local (the layers that do not retrieve) must be 'window', 'fibonacci' or "
        "'power_of_two', got '" +
        to_string(c.chunk_local) + "'");
  }
  if (!(c.chunk_fraction > 0.0 && c.chunk_fraction <= 1.0)) {
    throw std::invalid_argument("model.chunk_fraction must be in (0, 1], got " +
                                std::to_string(c.chunk_fraction));
  }
  if (c.chunk_encoder_layers == 0 && c.chunk_landmark == ChunkLandmark::cls) {
    throw std::invalid_argument(
        "model.chunk_encoder_layers = 0 (a linear encoder: no layer reads the CLS token) needs "
        "model.chunk_landmark = 'mean' or 'mean_keys'");
  }
  if (c.chunk_scoring == ChunkScoring::moba &&
      (c.chunk_encoder_layers != 0 || c.chunk_landmark != ChunkLandmark::mean_keys)) {
    throw std::invalid_argument(
        "model.chunk_scoring = 'moba' (the query scores the chunk's mean key: no separate "
        "encoder) needs model.chunk_encoder_layers = 0 and model.chunk_landmark = 'mean_keys', "
        "got " +
        std::to_string(c.chunk_encoder_layers) + " and '" + to_string(c.chunk_landmark) + "'");
  }
  if (c.positions != Positions::rope && c.positions != Positions::nope) {
    throw std::invalid_argument(
        "model.attention = 'chunk' works with model.positions = 'rope' "
        "or 'nope' (its window layers), got '" +
        to_string(c.positions) + "'");
  }
  if (c.normalizer != Normalizer::softmax) {
    throw std::invalid_argument(
        "model.attention = 'chunk' works with model.normalizer = "
        "'softmax' only, got '" +
        to_string(c.normalizer) + "'");
  }
}

}  // namespace

AttentionFamily parse_attention_family(const std::string& name) {
  if (name == "dense") return AttentionFamily::dense;
  if (name == "window") return AttentionFamily::window;
  if (name == "chunk") return AttentionFamily::chunk;
  try {
    return pattern::parse_offset_base(name) == pattern::OffsetBase::fibonacci
               ? AttentionFamily::fibonacci
               : AttentionFamily::power_of_two;
  } catch (const std::invalid_argument&) {
    bad_name("model.attention", attention_family_names(), name);
  }
}

Positions parse_positions(const std::string& name) {
  return parse_name("model.positions", kPositions, name);
}

Normalizer parse_normalizer(const std::string& name) {
  return parse_name("model.normalizer", kNormalizer, name);
}

EntmaxScale parse_entmax_scale(const std::string& name) {
  return parse_name("model.entmax_scale", kEntmaxScale, name);
}

EntmaxAlpha parse_entmax_alpha(const std::string& name) {
  return parse_name("model.entmax_alpha_mode", kEntmaxAlpha, name);
}

Norm parse_norm(const std::string& name) { return parse_name("model.norm", kNorm, name); }
Mlp parse_mlp(const std::string& name) { return parse_name("model.mlp", kMlp, name); }

pattern::OffsetConvention parse_convention(const std::string& name) {
  try {
    return pattern::parse_offset_convention(name);
  } catch (const std::invalid_argument&) {
    bad_name("model.convention", convention_names(), name);
  }
}

AlphaSchedule parse_schedule(const std::string& name) {
  try {
    return pattern::parse_alpha_schedule(name);
  } catch (const std::invalid_argument&) {
    bad_name("model.schedule", schedule_names(), name);
  }
}

ChunkLandmark parse_chunk_landmark(const std::string& name) {
  return parse_name("model.chunk_landmark", kChunkLandmark, name);
}
ChunkResidual parse_chunk_residual(const std::string& name) {
  return parse_name("model.chunk_residual", kChunkResidual, name);
}
AttentionFamily parse_chunk_local(const std::string& name) {
  return parse_name("model.chunk_local", kChunkLocal, name);
}
ChunkSparsity parse_chunk_sparsity(const std::string& name) {
  return parse_name("model.chunk_sparsity", kChunkSparsity, name);
}
ChunkScoring parse_chunk_scoring(const std::string& name) {
  return parse_name("model.chunk_scoring", kChunkScoring, name);
}
ChunkWeighting parse_chunk_weighting(const std::string& name) {
  try {
    return kernels::parse_chunk_weighting(name);
  } catch (const std::invalid_argument&) {
    bad_name("model.chunk_weighting", chunk_weighting_names(), name);
  }
}

std::string to_string(AttentionFamily family) { return name_of(kAttention, family); }
std::string to_string(ChunkLandmark landmark) { return name_of(kChunkLandmark, landmark); }
std::string to_string(ChunkResidual residual) { return name_of(kChunkResidual, residual); }
std::string to_string(ChunkSparsity sparsity) { return name_of(kChunkSparsity, sparsity); }
std::string to_string(ChunkScoring scoring) { return name_of(kChunkScoring, scoring); }
std::string to_string(Positions positions) { return name_of(kPositions, positions); }
std::string to_string(Normalizer normalizer) { return name_of(kNormalizer, normalizer); }
std::string to_string(EntmaxScale scale) { return name_of(kEntmaxScale, scale); }
std::string to_string(EntmaxAlpha alpha) { return name_of(kEntmaxAlpha, alpha); }
std::string to_string(Norm norm) { return name_of(kNorm, norm); }
std::string to_string(Mlp mlp) { return name_of(kMlp, mlp); }

std::vector<std::string> attention_family_names() { return names_of(kAttention); }
std::vector<std::string> positions_names() { return names_of(kPositions); }
std::vector<std::string> normalizer_names() { return names_of(kNormalizer); }
std::vector<std::string> entmax_scale_names() { return names_of(kEntmaxScale); }
std::vector<std::string> entmax_alpha_names() { return names_of(kEntmaxAlpha); }
std::vector<std::string> chunk_landmark_names() { return names_of(kChunkLandmark); }
std::vector<std::string> chunk_residual_names() { return names_of(kChunkResidual); }
std::vector<std::string> chunk_sparsity_names() { return names_of(kChunkSparsity); }
std::vector<std::string> chunk_local_names() { return names_of(kChunkLocal); }
std::vector<std::string> chunk_scoring_names() { return names_of(kChunkScoring); }
std::vector<std::string> chunk_weighting_names() {
  return {kernels::to_string(ChunkWeighting::softmax),
          kernels::to_string(ChunkWeighting::stick_breaking)};
}

std::vector<std::string> norm_names() { return names_of(kNorm); }
std::vector<std::string> mlp_names() { return names_of(kMlp); }
std::vector<std::string> convention_names() {
  return {pattern::to_string(pattern::OffsetConvention::reach),
          pattern::to_string(pattern::OffsetConvention::paper)};
}

int64_t kv_heads_of(const ModelConfig& c) { return c.kv_heads == 0 ? c.heads : c.kv_heads; }

int64_t mlp_hidden_of(const ModelConfig& c) {
  if (c.mlp_hidden > 0) return c.mlp_hidden;
  if (c.mlp == Mlp::gelu) return c.mlp_ratio * c.d_model;
  // SwiGLU: 8/3 of d_model (as many weights as a 4x GELU MLP), rounded up to even, as the main
  // paper's code does (d_model 512 -> 1366).
  const auto h = static_cast<int64_t>(static_cast<double>(c.d_model) * 8.0 / 3.0);
  return (h + 1) / 2 * 2;
}

int64_t kernel_window(const ModelConfig& c) {
  return c.convention == pattern::OffsetConvention::paper ? c.window + 1 : c.window;
}
std::vector<std::string> schedule_names() {
  std::vector<std::string> out;
  for (auto s : {AlphaSchedule::fixed, AlphaSchedule::stagger, AlphaSchedule::coprime,
                 AlphaSchedule::learned}) {
    out.push_back(pattern::to_string(s));
  }
  return out;
}

bool is_dilated(AttentionFamily family) {
  return family == AttentionFamily::fibonacci || family == AttentionFamily::power_of_two;
}

pattern::OffsetBase offset_base(AttentionFamily family) {
  switch (family) {
    case AttentionFamily::fibonacci:
      return pattern::OffsetBase::fibonacci;
    case AttentionFamily::power_of_two:
      return pattern::OffsetBase::power_of_two;
    case AttentionFamily::dense:
    case AttentionFamily::window:
    case AttentionFamily::chunk:
      break;
  }
  throw std::logic_error("model.attention = '" + to_string(family) + "' has no offset base");
}

bool has_distance_bias(Positions positions) {
  return positions == Positions::alibi || positions == Positions::nape;
}

void validate(const ModelConfig& c) {
  auto positive = [](int64_t v, const char* name) {
    if (v < 1) throw std::invalid_argument(std::string("model.") + name + " must be >= 1");
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.layers, "layers");
  positive(c.d_model, "d_model");
  positive(c.heads, "heads");
  positive(c.mlp_ratio, "mlp_ratio");
  positive(c.window, "window");
  if (c.d_model % c.heads != 0) {
    throw std::invalid_argument("model.d_model (" + std::to_string(c.d_model) +
                                ") must be divisible by model.heads (" + std::to_string(c.heads) +
                                ")");
  }
  if ((c.d_model / c.heads) % 2 != 0 && c.positions == Positions::rope) {
    throw std::invalid_argument("model: RoPE needs an even head dimension");
  }
  if (c.positions == Positions::nape && c.heads < 2) {
    throw std::invalid_argument(
        "model.positions = 'nape' needs at least 2 heads (half NoPE, "
        "half ALiBi)");
  }
  if (!(c.entmax_alpha > 1.0 && c.entmax_alpha <= 2.0)) {
    throw std::invalid_argument("model.entmax_alpha must be in (1, 2], got " +
                                std::to_string(c.entmax_alpha));
  }
  if (c.entmax_scale == EntmaxScale::per_query && c.normalizer != Normalizer::asentmax) {
    throw std::invalid_argument(
        "model.entmax_scale = 'per_query' needs model.normalizer = "
        "'asentmax', got '" +
        to_string(c.normalizer) + "'");
  }
  if (c.entmax_alpha_mode == EntmaxAlpha::learned) {
    if (c.normalizer != Normalizer::entmax && c.normalizer != Normalizer::asentmax) {
      throw std::invalid_argument(
          "model.entmax_alpha_mode = 'learned' needs model.normalizer = 'entmax' or "
          "'asentmax', got '" +
          to_string(c.normalizer) + "'");
    }
    if (!(c.entmax_alpha < 2.0)) {
      throw std::invalid_argument(
          "model.entmax_alpha_mode = 'learned' keeps alpha in (1, 2): model.entmax_alpha must "
          "be < 2 to start from, got " +
          std::to_string(c.entmax_alpha));
    }
  }
  const bool bias_or_normalizer =
      has_distance_bias(c.positions) || c.normalizer != Normalizer::softmax;
  if (bias_or_normalizer && c.schedule == AlphaSchedule::learned && is_dilated(c.attention)) {
    throw std::invalid_argument(
        "model.schedule = 'learned' (fractional offsets) works with softmax and rope/nope only; "
        "model.normalizer = '" +
        to_string(c.normalizer) + "' and model.positions = '" + to_string(c.positions) +
        "' need integer offsets (a static schedule)");
  }
  if (c.reach < 0) throw std::invalid_argument("model.reach must be >= 0 (0 = seq_len)");
  if (c.kv_heads < 0 || (c.kv_heads > 0 && c.heads % c.kv_heads != 0)) {
    throw std::invalid_argument("model.kv_heads (" + std::to_string(c.kv_heads) +
                                ") must divide model.heads (" + std::to_string(c.heads) +
                                "), or be 0 (= model.heads)");
  }
  if (c.kv_heads > 0 && c.kv_heads < c.heads && c.attention == AttentionFamily::chunk) {
    throw std::invalid_argument(
        "model.kv_heads < model.heads (grouped-query attention) is not built for model.attention "
        "= 'chunk' (its retrieval has its own K/V projections)");
  }
  if (c.kv_heads > 0 && c.kv_heads < c.heads && c.normalizer != Normalizer::softmax) {
    throw std::invalid_argument(
        "model.kv_heads < model.heads (grouped-query attention) works with softmax only; "
        "model.normalizer = '" +
        to_string(c.normalizer) + "'");
  }
  if (c.mlp_hidden < 0) throw std::invalid_argument("model.mlp_hidden must be >= 0 (0 = derive)");
  if (!(c.init_std > 0)) throw std::invalid_argument("model.init_std must be > 0");
  if (c.convention == pattern::OffsetConvention::paper) {
    if (c.schedule == AlphaSchedule::learned && is_dilated(c.attention)) {
      throw std::invalid_argument(
          "model.convention = 'paper' has the static schedules (fixed, stagger, coprime); the "
          "paper's learned gather is not built: use model.convention = 'reach' for "
          "model.schedule = 'learned'");
    }
  }
  if (c.attention == AttentionFamily::chunk) validate_chunk(c);
}

int64_t chunk_encoder_layer(const ModelConfig& c) { return c.layers / 2; }

bool is_chunk_retrieval_layer(const ModelConfig& c, int64_t layer) {
  const int64_t first = chunk_encoder_layer(c);
  return c.attention == AttentionFamily::chunk && layer >= first &&
         (layer - first) % c.chunk_every == 0;
}

ModelConfig preset(const std::string& name) {
  ModelConfig c;
  if (name == "paper") {
    c.vocab_size = 16384;  // 58.8M parameters in all: the paper's ~60M
    c.layers = 16;
    c.d_model = 512;
    c.heads = 8;
    c.window = 64;
  } else if (name == "paper-exact") {
    // The main paper's model exactly (its authors' code): 16 x 512, 8 query heads over 2 K/V
    // heads, SwiGLU 1366, RMSNorm, no biases, N(0, 512^-1/2) initialisation, 32,768-token
    // vocabulary, window W = 12 in the paper's convention: 60,850,688 parameters.
    c.vocab_size = 32768;
    c.layers = 16;
    c.d_model = 512;
    c.heads = 8;
    c.kv_heads = 2;
    c.norm = Norm::rmsnorm;
    c.mlp = Mlp::swiglu;
    c.bias = false;
    c.init_std = 0.044194173824159216;  // 1 / sqrt(512)
    c.convention = pattern::OffsetConvention::paper;
    c.window = 12;
  } else if (name == "tiny") {
    c.layers = 4;
    c.d_model = 128;
    c.heads = 4;
    c.window = 32;
  } else if (name == "micro") {
    c.layers = 2;
    c.d_model = 32;
    c.heads = 2;
    c.window = 8;
  } else {
    throw std::invalid_argument("unknown model preset '" + name +
                                "' (expected paper, paper-exact, tiny or micro)");
  }
  return c;
}

}  // namespace reach::model
