#include "tests/kernels/harness.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace reach::harness {

std::vector<double> Rng::normal(size_t count, double scale) {
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> x(count);
  for (auto& e : x) {
    do {
      e = dist(engine_);
    } while (e == 0.0);
  }
  return x;
}

std::vector<double> Rng::uniform(size_t count, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> x(count);
  for (auto& e : x) {
    do {
      e = dist(engine_);
    } while (e == 0.0);
  }
  return x;
}

uint64_t seed_of(const std::string& name) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a, 64 bit
  for (const unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (const double e : x) m = std::max(m, std::abs(e));
  return m;
}

namespace {
void require_same_size(size_t got, size_t want) {
  if (got != want) {
    throw std::invalid_argument("compared vectors differ in size: " + std::to_string(got) + " vs " +
                                std::to_string(want));
  }
}
}  // namespace

double max_abs_error(const std::vector<double>& got, const std::vector<double>& want) {
  require_same_size(got.size(), want.size());
  double err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(got[i] - want[i]);
    if (std::isnan(d)) return d;
    err = std::max(err, d);
  }
  return err;
}

double max_rel_error(const std::vector<double>& got, const std::vector<double>& want) {
  return max_abs_error(got, want) / std::max(max_abs(want), 1e-300);
}

double rel_l2_error(const std::vector<double>& got, const std::vector<double>& want) {
  require_same_size(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double round_bf16(double x) {
  const float f = static_cast<float>(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even (finite inputs)
  u &= 0xFFFF0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

std::vector<double> round_bf16(const std::vector<double>& x) {
  std::vector<double> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = round_bf16(x[i]);
  return r;
}

double bf16_rounding_error(const std::vector<double>& ref) {
  return rel_l2_error(round_bf16(ref), ref);
}

std::vector<float> to_float(const std::vector<double>& x) {
  return std::vector<float>(x.begin(), x.end());
}

double Bf16Rule::bound(const std::vector<double>& ref) const {
  return factor * bf16_rounding_error(ref) + slack;
}

FdResult finite_difference_error(const std::vector<size_t>& indices,
                                 const std::function<double(size_t)>& analytic,
                                 const std::function<double(size_t, double)>& loss_at, double h) {
  FdResult r;
  for (const size_t i : indices) {
    const double numeric = (loss_at(i, h) - loss_at(i, -h)) / (2 * h);
    const double a = analytic(i);
    const double scale = std::max(1.0, std::min(std::abs(a), std::abs(numeric)));
    const double e = std::abs(a - numeric) / scale;
    if (!(e <= r.error)) {  // also takes a NaN
      r.error = e;
      r.worst = i;
      r.analytic = a;
      r.numeric = numeric;
      if (std::isnan(e)) break;
    }
  }
  return r;
}

FdResult finite_difference_error(std::vector<double>& x, const std::vector<double>& analytic,
                                 const std::function<double()>& loss,
                                 const std::vector<size_t>& indices, double h) {
  require_same_size(analytic.size(), x.size());
  std::vector<size_t> all;
  if (indices.empty()) {
    all.resize(x.size());
    std::iota(all.begin(), all.end(), size_t{0});
  }
  return finite_difference_error(
      indices.empty() ? all : indices, [&](size_t i) { return analytic[i]; },
      [&](size_t i, double delta) {
        const double saved = x[i];
        x[i] = saved + delta;
        const double l = loss();
        x[i] = saved;
        return l;
      },
      h);
}

std::vector<size_t> sample_indices(size_t size, size_t count, std::mt19937_64& rng) {
  std::vector<size_t> out;
  if (count >= size) {
    out.resize(size);
    std::iota(out.begin(), out.end(), size_t{0});
    return out;
  }
  std::uniform_int_distribution<size_t> pick(0, size - 1);
  for (size_t t = 0; t < count; ++t) out.push_back(pick(rng));
  return out;
}

void Report::lt(const std::string& what, double error, double bound) {
  checks_.push_back({what, error, bound});
}

void Report::max_rel(const std::string& what, const std::vector<double>& got,
                     const std::vector<double>& want, double bound) {
  lt(what + " max-rel", max_rel_error(got, want), bound);
}

void Report::max_scaled(const std::string& what, const std::vector<double>& got,
                        const std::vector<double>& want, double bound) {
  lt(what + " max-err/max(1,|ref|)", max_abs_error(got, want) / std::max(1.0, max_abs(want)),
     bound);
}

void Report::max_diff(const std::string& what, const std::vector<double>& got,
                      const std::vector<double>& want, double bound) {
  lt(what + " max-abs", max_abs_error(got, want), bound);
}

void Report::rel_l2(const std::string& what, const std::vector<double>& got,
                    const std::vector<double>& want, double bound) {
  lt(what + " rel-L2", rel_l2_error(got, want), bound);
}

void Report::bf16(const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& ref, const Bf16Rule& rule) {
  lt(what + " rel-L2 (bf16 rule)", rel_l2_error(got, ref), rule.bound(ref));
}

void Report::fd(const std::string& what, const FdResult& result, double bound) {
  std::ostringstream s;
  s << what << " vs finite differences (worst at " << result.worst << ": " << result.analytic
    << " vs " << result.numeric << ")";
  lt(s.str(), result.error, bound);
}

void Report::fail(const std::string& message) { failures_.push_back(message); }

bool Report::passed() const {
  return failures_.empty() &&
         std::all_of(checks_.begin(), checks_.end(), [](const Check& c) { return c.passed(); });
}

bool OpCase::needs_gpu() const {
  return backend.find("cuda") != std::string::npos || op.find("cuda") != std::string::npos;
}

Registry& Registry::instance() {
  static Registry registry;
  return registry;
}

void Registry::add(OpCase c) {
  for (const auto* field : {&c.op, &c.backend, &c.dtype, &c.shape, &c.check}) {
    if (field->empty()) throw std::logic_error("op case with an empty field: " + c.name());
  }
  if (!c.run) throw std::logic_error("op case without a run function: " + c.name());
  for (const auto& other : cases_) {
    if (other.name() == c.name()) throw std::logic_error("duplicate op case: " + c.name());
  }
  cases_.push_back(std::move(c));
}

Report Registry::run(const OpCase& c) {
  Report report;
  try {
    c.run(report);
  } catch (const std::exception& e) {
    report.fail(std::string("exception: ") + e.what());
  }
  return report;
}

std::string shape_part(const std::string& key, double value) {
  std::ostringstream s;
  s << key << value;
  std::string out = s.str();
  std::replace(out.begin(), out.end(), '.', 'p');  // gtest names: no '.'
  std::replace(out.begin(), out.end(), '-', 'm');
  return out;
}

}  // namespace reach::harness
