// Sub-command registration for the `reach` CLI: each command file adds itself to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace reach::cli {

void add_pattern_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_tasks_command(CLI::App& app);
void add_experiment_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_budget_study_command(CLI::App& app);
void add_bench_entmax_command(CLI::App& app);     // after add_bench_command
void add_bench_decode_command(CLI::App& app);     // after add_bench_command
void add_bench_inference_command(CLI::App& app);  // after add_bench_command

}  // namespace reach::cli
