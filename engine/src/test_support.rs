//! Helpers for the engine's tests: scratch directories on a real filesystem
//! (O_DIRECT is silently off on tmpfs) and a glommio executor to run in.

use std::future::Future;
use std::path::Path;

/// A fresh directory under the workspace's `target/test-tmp`, removed on drop.
pub(crate) fn scratch_dir() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-tmp");
    std::fs::create_dir_all(&root).expect("create target/test-tmp");
    tempfile::Builder::new()
        .prefix("engine-")
        .tempdir_in(root)
        .expect("create a scratch directory")
}

/// Runs `task` to completion on a new glommio executor thread.
pub(crate) fn run_in_executor<F, Fut, T>(task: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(task)
        .expect("spawn a glommio executor")
        .join()
        .expect("the glommio executor ran to completion")
}
