//! The `flotilla` binary: `server`, `playground`, `ctl` and `bench`.

/// mimalloc: the server allocates many small, short-lived buffers across
/// threads (gRPC frames, Raft entries); glibc malloc spent a measurable share
/// of the leader's CPU consolidating and unlinking chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kvserver::cli::main()
}
