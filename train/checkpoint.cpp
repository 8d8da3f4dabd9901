#include "train/checkpoint.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/remove_tree.hpp"
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

// The step of a "step-NNNNNNNN" directory name, or -1 for any other name.
int64_t step_of_name(const std::string& name) {
  constexpr std::string_view prefix = "step-";
  if (!name.starts_with(prefix) || name.size() == prefix.size() ||
      name.size() > prefix.size() + 18 ||
      name.find_first_not_of("0123456789", prefix.size()) != std::string::npos) {
    return -1;
  }
  return std::stoll(name.substr(prefix.size()));
}

// The step-* directories under out_dir/checkpoints, by step, oldest first.
std::vector<std::pair<int64_t, fs::path>> checkpoint_dirs(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::vector<std::pair<int64_t, fs::path>> dirs;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& entry : fs::directory_iterator(root)) {
    const int64_t step = step_of_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) dirs.emplace_back(step, entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
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

std::string save_training_checkpoint(
    const std::string& out_dir, int64_t step, const torch::nn::Module& model,
    torch::optim::AdamW& optimizer, const std::string& config_toml, uint64_t seed,
    const std::function<void(const std::string& dir)>& write_extra) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  const std::string name = fmt::format("step-{:08d}", step);
  const fs::path tmp = root / (".tmp-" + name), final_dir = root / name;
  reach::io::remove_tree(tmp);
  fs::create_directories(tmp);

  io::SafetensorsFile weights, moments;
  weights.metadata["format"] = "reach";
  for (const auto& p : model.named_parameters()) {
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
  write_text(tmp / "config.toml", config_toml);
  if (write_extra) write_extra(tmp.string());
  nlohmann::json state{{"format_version", kFormatVersion}, {"step", step}, {"seed", seed}};
  write_text(tmp / "state.json", state.dump(2) + "\n");
  fsync_dir(tmp);
  // A directory of this step already there (a resume past a corrupt one) is moved aside first,
  // so that a kill at any point leaves either it or the new one complete under the name.
  const fs::path replaced = root / (".tmp-replaced-" + name);
  if (fs::exists(final_dir)) {
    reach::io::remove_tree(replaced);
    fs::rename(final_dir, replaced);
  }
  fs::rename(tmp, final_dir);
  fsync_dir(root);
  reach::io::remove_tree(replaced);
  return final_dir.string();
}

std::string save_checkpoint(const std::string& out_dir, int64_t step, model::Gpt& model,
                            torch::optim::AdamW& optimizer, const TrainConfig& config,
                            const data::Tokenizer& tokenizer) {
  return save_training_checkpoint(out_dir, step, *model, optimizer, to_toml(config), config.seed,
                                  [&](const std::string& dir) { tokenizer.save(dir); });
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  const auto dirs = checkpoint_dirs(out_dir);
  if (dirs.empty()) return std::nullopt;
  return dirs.back().second.string();
}

int64_t read_checkpoint_step(const std::string& dir) {
  try {
    const auto state = nlohmann::json::parse(read_text(fs::path(dir) / "state.json"));
    if (state.at("format_version").get<int>() != kFormatVersion) {
      throw std::runtime_error("checkpoint '" + dir + "': unsupported format_version");
    }
    return state.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("checkpoint '" + dir + "': state.json is corrupt (" + e.what() + ")");
  }
}

void check_optimizer_state(const std::string& dir) {
  const fs::path moments = fs::path(dir) / "optimizer.safetensors";
  if (!fs::exists(moments))
    throw std::runtime_error("checkpoint file missing: '" + moments.string() + "'");
  try {
    io::read_safetensors(moments.string());
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + dir + "': " + e.what());
  }
}

std::string newest_loadable_checkpoint(const std::string& out_dir,
                                       const std::function<void(const std::string& dir)>& load,
                                       std::vector<std::string>& skipped,
                                       std::vector<std::string>* skipped_dirs) {
  const auto dirs = checkpoint_dirs(out_dir);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    const std::string dir = it->second.string();
    try {
      load(dir);
      return dir;
    } catch (const std::exception& e) {
      skipped.push_back(dir + ": " + e.what());
      if (skipped_dirs) skipped_dirs->push_back(dir);
    }
  }
  return "";
}

void remove_unloadable_checkpoints(const std::vector<std::string>& dirs) {
  for (const auto& d : dirs) {
    const fs::path dir(d);
    const fs::path doomed = dir.parent_path() / (".tmp-unloadable-" + dir.filename().string());
    reach::io::remove_tree(doomed);
    fs::rename(dir, doomed);
    reach::io::remove_tree(doomed);
  }
}

Checkpoint load_checkpoint(const std::string& dir) {
  const fs::path path(dir);
  if (!fs::is_directory(path)) {
    throw std::runtime_error("checkpoint '" + dir + "' is not a directory");
  }
  Checkpoint ckpt;
  ckpt.step = read_checkpoint_step(dir);
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

namespace reach::train {

CheckpointChoice newest_valid_checkpoint(const std::string& out_dir) {
  CheckpointChoice choice;
  choice.dir = newest_loadable_checkpoint(
      out_dir,
      [&](const std::string& dir) {
        choice.checkpoint = load_checkpoint(dir);
        // The optimizer state is read too, so that resuming from this choice cannot fail.
        check_optimizer_state(dir);
      },
      choice.skipped, &choice.skipped_dirs);
  if (choice.dir.empty()) choice.checkpoint = {};
  return choice;
}

CheckpointChoice choose_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / "state.json", ec) ||
      !fs::is_directory(fs::path(path) / "checkpoints", ec)) {
    return {path, load_checkpoint(path), {}, {}};
  }
  auto choice = newest_valid_checkpoint(path);
  if (choice.dir.empty()) {
    std::string why;
    for (const auto& s : choice.skipped) why += "\n  " + s;
    throw std::runtime_error("'" + path + "' holds no checkpoint that loads" +
                             (why.empty() ? std::string(" (checkpoints/ is empty)") : ":" + why));
  }
  return choice;
}

std::vector<std::string> remove_partial_checkpoints(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.path().filename().string().starts_with(".tmp-")) removed.push_back(entry.path());
  }
  for (const auto& p : removed) reach::io::remove_tree(p);
  return removed;
}

std::vector<std::string> remove_old_checkpoints(const std::string& out_dir, int64_t keep) {
  const auto dirs = checkpoint_dirs(out_dir);
  std::vector<std::string> removed;
  const auto excess = static_cast<int64_t>(dirs.size()) - keep;
  for (int64_t i = 0; i < excess; ++i) {
    const auto& dir = dirs[static_cast<size_t>(i)].second;
    if (fs::exists(dir / "keep")) continue;
    // Renamed first (atomic), so that a kill mid-removal leaves no half-deleted step-*
    // directory, only a .tmp-* one that the next start removes.
    const fs::path doomed = dir.parent_path() / (".tmp-removed-" + dir.filename().string());
    reach::io::remove_tree(doomed);
    fs::rename(dir, doomed);
    reach::io::remove_tree(doomed);
    removed.push_back(dir.string());
  }
  return removed;
}

}  // namespace reach::train
