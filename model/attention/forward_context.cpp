#include "model/attention/forward_context.hpp"

#include <stdexcept>
#include <utility>

namespace reach::model::attention {

void ForwardContext::publish(const std::string& name, torch::Tensor value) {
  shared_[name] = std::move(value);
}

const torch::Tensor& ForwardContext::read(const std::string& name) const {
  const auto it = shared_.find(name);
  if (it == shared_.end()) {
    throw std::logic_error("attention: no layer below published '" + name + "' in this forward");
  }
  return it->second;
}

}  // namespace reach::model::attention
