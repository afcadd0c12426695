//! The table of `cargo xtask bench lock`: `fscache-lock` against its peers
//! (`benches/lock.rs`, `benches/peers/bench.rs`), a row per scenario, mode
//! and P, a column per crate, each cell a ratio to `fscache-lock` measured
//! in the same run.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use crate::{human, Measured};

/// The criterion groups of the peers: `peers/<scenario>/<threads|procs>`.
pub(crate) const GROUP_PREFIX: &str = "peers/";

/// The columns, in the order of the bench's `BENCHED` list: ours first,
/// the reference of every ratio.
const COLUMNS: [&str; 8] = [
    "fscache-lock",
    "writers-first",
    "std",
    "fd-lock",
    "fs4",
    "fs2",
    "file-guard",
    "rustix",
];

/// The scenarios in the order the rows are printed, with how to read them.
const SCENARIOS: [(&str, &str); 8] = [
    (
        "uncontended",
        "time per lock/unlock, each worker on its own file",
    ),
    ("exclusive", "time per exclusive cycle, one file"),
    ("shared", "time per shared cycle, one file"),
    ("mix90", "time per cycle, 90 % shared"),
    ("mix50", "time per cycle, 50 % shared"),
    ("handoff", "time from unlock to the next holder's return"),
    (
        "fairness",
        "Jain's index of acquisitions per worker (1 = fair)",
    ),
    (
        "starvation",
        "longest writer wait among P-1 overlapping readers",
    ),
];

/// One cell's measurement: a time in ns, or a value with its unit.
#[derive(Clone, Copy)]
enum Cell {
    Ns(f64),
    Value(f64, &'static str),
}

impl Cell {
    fn number(self) -> f64 {
        match self {
            Cell::Ns(x) | Cell::Value(x, _) => x,
        }
    }

    fn show(self) -> String {
        match self {
            Cell::Ns(ns) => human(ns),
            Cell::Value(x, "ms") => human(x * 1e6),
            Cell::Value(x, unit) => format!("{x:.3} {unit}"),
        }
    }
}

/// Print the table of this run's peer results: the criterion `results`
/// (already filtered to [`GROUP_PREFIX`]) and the bench's
/// `fscache-lock-peers.json` in `home`, if written since `since`.
pub(crate) fn print(results: &[Measured], home: &Path, since: SystemTime) {
    // (scenario, mode, P) → column → cell
    let mut rows: BTreeMap<(usize, String, u64), BTreeMap<String, Cell>> = BTreeMap::new();
    let mut add = |group: &str, p: u64, column: &str, cell: Cell| {
        let mut parts = group.trim_start_matches(GROUP_PREFIX).splitn(2, '/');
        let scenario = parts.next().unwrap_or("");
        let mode = parts.next().unwrap_or("").to_owned();
        let order = SCENARIOS
            .iter()
            .position(|(s, _)| *s == scenario)
            .unwrap_or(SCENARIOS.len());
        rows.entry((order, mode, p))
            .or_default()
            .insert(column.to_owned(), cell);
    };
    for m in results {
        let p = m.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        add(
            &m.group,
            p,
            m.function.as_deref().unwrap_or(""),
            Cell::Ns(m.median_ns),
        );
    }
    let extras = home.join("fscache-lock-peers.json");
    let mut window = None;
    let fresh = fs::metadata(&extras)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    if let Some(report) = fresh
        .then(|| fs::read_to_string(&extras).ok())
        .flatten()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        window = report["window_ms"].as_u64();
        for r in report["rows"].as_array().into_iter().flatten() {
            let (Some(group), Some(peer), Some(p), Some(value)) = (
                r["group"].as_str(),
                r["peer"].as_str(),
                r["p"].as_u64(),
                r["value"].as_f64(),
            ) else {
                continue;
            };
            let unit = if r["unit"] == "ms" { "ms" } else { "" };
            add(group, p, peer, Cell::Value(value, unit));
        }
    }
    if rows.is_empty() {
        return;
    }
    let head: Vec<String> = std::iter::once("scenario".to_owned())
        .chain(COLUMNS.iter().map(|c| c.to_string()))
        .collect();
    let mut lines = vec![head];
    for ((order, mode, p), cells) in &rows {
        let scenario = SCENARIOS.get(*order).map_or("?", |(s, _)| s);
        let mut line = vec![format!("{scenario} {mode} P={p}")];
        let ours = cells.get(COLUMNS[0]).copied();
        for column in COLUMNS {
            line.push(match (cells.get(column), ours) {
                (None, _) => "n/a".to_owned(),
                (Some(c), _) if column == COLUMNS[0] => c.show(),
                (Some(c), Some(o)) if o.number() > 0.0 => {
                    format!("{:.2}×", c.number() / o.number())
                }
                (Some(c), _) => c.show(),
            });
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!("\nfscache-lock among its peers (one run; ratios to fscache-lock):");
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w - c.chars().count();
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", cells.join("  "));
    }
    println!("\nrows:");
    for (scenario, what) in SCENARIOS {
        println!("  {scenario:<11} {what}");
    }
    println!(
        "fscache-lock's column is the measurement, every other a ratio to it: for times \
         above 1 is slower, for fairness above 1 is fairer. n/a: POSIX locks \
         (file-guard, rustix) do not exclude threads of one process, or P=1 has no \
         hand-off. writers-first: RangeLock::lock_writers_first."
    );
    if let Some(ms) = window {
        println!("fairness and starvation ran in {ms} ms windows: a wait near it is a writer starved for the whole window.");
    }
}
