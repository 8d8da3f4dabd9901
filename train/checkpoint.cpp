#include "train/checkpoint.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/safetensors.hpp"
#include "train/device.hpp"

namespace reach::train {
namespace fs = std::filesystem;
namespace {

constexpr int kFormatVersion = 1;

io::RawTensor to_raw(const torch::Tensor& tensor) {
  auto t = tensor.detach().contiguous().cpu();
  io::RawTensor raw;
  switch (t.scalar_type()) {
    case torch::kFloat32:
      raw.dtype = "F32";
      break;
    case torch::kFloat64:
      raw.dtype = "F64";
      break;
    case torch::kInt64:
      raw.dtype = "I64";
      break;
    default:
      throw std::runtime_error("checkpoint: unsupported dtype " +
                               std::string(c10::toString(t.scalar_type())));
  }
  raw.shape.assign(t.sizes().begin(), t.sizes().end());
  const auto* p = static_cast<const uint8_t*>(t.data_ptr());
  raw.data.assign(p, p + t.numel() * t.element_size());
  return raw;
}

torch::Tensor from_raw(const io::RawTensor& raw, const std::string& where) {
  torch::ScalarType type;
  if (raw.dtype == "F32")
    type = torch::kFloat32;
  else if (raw.dtype == "F64")
    type = torch::kFloat64;
  else if (raw.dtype == "I64")
    type = torch::kInt64;
  else
    throw std::runtime_error(where + ": unsupported dtype " + raw.dtype);
  auto t = torch::empty(raw.shape, torch::TensorOptions().dtype(type));
  std::memcpy(t.data_ptr(), raw.data.data(), raw.data.size());
  return t;
}

void write_text(const fs::path& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd) != 0 || ::close(fd) != 0) {
    throw std::runtime_error("cannot write '" + path.string() + "'");
  }
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("checkpoint file missing: '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

void save_model_weights(const std::string& path, const torch::nn::Module& model) {
  io::SafetensorsFile weights;
  weights.metadata["format"] = "reach";
  for (const auto& p : model.named_parameters()) weights.tensors[p.key()] = to_raw(p.value());
  io::write_safetensors(path, weights);
}

void load_model_weights(const std::string& path, torch::nn::Module& model,
                        const std::string& where) {
  const auto weights = io::read_safetensors(path);
  torch::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    auto it = weights.tensors.find(p.key());
    if (it == weights.tensors.end()) {
      throw std::runtime_error(where + ": model.safetensors has no tensor '" + p.key() +
                               "' (not a checkpoint of this model)");
    }
    auto t = from_raw(it->second, where);
    if (t.sizes() != p.value().sizes() || t.scalar_type() != p.value().scalar_type()) {
      throw std::runtime_error(
          fmt::format("{}: tensor '{}' has shape {} {}, the model expects {} {}", where, p.key(),
                      c10::str(t.sizes()), c10::toString(t.scalar_type()),
                      c10::str(p.value().sizes()), c10::toString(p.value().scalar_type())));
    }
    p.value().copy_(t);
  }
  if (weights.tensors.size() != model.named_parameters().size()) {
    throw std::runtime_error(where + ": model.safetensors has extra tensors");
  }
}

void save_checkpoint(const std::string& out_dir, int64_t step, model::Gpt& model,
                     torch::optim::AdamW& optimizer, const TrainConfig& config,
                     const data::Tokenizer& tokenizer) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  const std::string name = fmt::format("step-{:08d}", step);
  const fs::path tmp = root / (".tmp-" + name), final_dir = root / name;
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  io::SafetensorsFile weights, moments;
  weights.metadata["format"] = "reach";
  for (const auto& p : model->named_parameters()) {
    weights.tensors[p.key()] = to_raw(p.value());
    auto it = optimizer.state().find(optimizer_state_key(p.value()));
    if (it != optimizer.state().end()) {
      auto& s = static_cast<torch::optim::AdamWParamState&>(*it->second);
      moments.tensors[p.key() + ".exp_avg"] = to_raw(s.exp_avg());
      moments.tensors[p.key() + ".exp_avg_sq"] = to_raw(s.exp_avg_sq());
      moments.tensors[p.key() + ".step"] = to_raw(torch::tensor(s.step(), torch::kInt64));
    }
  }
  io::write_safetensors((tmp / "model.safetensors").string(), weights);
  io::write_safetensors((tmp / "optimizer.safetensors").string(), moments);
  write_text(tmp / "config.toml", to_toml(config));
  tokenizer.save(tmp.string());
  nlohmann::json state{{"format_version", kFormatVersion}, {"step", step}, {"seed", config.seed}};
  write_text(tmp / "state.json", state.dump(2) + "\n");
  fsync_dir(tmp);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(root);
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return std::nullopt;
  std::optional<std::string> best;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !name.starts_with("step-")) continue;
    if (!best || name > fs::path(*best).filename().string()) best = entry.path().string();
  }
  return best;
}

Checkpoint load_checkpoint(const std::string& dir) {
  const fs::path path(dir);
  if (!fs::is_directory(path)) {
    throw std::runtime_error("checkpoint '" + dir + "' is not a directory");
  }
  Checkpoint ckpt;
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_text(path / "state.json"));
    if (state.at("format_version").get<int>() != kFormatVersion) {
      throw std::runtime_error("unsupported format_version");
    }
    ckpt.step = state.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("checkpoint '" + dir + "': state.json is corrupt (" + e.what() + ")");
  }
  try {
    ckpt.config = parse_train_config(read_text(path / "config.toml"), {});
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("checkpoint '" + dir + "': config.toml: " + e.what());
  }
  std::unique_ptr<data::Tokenizer> tokenizer;
  try {
    tokenizer = data::load_tokenizer(dir);
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + dir + "': " + e.what());
  }
  if (ckpt.config.model.vocab_size != tokenizer->vocab_size()) {
    throw std::runtime_error("checkpoint '" + dir + "': the model's vocabulary (" +
                             std::to_string(ckpt.config.model.vocab_size) +
                             ") does not match its tokenizer's (" +
                             std::to_string(tokenizer->vocab_size()) + ")");
  }
  ckpt.model = model::Gpt(ckpt.config.model);
  load_model_weights((path / "model.safetensors").string(), *ckpt.model,
                     "checkpoint '" + dir + "'");
  return ckpt;
}

void load_optimizer_state(const std::string& dir, model::Gpt& model,
                          torch::optim::AdamW& optimizer) {
  const auto moments = io::read_safetensors((fs::path(dir) / "optimizer.safetensors").string());
  for (const auto& p : model->named_parameters()) {
    auto avg = moments.tensors.find(p.key() + ".exp_avg");
    auto sq = moments.tensors.find(p.key() + ".exp_avg_sq");
    auto st = moments.tensors.find(p.key() + ".step");
    if (avg == moments.tensors.end() || sq == moments.tensors.end() ||
        st == moments.tensors.end()) {
      continue;  // never stepped (no gradient yet)
    }
    auto state = std::make_unique<torch::optim::AdamWParamState>();
    // The moments live where their parameter does (the GPU when training there).
    const auto device = p.value().device();
    state->exp_avg(from_raw(avg->second, dir).to(device));
    state->exp_avg_sq(from_raw(sq->second, dir).to(device));
    state->step(from_raw(st->second, dir).item<int64_t>());
    optimizer.state()[optimizer_state_key(p.value())] = std::move(state);
  }
}

}  // namespace reach::train
