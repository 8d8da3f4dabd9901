// How many CPU threads a run uses. LibTorch's set_num_threads sets OpenMP's (and MKL's) thread
// count but not OpenBLAS's, which keeps a pool of one thread per core that spins
// (sched_yield) between matrix products; with `run.threads = 1` on a shared machine those idle
// spinners took a third of the cores' time from the run (docs/chunk_attention.md, "Training
// speed on the CPU").
#pragma once

namespace reach::train {

// Sets the intra-op threads of LibTorch and, when OpenBLAS is loaded, of OpenBLAS to `threads`
// (<= 0: every hardware thread). Returns the count set.
int set_cpu_threads(int threads);

// OpenBLAS's thread count, or 0 when this process has no OpenBLAS.
int openblas_threads();

}  // namespace reach::train
