//! The `flotilla` binary, built inside this package so integration tests can
//! find it through `CARGO_BIN_EXE_flotilla-under-test`.

fn main() -> std::process::ExitCode {
    kvserver::cli::main()
}
