#include "train/local_launch.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>

namespace reach::train {
namespace {

std::atomic<int> g_forward_signal{0};
extern "C" void on_launcher_signal(int signal) { g_forward_signal = signal; }

// A TCP port nobody listens on now (the kernel picks it); rank 0 binds it moments later.
uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(error));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

struct Rank {
  pid_t pid = -1;
  int stderr_fd = -1;
  std::string pending;  // a line not finished yet
  std::optional<int> status;
};

void write_lines(int rank, std::string& pending, bool flush_all) {
  size_t start = 0;
  for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
    fmt::print(stderr, "[rank {}] {}\n", rank, std::string_view(pending).substr(start, nl - start));
  }
  pending.erase(0, start);
  if (flush_all && !pending.empty()) {
    fmt::print(stderr, "[rank {}] {}\n", rank, pending);
    pending.clear();
  }
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
  }
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

bool failed(int status) {
  return WIFSIGNALED(status) || (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 130);
}

}  // namespace

std::vector<std::string> command_line_without_nproc() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> all, out;
  for (size_t start = 0; start < raw.size();) {
    const size_t end = raw.find('\0', start);
    all.push_back(raw.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] == "--nproc") {
      ++i;  // and its value
    } else if (!all[i].starts_with("--nproc=")) {
      out.push_back(all[i]);
    }
  }
  return out;
}

int launch_local_ranks(int nproc, const std::vector<std::string>& arguments) {
  if (nproc < 1) throw std::invalid_argument(fmt::format("--nproc must be >= 1, got {}", nproc));
  if (const char* world = std::getenv("WORLD_SIZE")) {
    throw std::invalid_argument(fmt::format(
        "--nproc starts the ranks itself, but WORLD_SIZE={} is already set (a launcher such as "
        "torchrun started this process): use one or the other",
        world));
  }
  const char* addr_env = std::getenv("MASTER_ADDR");
  const char* port_env = std::getenv("MASTER_PORT");
  const std::string addr = addr_env ? addr_env : "127.0.0.1";
  const std::string port = port_env ? std::string(port_env) : std::to_string(free_port());

  std::vector<char*> argv;
  std::vector<std::string> args = arguments;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  auto previous_int = std::signal(SIGINT, on_launcher_signal);
  auto previous_term = std::signal(SIGTERM, on_launcher_signal);
  g_forward_signal = 0;
  std::vector<Rank> ranks(static_cast<size_t>(nproc));
  for (int r = 0; r < nproc; ++r) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    }
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
      ::dup2(fds[1], STDERR_FILENO);
      const std::string rank = std::to_string(r), size = std::to_string(nproc);
      ::setenv("RANK", rank.c_str(), 1);
      ::setenv("LOCAL_RANK", rank.c_str(), 1);
      ::setenv("WORLD_SIZE", size.c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", size.c_str(), 1);
      ::setenv("MASTER_ADDR", addr.c_str(), 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::execv("/proc/self/exe", argv.data());
      const std::string why = fmt::format("cannot run /proc/self/exe: {}\n", std::strerror(errno));
      [[maybe_unused]] const auto written = ::write(STDERR_FILENO, why.data(), why.size());
      ::_exit(127);
    }
    ::close(fds[1]);
    ranks[static_cast<size_t>(r)].pid = pid;
    ranks[static_cast<size_t>(r)].stderr_fd = fds[0];
  }

  using Clock = std::chrono::steady_clock;
  std::optional<int> first_failure;
  bool stopping = false;  // the others got SIGTERM; SIGKILL at kill_at
  Clock::time_point kill_at{};
  int running = nproc, open_pipes = nproc;
  const auto signal_running = [&](int signal) {
    for (auto& rank : ranks) {
      if (!rank.status) ::kill(rank.pid, signal);
    }
  };
  while (running > 0 || open_pipes > 0) {
    std::vector<pollfd> polled;
    std::vector<size_t> which;
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (ranks[r].stderr_fd >= 0) {
        polled.push_back({ranks[r].stderr_fd, POLLIN, 0});
        which.push_back(r);
      }
    }
    const int ready = ::poll(polled.data(), polled.size(), 100);
    for (size_t i = 0; ready > 0 && i < polled.size(); ++i) {
      if (!(polled[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Rank& rank = ranks[which[i]];
      char buffer[4096];
      const ssize_t got = ::read(rank.stderr_fd, buffer, sizeof(buffer));
      if (got > 0) {
        rank.pending.append(buffer, static_cast<size_t>(got));
        write_lines(static_cast<int>(which[i]), rank.pending, false);
      } else if (got == 0 || errno != EINTR) {
        write_lines(static_cast<int>(which[i]), rank.pending, true);
        ::close(rank.stderr_fd);
        rank.stderr_fd = -1;
        --open_pipes;
      }
    }
    if (const int signal = g_forward_signal.exchange(0); signal != 0) signal_running(signal);
    for (int status = 0;;) {
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      for (size_t r = 0; r < ranks.size(); ++r) {
        if (ranks[r].pid != pid) continue;
        ranks[r].status = status;
        --running;
        if (failed(status) && !first_failure) {
          first_failure = static_cast<int>(r);
          if (running > 0) {
            fmt::print(stderr, "reach: rank {} (pid {}) {}; stopping the other ranks\n", r, pid,
                       describe(status));
            signal_running(SIGTERM);
            stopping = true;
            kill_at = Clock::now() + std::chrono::seconds(kStopGraceSeconds);
          }
        }
      }
    }
    if (stopping && running > 0 && Clock::now() >= kill_at) {
      signal_running(SIGKILL);
      stopping = false;
    }
  }
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  if (first_failure) {
    const auto& rank = ranks[static_cast<size_t>(*first_failure)];
    fmt::print(stderr, "reach: error: rank {} of {} (pid {}) {}\n", *first_failure, nproc, rank.pid,
               describe(*rank.status));
    return 1;
  }
  for (const auto& rank : ranks) {
    if (WEXITSTATUS(*rank.status) == 130) return 130;
  }
  return 0;
}

}  // namespace reach::train
