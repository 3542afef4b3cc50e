// Entry point: argv -> cli, nothing else.
#include "cli/cli.hh"

int main(int argc, char** argv) {
    return runewarp::cli::run(argc, argv);
}
