//! A run's report directory, `<root>/<UTC timestamp>-<workload>-<seed>/`:
//!
//! | file | content |
//! | --- | --- |
//! | `seed` | the seed, to replay the schedule |
//! | `run.json` | the run's options |
//! | `schedule.json` | the planned fault windows |
//! | `history.jsonl` | every operation, one JSON object per line |
//! | `nemesis.jsonl` | what the nemesis did, with times on the history's clock |
//! | `final-read.json` | what the final reads found |
//! | `verdict.json`, `verdict.txt` | every check's result |
//! | `plot.png` | throughput and latency, fault windows shaded |
//! | `logs/` | the nodes' logs |
//! | `data/` | the nodes' data directories (removed when the run is valid) |

mod history_json;
pub mod plot;
pub mod timestamp;
pub mod verdict;

use crate::check::FinalRead;
use crate::nemesis::events::NemesisEvent;
use crate::Error;
use flotilla_tests::history::History;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Attempts at a unique directory name before giving up.
const NAME_ATTEMPTS_MAX: u32 = 100;

#[derive(Debug)]
pub struct ReportDir {
    path: PathBuf,
}

impl ReportDir {
    /// Creates a fresh directory for a run under `root`.
    pub fn create(root: &Path, workload: &str, seed: u64) -> Result<ReportDir, Error> {
        std::fs::create_dir_all(root).map_err(Error::io(format!("creating {}", root.display())))?;
        let stem = format!(
            "{}-{workload}-{seed}",
            timestamp::compact_utc(std::time::SystemTime::now())
        );
        for attempt in 1..=NAME_ATTEMPTS_MAX {
            let name = if attempt == 1 {
                stem.clone()
            } else {
                format!("{stem}-{attempt}")
            };
            let path = root.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ReportDir { path }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(Error::io(format!("creating {}", path.display()))(err)),
            }
        }
        Err(Error::Config(format!(
            "no free report directory name like {stem} under {}",
            root.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the nodes' data directories go.
    pub fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    /// Where the nodes' logs go (created).
    pub fn logs_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.path.join("logs");
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    pub fn write_text(&self, name: &str, text: &str) -> Result<(), Error> {
        let path = self.path.join(name);
        std::fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))
    }

    pub fn write_json<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        self.write_text(name, &text)
    }

    /// `history.jsonl`.
    pub fn write_history(&self, history: &History) -> Result<(), Error> {
        self.write_lines(
            "history.jsonl",
            history
                .operations
                .iter()
                .enumerate()
                .map(|(index, op)| history_json::line(index, op)),
        )
    }

    /// `nemesis.jsonl`.
    pub fn write_events(&self, events: &[NemesisEvent]) -> Result<(), Error> {
        self.write_lines("nemesis.jsonl", events.iter().map(serde_json::to_string))
    }

    /// `final-read.json`: key → value, as escaped ASCII.
    pub fn write_final_read(&self, final_read: &FinalRead) -> Result<(), Error> {
        let shown: std::collections::BTreeMap<String, String> = final_read
            .iter()
            .map(|(key, value)| {
                (
                    key.escape_ascii().to_string(),
                    value.escape_ascii().to_string(),
                )
            })
            .collect();
        self.write_json("final-read.json", &shown)
    }

    /// `verdict.json` and `verdict.txt`.
    pub fn write_verdict(&self, verdict: &verdict::Verdict) -> Result<(), Error> {
        self.write_json("verdict.json", verdict)?;
        self.write_text("verdict.txt", &verdict.text())
    }

    /// `plot.png`.
    pub fn plot(
        &self,
        history: &History,
        events: &[NemesisEvent],
        end_ns: u64,
    ) -> Result<(), Error> {
        let spans = crate::nemesis::events::spans(events, end_ns);
        plot::draw(&self.path.join("plot.png"), history, &spans, end_ns)
    }

    /// Removes the nodes' data directories.
    pub fn remove_data(&self) -> Result<(), Error> {
        let data = self.data_dir();
        match std::fs::remove_dir_all(&data) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", data.display()))(err))
            }
            _ => Ok(()),
        }
    }

    fn write_lines(
        &self,
        name: &str,
        lines: impl Iterator<Item = Result<String, serde_json::Error>>,
    ) -> Result<(), Error> {
        let path = self.path.join(name);
        let context = || format!("writing {}", path.display());
        let file = std::fs::File::create(&path).map_err(Error::io(context()))?;
        let mut out = std::io::BufWriter::new(file);
        for line in lines {
            writeln!(out, "{}", line?).map_err(Error::io(context()))?;
        }
        out.flush().map_err(Error::io(context()))
    }
}
