//! Per-node log files: where a node's stdout and stderr go, and the tails a
//! failing test prints.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Opens a node's log for appending (restarts keep the earlier runs' lines)
/// and writes a banner separating this run from the previous ones.
pub(super) fn open_for_run(path: &Path, banner: &str) -> io::Result<File> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "===== {banner} =====")?;
    Ok(file)
}

/// The last `lines` lines of a log, or a note saying why there are none.
pub(super) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("<cannot read {}: {err}>", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_across_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.log");
        let mut first = open_for_run(&path, "run 1").expect("open");
        writeln!(first, "a\nb").expect("write");
        let mut second = open_for_run(&path, "run 2").expect("open");
        writeln!(second, "c").expect("write");
        assert_eq!(tail(&path, 3), "b\n===== run 2 =====\nc");
        assert!(tail(&dir.path().join("missing.log"), 3).starts_with("<cannot read"));
    }
}
