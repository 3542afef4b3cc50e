// Entry point of every Criterion test binary: a run that skipped tests and failed none exits 77,
// which meson reports as SKIP; Criterion's own main exits 0 then, and a skip would read as OK.
#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include <cstddef>

namespace {

std::size_t g_skipped = 0;

}  // namespace

// Counts the tests that ran and called cr_skip_test. The global statistics would also count the
// tests a --filter left out, which are no skip.
ReportHook(POST_TEST)(struct criterion_test_stats* stats) {
    if (stats->test_status == CR_STATUS_SKIPPED) ++g_skipped;
}

int main(int argc, char* argv[]) {
    struct criterion_test_set* tests = criterion_initialize();
    int status = 0;
    // false from criterion_handle_args: --help, --version or --list was handled; exit 0.
    if (criterion_handle_args(argc, argv, true) != 0) {
        const bool all_passed = criterion_run_all_tests(tests) != 0;
        status = !all_passed ? 1 : g_skipped > 0 ? 77 : 0;
    }
    criterion_finalize(tests);
    return status;
}
