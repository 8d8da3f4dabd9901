// reach: sparse-attention language models that keep working beyond their training length.
#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <exception>

#include "cli/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"reach: Fibonacci-dilated and other sparse attention for long-context LMs"};
  app.require_subcommand(1);
  reach::cli::add_pattern_command(app);
  reach::cli::add_bench_command(app);
  reach::cli::add_bench_entmax_command(app);
  reach::cli::add_bench_decode_command(app);
  reach::cli::add_bench_inference_command(app);
  reach::cli::add_train_command(app);
  reach::cli::add_eval_command(app);
  reach::cli::add_info_command(app);
  reach::cli::add_demo_command(app);
  reach::cli::add_tokenizer_command(app);
  reach::cli::add_tasks_command(app);
  reach::cli::add_experiment_command(app);
  reach::cli::add_generate_command(app);
  reach::cli::add_budget_study_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const c10::Error& e) {
    fmt::print(stderr, "reach: error: {}\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "reach: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
