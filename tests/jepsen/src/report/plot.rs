//! The run's picture: throughput (operations completed per second, by
//! outcome) above latency (each operation, by completion time, log scale),
//! with the fault windows shaded in both. Text uses DejaVu Sans compiled
//! into the binary, so no system font is needed.

use crate::nemesis::events::FaultSpan;
use crate::Error;
use flotilla_tests::history::{History, Outcome};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// A chart with seconds on the x axis.
type Chart<'a, Y> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>;

const SIZE: (u32, u32) = (1400, 900);
const FONT: &str = "sans-serif";
const OK_COLOR: RGBColor = RGBColor(46, 139, 87);
const FAIL_COLOR: RGBColor = RGBColor(200, 40, 40);
const INFO_COLOR: RGBColor = RGBColor(230, 150, 0);
/// Fault kinds and their shading.
const FAULT_COLORS: [(&str, RGBColor); 8] = [
    ("partition", RGBColor(220, 60, 60)),
    ("kill", RGBColor(120, 60, 160)),
    ("pause", RGBColor(50, 110, 220)),
    ("split", RGBColor(20, 160, 150)),
    ("merge", RGBColor(90, 170, 60)),
    ("transfer", RGBColor(200, 170, 0)),
    ("membership", RGBColor(160, 90, 40)),
    ("crash-all", RGBColor(90, 90, 90)),
];

/// Draws the plot of `history` (and the faults in `spans`) over
/// `[0, end_ns]` into a PNG at `path`.
pub fn draw(path: &Path, history: &History, spans: &[FaultSpan], end_ns: u64) -> Result<(), Error> {
    let failed = |err: String| Error::Report {
        path: path.to_owned(),
        message: err,
    };
    register_font().map_err(failed)?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let seconds = (end_ns as f64 / 1e9).max(1.0);
    let drawn = root
        .fill(&WHITE)
        .map_err(|err| err.to_string())
        .and_then(|()| {
            let (upper, lower) = root.split_vertically(SIZE.1 / 2);
            throughput(&upper, history, spans, seconds)?;
            latency(&lower, history, spans, seconds)?;
            root.present().map_err(|err| err.to_string())
        });
    drawn.map_err(failed)
}

fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded font does not load".to_owned())
        })
        .clone()
}

fn outcome_index(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Ok(_) => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
    }
}

const OUTCOMES: [(&str, RGBColor); 3] =
    [("ok", OK_COLOR), ("fail", FAIL_COLOR), ("info", INFO_COLOR)];

fn throughput(
    area: &DrawingArea<BitMapBackend, Shift>,
    history: &History,
    spans: &[FaultSpan],
    seconds: f64,
) -> Result<(), String> {
    let buckets = seconds.ceil() as usize + 1;
    let mut counts = vec![vec![0u32; buckets]; OUTCOMES.len()];
    for op in &history.operations {
        let at = op.completed_ns.unwrap_or(op.invoked_ns) as f64 / 1e9;
        let bucket = (at as usize).min(buckets - 1);
        counts[outcome_index(&op.outcome)][bucket] += 1;
    }
    let peak = counts.iter().flatten().copied().max().unwrap_or(0);
    let top = f64::from(peak) * 1.15 + 1.0;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput (operations completed per second)", (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds, 0f64..top)
        .map_err(|err| err.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ops/s")
        .label_style((FONT, 14))
        .draw()
        .map_err(|err| err.to_string())?;
    shade(&mut chart, spans, 0.0, top)?;
    for ((name, color), counts) in OUTCOMES.iter().zip(&counts) {
        let points = counts
            .iter()
            .enumerate()
            .map(|(second, &count)| (second as f64 + 0.5, f64::from(count)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|err| err.to_string())?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart)
}

fn latency(
    area: &DrawingArea<BitMapBackend, Shift>,
    history: &History,
    spans: &[FaultSpan],
    seconds: f64,
) -> Result<(), String> {
    let points: Vec<(f64, f64, usize)> = history
        .operations
        .iter()
        .filter_map(|op| {
            let completed = op.completed_ns?;
            let latency_ms = (completed.saturating_sub(op.invoked_ns) as f64 / 1e6).max(0.01);
            Some((
                completed as f64 / 1e9,
                latency_ms,
                outcome_index(&op.outcome),
            ))
        })
        .collect();
    let slowest = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let fastest = points.iter().map(|p| p.1).fold(slowest, f64::min) / 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption("latency (ms, log scale) by completion time", (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds, (fastest..slowest).log_scale())
        .map_err(|err| err.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .label_style((FONT, 14))
        .draw()
        .map_err(|err| err.to_string())?;
    shade(&mut chart, spans, fastest, slowest)?;
    for (index, (name, color)) in OUTCOMES.iter().enumerate() {
        let dots = points
            .iter()
            .filter(|point| point.2 == index)
            .map(|&(x, y, _)| Circle::new((x, y), 2, color.filled()));
        chart
            .draw_series(dots)
            .map_err(|err| err.to_string())?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    legend(&mut chart)
}

/// Shades each fault span from `bottom` to `top`, one legend entry per
/// fault kind that occurs.
fn shade<'a, Y>(
    chart: &mut Chart<'a, Y>,
    spans: &[FaultSpan],
    bottom: f64,
    top: f64,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    for (fault, color) in FAULT_COLORS {
        let rectangles: Vec<_> = spans
            .iter()
            .filter(|span| span.fault == fault)
            .map(|span| {
                let from = span.from_ns as f64 / 1e9;
                let to = span.to_ns as f64 / 1e9;
                Rectangle::new([(from, bottom), (to, top)], color.mix(0.15).filled())
            })
            .collect();
        if rectangles.is_empty() {
            continue;
        }
        chart
            .draw_series(rectangles)
            .map_err(|err| err.to_string())?
            .label(fault)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.mix(0.4).filled())
            });
    }
    Ok(())
}

fn legend<'a, Y>(chart: &mut Chart<'a, Y>) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::events::FaultSpan;
    use flotilla_tests::history::{Command, Operation, Response};

    #[test]
    fn draws_a_png_with_faults_shaded() {
        let operations = (0..200u64)
            .map(|i| Operation {
                process: i % 4,
                key: b"k".to_vec(),
                command: Command::Read,
                invoked_ns: i * 20_000_000,
                completed_ns: Some(i * 20_000_000 + (i % 7 + 1) * 1_000_000),
                outcome: match i % 10 {
                    0 => Outcome::Fail,
                    1 => Outcome::Info,
                    _ => Outcome::Ok(Response::Read(None)),
                },
            })
            .collect();
        let spans = [FaultSpan {
            fault: "partition",
            from_ns: 1_000_000_000,
            to_ns: 2_000_000_000,
        }];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plot.png");
        draw(&path, &History { operations }, &spans, 4_000_000_000).expect("plot");
        let bytes = std::fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG file");
    }
}
