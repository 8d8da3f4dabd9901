// Data-parallel training over c10d's Gloo: several CPU processes of `reach train` against one
// process, a rank killed mid-run and resumed, and the bad inputs of a world (--nproc, the
// environment variables, ranks that disagree). The multi-process cases run the reach binary.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/remove_tree.hpp"
#include "train/gradient_buckets.hpp"
#include "train/local_launch.hpp"
#include "train/process_group.hpp"
#include "train/rank_agreement.hpp"
#include "train/world.hpp"

extern char** environ;

namespace reach::train {
namespace {
namespace fs = std::filesystem;

// A micro model (33k parameters), global batch 4 x 32 tokens, one thread per process.
constexpr const char* kConfig = R"([run]
threads = 1
[model]
preset = "micro"
attention = "fibonacci"
schedule = "stagger"
[data]
seq_len = 32
batch = 4
[train]
device = "cpu"  # CPU ranks over Gloo, also on a GPU machine
warmup = 5
eval_every = 1000
eval_tokens = 64
)";

#define SKIP_WITHOUT_GLOO()                                                    \
  do {                                                                         \
    if (const auto why = collectives_unavailable(torch::kCPU); !why.empty()) { \
      GTEST_SKIP() << why;                                                     \
    }                                                                          \
  } while (0)

// The corpus: REACH_TEST_CORPUS when set (a folder; relative to the source tree, as ctest runs
// tests in the build tree), else Debian's KJV where its packages are installed, else the
// source tree's build-deps/kjv (scripts/stage-gpu-deps: the same 66 books as a folder corpus,
// what the GPU machine has, which lacks the Debian packages). Empty: the config's default.
std::string test_corpus() {
  if (const char* corpus = std::getenv("REACH_TEST_CORPUS"); corpus != nullptr && *corpus) {
    const fs::path path(corpus);
    return (path.is_absolute() ? path : fs::path(REACH_SOURCE_DIR) / path).string();
  }
  if (fs::exists("/usr/bin/bible")) return {};
  const fs::path staged = fs::path(REACH_SOURCE_DIR) / "build-deps" / "kjv";
  return fs::is_directory(staged) ? staged.string() : std::string();
}

fs::path work_dir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / ("reach_data_parallel_" + name);
  reach::io::remove_tree(dir);
  fs::create_directories(dir);
  std::string config = kConfig;
  if (const auto corpus = test_corpus(); !corpus.empty()) {
    config.insert(config.find("[data]\n") + 7, "corpus = \"" + corpus + "\"\n");
  }
  std::ofstream(dir / "config.toml") << config;
  return dir;
}

// Starts reach with `args`, the environment plus `env`, stderr to `log`; returns its pid.
pid_t start_reach(const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env, const fs::path& log) {
  std::vector<std::string> argv_text{REACH_BINARY};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    if (!env.contains(name) && name != "WORLD_SIZE" && name != "RANK") env_text.push_back(entry);
  }
  for (const auto& [k, v] : env) env_text.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("cannot start " + std::string(REACH_BINARY));
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct Finished {
  int status;
  std::string stderr_text;
};
Finished run_reach(const fs::path& dir, const std::vector<std::string>& args,
                   const std::map<std::string, std::string>& env = {}) {
  const fs::path log = dir / "stderr.log";
  const int status = wait_exit(start_reach(args, env, log));
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  return {status, text.str()};
}

std::vector<std::string> train_args(const fs::path& dir, const std::string& out, int64_t steps,
                                    int64_t checkpoint_every) {
  return {"train", (dir / "config.toml").string(),
          "--set", "run.out_dir=" + (dir / out).string(),
          "--set", "train.steps=" + std::to_string(steps),
          "--set", "train.checkpoint_every=" + std::to_string(checkpoint_every)};
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::vector<nlohmann::json> metrics(const fs::path& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(a);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length);
  close(fd);
  return ntohs(a.sin_port);
}

// The tolerance of two runs that see the same tokens and differ only in the order of float32
// sums (two half-batch means averaged against one mean, gradients summed over ranks): each sum
// rounds at ~6e-8 relative, and 20 steps of training carry such differences forward; measured,
// the largest relative loss difference over the 20 steps was 2.0e-7 (one bucket and 13
// buckets alike). 1e-5 leaves 50x of headroom, while the mistakes this test is for (ranks
// drawing the same rows, summed instead of averaged gradients, a bucket left out) move the
// loss by more than 1e-3 within a few steps.
constexpr double kLossTolerance = 1e-5;

TEST(DataParallel, TwoGlooRanksFollowTheOneProcessLossCurve) {
  SKIP_WITHOUT_GLOO();
  const auto dir = work_dir("curve");
  ASSERT_EQ(run_reach(dir, train_args(dir, "one", 20, 10)).status, 0);
  const auto one = metrics(dir / "one");
  ASSERT_EQ(one.size(), 20u);
  // One bucket (the default 25 MiB holds the whole model), then 13 of 10 KiB each.
  for (const std::string bucket_mb : {"25", "0.01"}) {
    const std::string out = "two_" + bucket_mb;
    const auto r = run_reach(
        dir, with(train_args(dir, out, 20, 10), {"--nproc", "2", "--bucket-mb", bucket_mb}));
    ASSERT_EQ(r.status, 0) << r.stderr_text;
    EXPECT_NE(r.stderr_text.find("data-parallel: 2 ranks over Gloo, global batch 4 = 2 per rank"),
              std::string::npos)
        << r.stderr_text;
    const auto two = metrics(dir / out);
    ASSERT_EQ(two.size(), one.size());
    for (size_t i = 0; i < one.size(); ++i) {
      const double a = one[i]["loss"].get<double>(), b = two[i]["loss"].get<double>();
      EXPECT_LE(std::abs(a - b), kLossTolerance * std::abs(a))
          << "step " << i + 1 << " buckets of " << bucket_mb << " MiB: " << a << " vs " << b;
    }
    // Only rank 0 writes: one metrics file, one set of checkpoints.
    EXPECT_TRUE(fs::exists(dir / out / "checkpoints/step-00000020/model.safetensors"));
  }
}

// A world of one (WORLD_SIZE=1 with MASTER_ADDR, as `torchrun --nproc-per-node 1` starts it)
// runs a real process group whose all-reduce is the identity: the same loss curve as one process
// alone, to the bit (the one rank's gradient summed over one rank and divided by 1).
TEST(DataParallel, AWorldOfOneRunsAProcessGroupAndTrainsExactlyAsOneProcess) {
  SKIP_WITHOUT_GLOO();
  const auto dir = work_dir("world_of_one");
  ASSERT_EQ(run_reach(dir, train_args(dir, "alone", 8, 100)).status, 0);
  const auto r = run_reach(dir, train_args(dir, "group", 8, 100),
                           {{"RANK", "0"},
                            {"WORLD_SIZE", "1"},
                            {"MASTER_ADDR", "127.0.0.1"},
                            {"MASTER_PORT", std::to_string(free_port())}});
  ASSERT_EQ(r.status, 0) << r.stderr_text;
  EXPECT_NE(r.stderr_text.find("data-parallel: 1 ranks over Gloo"), std::string::npos)
      << r.stderr_text;
  const auto alone = metrics(dir / "alone"), group = metrics(dir / "group");
  ASSERT_EQ(alone.size(), 8u);
  ASSERT_EQ(group.size(), alone.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_EQ(alone[i]["loss"].get<double>(), group[i]["loss"].get<double>()) << "step " << i + 1;
  }
}

TEST(DataParallel, BucketsCoverEveryParameterAndLeaveUnusedOnesAlone) {
  SKIP_WITHOUT_GLOO();
  // A world of one over Gloo: the mean over the ranks is the gradient itself, exactly.
  World world;
  world.master_addr = "127.0.0.1";
  world.master_port = free_port();
  ProcessGroup group(world);
  group.start_collectives(torch::kCPU);
  torch::manual_seed(0);
  std::vector<torch::Tensor> params, weights;
  for (int64_t n : {1000, 3000, 10, 2560, 2561, 7}) {
    params.push_back(torch::randn({n}).requires_grad_());
    weights.push_back(torch::randn({n}));
  }
  // Buckets of 10240 bytes = 2560 floats, filled in reverse order: [7] [2561] [2560] [10]
  // [3000] [1000] (a parameter larger than a bucket gets one of its own).
  GradientBuckets buckets(group, params, 10240);
  EXPECT_EQ(buckets.bucket_count(), 6u);
  for (int round = 0; round < 2; ++round) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    auto loss = torch::zeros({});
    for (size_t i = 0; i < params.size(); ++i) {
      if (i != 2) loss = loss + (params[i] * weights[i] * (round + 1)).sum();  // 2 unused
    }
    loss.backward();
    buckets.finish();
    for (size_t i = 0; i < params.size(); ++i) {
      if (i == 2) {
        EXPECT_FALSE(params[i].grad().defined()) << "an unused parameter got a gradient";
      } else {
        EXPECT_TRUE(torch::equal(params[i].grad(), weights[i] * (round + 1))) << "parameter " << i;
      }
    }
  }
}

TEST(DataParallel, KillingOneRankStopsTheOthersAndResumeContinuesExactly) {
  SKIP_WITHOUT_GLOO();
  const auto dir = work_dir("kill");
  const auto args = with(train_args(dir, "straight", 200, 10), {"--nproc", "2"});
  const auto straight = run_reach(dir, args);
  ASSERT_EQ(straight.status, 0) << straight.stderr_text;

  const auto killed_args = with(train_args(dir, "killed", 200, 10), {"--nproc", "2"});
  const pid_t launcher = start_reach(killed_args, {}, dir / "killed.log");
  // Rank 1 is the launcher's child whose environment says RANK=1.
  const auto rank1 = [&]() -> pid_t {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream stat(entry.path() / "stat");
      std::string pid, comm, state;
      pid_t parent = 0;
      stat >> pid >> comm >> state >> parent;
      if (parent != launcher) continue;
      std::ifstream env(entry.path() / "environ", std::ios::binary);
      for (std::string var; std::getline(env, var, '\0');) {
        if (var == "RANK=1") return std::stoi(name);
      }
    }
    return -1;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir / "killed/checkpoints/step-00000020") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const pid_t victim = rank1();
  ASSERT_GT(victim, 0) << "rank 1 not found";
  kill(victim, SIGKILL);
  EXPECT_EQ(wait_exit(launcher), 1);
  std::ifstream log(dir / "killed.log");
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_NE(
      text.str().find("rank 1 of 2 (pid " + std::to_string(victim) + ") was killed by signal 9"),
      std::string::npos)
      << text.str();
  ASSERT_FALSE(fs::exists(dir / "killed/checkpoints/step-00000200"))
      << "the run finished before the kill: the test proves nothing";

  const auto resumed = run_reach(dir, with(killed_args, {"--resume"}));
  ASSERT_EQ(resumed.status, 0) << resumed.stderr_text;
  EXPECT_NE(resumed.stderr_text.find("resuming from step"), std::string::npos);
  const auto a = metrics(dir / "straight"), b = metrics(dir / "killed");
  ASSERT_EQ(a.size(), 200u);
  ASSERT_EQ(b.size(), 200u);
  for (size_t i = 0; i < a.size(); ++i) {
    // The same world size gives the same sums in the same order: bit for bit.
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << i + 1;
  }
}

TEST(DataParallel, BadLaunchesGiveClearErrors) {
  const auto dir = work_dir("bad");
  auto r = run_reach(dir, with(train_args(dir, "out", 2, 2), {"--nproc", "0"}));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.stderr_text.find("--nproc must be >= 1, got 0"), std::string::npos) << r.stderr_text;

  r = run_reach(dir, with(train_args(dir, "out", 2, 2), {"--nproc", "2"}), {{"WORLD_SIZE", "2"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.stderr_text.find("WORLD_SIZE=2 is already set"), std::string::npos) << r.stderr_text;

  r = run_reach(dir, train_args(dir, "out", 2, 2), {{"WORLD_SIZE", "2"}, {"RANK", "2"}});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.stderr_text.find("RANK=2 but WORLD_SIZE=2 (ranks are 0..1)"), std::string::npos)
      << r.stderr_text;

  SKIP_WITHOUT_GLOO();
  r = run_reach(dir, with(train_args(dir, "out", 2, 2), {"--nproc", "3"}));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.stderr_text.find("data.batch = 4 does not split evenly over WORLD_SIZE = 3"),
            std::string::npos)
      << r.stderr_text;
}

// Two ranks started by hand, torchrun-style; rank 1 gets `rank1_extra` arguments and
// environment. Returns both ranks' stderr.
std::pair<Finished, Finished> two_ranks(const fs::path& dir,
                                        const std::vector<std::string>& rank1_extra,
                                        const std::map<std::string, std::string>& rank1_env) {
  const std::string port = std::to_string(free_port());
  const auto args = train_args(dir, "pair", 4, 4);
  std::map<std::string, std::string> env0{
      {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}};
  auto env1 = env0;
  env1["RANK"] = "1";
  for (const auto& [k, v] : rank1_env) env1[k] = v;
  const pid_t p0 = start_reach(args, env0, dir / "rank0.log");
  const pid_t p1 = start_reach(with(args, rank1_extra), env1, dir / "rank1.log");
  const auto read = [](const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  const int s0 = wait_exit(p0), s1 = wait_exit(p1);
  return {{s0, read(dir / "rank0.log")}, {s1, read(dir / "rank1.log")}};
}

TEST(DataParallel, RanksThatDisagreeStopNamingTheDifference) {
  SKIP_WITHOUT_GLOO();
  const auto dir = work_dir("disagree");
  {
    const auto [r0, r1] = two_ranks(dir, {}, {{"WORLD_SIZE", "3"}});
    EXPECT_EQ(r0.status, 1);
    EXPECT_EQ(r1.status, 1);
    for (const auto& r : {r0, r1}) {
      EXPECT_NE(r.stderr_text.find("rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2"),
                std::string::npos)
          << r.stderr_text;
    }
  }
  {
    const auto [r0, r1] = two_ranks(dir, {"--set", "model.layers=3"}, {});
    EXPECT_EQ(r0.status, 1);
    EXPECT_EQ(r1.status, 1);
    for (const auto& r : {r0, r1}) {
      EXPECT_NE(r.stderr_text.find("rank 1's config differs from rank 0's"), std::string::npos)
          << r.stderr_text;
      EXPECT_NE(r.stderr_text.find("key 'model.layers' is 3 on rank 1 but 2 on rank 0"),
                std::string::npos)
          << r.stderr_text;
    }
    EXPECT_FALSE(fs::exists(dir / "pair/checkpoints")) << "a rank trained";
  }
  {
    // Rank 0 refuses the run directory (it holds a run): rank 1 stops with rank 0's reason.
    fs::create_directories(dir / "pair/checkpoints/step-00000001");
    std::ofstream(dir / "pair/metrics.jsonl") << "{}\n";
    const auto [r0, r1] = two_ranks(dir, {}, {});
    EXPECT_EQ(r0.status, 1);
    EXPECT_EQ(r1.status, 1);
    EXPECT_NE(r1.stderr_text.find("rank 0 could not start: run.out_dir"), std::string::npos)
        << r1.stderr_text;
  }
}

TEST(DataParallel, WorldFromEnvironmentNamesTheBadVariable) {
  const auto world = [](std::map<std::string, std::string> env) {
    return world_from_environment([env](const std::string& name) -> std::optional<std::string> {
      const auto it = env.find(name);
      return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
    });
  };
  EXPECT_FALSE(world({}).distributed());
  EXPECT_FALSE(world({{"RANK", "0"}, {"WORLD_SIZE", "1"}}).distributed());
  // torchrun --nproc-per-node 1: a world of one with a process group.
  const auto one =
      world({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1234"}});
  EXPECT_TRUE(one.distributed());
  EXPECT_EQ(one.size, 1);
  const auto w = world({{"RANK", "3"},
                        {"WORLD_SIZE", "4"},
                        {"LOCAL_RANK", "1"},
                        {"MASTER_ADDR", "10.0.0.1"},
                        {"MASTER_PORT", "29500"},
                        {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                        {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_TRUE(w.launcher_serves_store);  // torchrun's agent serves the store
  EXPECT_EQ(w.attempt, "2");
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.size, 4);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.master_addr, "10.0.0.1");
  EXPECT_EQ(w.master_port, 29500);
  const auto error = [&](std::map<std::string, std::string> env) {
    try {
      world(env);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::map<std::string, std::string> base{
      {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1234"}};
  auto with_env = [&](const std::string& k, const std::string& v) {
    auto e = base;
    if (v.empty()) {
      e.erase(k);
    } else {
      e[k] = v;
    }
    return e;
  };
  EXPECT_NE(error({{"RANK", "1"}}).find("RANK is set but WORLD_SIZE is not"), std::string::npos);
  EXPECT_NE(error(with_env("WORLD_SIZE", "two")).find("WORLD_SIZE='two' is not an integer"),
            std::string::npos);
  EXPECT_NE(error(with_env("WORLD_SIZE", "0")).find("WORLD_SIZE=0 must be in 1.."),
            std::string::npos);
  EXPECT_NE(error(with_env("RANK", "")).find("RANK is not set"), std::string::npos);
  EXPECT_NE(error(with_env("RANK", "-1")).find("RANK=-1 must be in 0.."), std::string::npos);
  EXPECT_NE(error(with_env("MASTER_ADDR", "")).find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(error(with_env("MASTER_PORT", "")).find("MASTER_PORT is not set"), std::string::npos);
  EXPECT_NE(error(with_env("MASTER_PORT", "70000")).find("MASTER_PORT=70000 must be in 1..65535"),
            std::string::npos);
  EXPECT_NE(error({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "h"}})
                .find("WORLD_SIZE=1 but MASTER_PORT is not set"),
            std::string::npos);
}

TEST(DataParallel, StartDifferenceNamesWhatDiffers) {
  RankStart a, b;
  a.world_size = b.world_size = 2;
  b.rank = 1;
  a.config_toml = b.config_toml = shared_config("[run]\nthreads = 4\nseed = 1\n");
  EXPECT_EQ(start_difference(a, b), "");
  b.config_toml = shared_config("[run]\nthreads = 1\nseed = 1\n");  // threads are per machine
  EXPECT_EQ(start_difference(a, b), "");
  b.config_toml = shared_config("[run]\nthreads = 1\nseed = 2\n");
  EXPECT_NE(start_difference(a, b).find("key 'run.seed' is 2 on rank 1 but 1 on rank 0"),
            std::string::npos)
      << start_difference(a, b);
  b.config_toml = a.config_toml;
  b.resume = true;
  EXPECT_EQ(start_difference(a, b), "rank 1 was started with --resume but rank 0 without it");
  a.resume = true;
  a.checkpoint_step = 20;
  a.checkpoint = "run/checkpoints/step-00000020";
  b.checkpoint_step = 10;
  b.checkpoint = "run/checkpoints/step-00000010";
  EXPECT_EQ(start_difference(a, b),
            "rank 1 starts from checkpoint step 10 (run/checkpoints/step-00000010) but rank 0 "
            "from step 20 (run/checkpoints/step-00000020)");
  b.world_size = 3;
  EXPECT_EQ(start_difference(a, b), "rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2");
}

}  // namespace
}  // namespace reach::train
