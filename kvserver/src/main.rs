//! The `flotilla` binary: `server`, `playground`, `ctl` and `bench`.

fn main() -> std::process::ExitCode {
    kvserver::cli::main()
}
