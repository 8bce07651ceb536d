//! The `ferry` command line, built inside the test package so the end-to-end
//! tests can run the real binary (`CARGO_BIN_EXE_ferry-cli`): the same code as
//! the host's `ferry` (`ferry::cli::run`).

fn main() -> std::process::ExitCode {
    ferry::cli::run()
}
