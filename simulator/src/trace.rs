//! Arrival traces: reading a user's file, and finding the bursts in one.
//!
//! A trace file has one arrival per line: the time in seconds (a decimal number >= 0,
//! at most a week) from the trace's start at which one image is sent. Lines may come in any order; blank lines and lines
//! starting with `#` are ignored. For example:
//!
//! ```text
//! # three images at once, one a minute later
//! 0.0
//! 0.2
//! 0.25
//! 60
//! ```

use std::path::{Path, PathBuf};

use matte_common::files::{self, ReadError};

use serde::Serialize;

use crate::cli::Overrides;
use crate::error::Error;
use crate::scenario::Scenario;
use crate::settings::{MAX_SECONDS, Settings};

/// The largest trace file read: some four million arrivals of a few digits each.
pub const MAX_TRACE_BYTES: u64 = 32 * 1024 * 1024;

/// The most arrivals a trace may hold: a week at three images a second. Each is an
/// image every policy serves, and a refused one comes back again and again.
pub const MAX_ARRIVALS: usize = 2_000_000;

/// Reads a trace file into sorted arrival times: a regular file of at most
/// [`MAX_TRACE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<f64>, Error> {
    let unreadable = |source| Error::ReadTrace { path: path.to_path_buf(), source };
    let bytes = files::read_bounded(path, MAX_TRACE_BYTES).map_err(unreadable)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        unreadable(ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))
    })?;
    parse(&text, path)
}

/// Parses the text of a trace file; `path` only names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<f64>, Error> {
    let mut arrivals = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let bad = || Error::BadArrival { path: PathBuf::from(path), line: index + 1, text: content.to_string() };
        let time: f64 = content.parse().map_err(|_| bad())?;
        if !(time.is_finite() && time >= 0.0) {
            return Err(bad());
        }
        if arrivals.len() == MAX_ARRIVALS {
            return Err(Error::TooManyArrivals { path: PathBuf::from(path), max: MAX_ARRIVALS });
        }
        arrivals.push(time);
    }
    if arrivals.is_empty() {
        return Err(Error::EmptyTrace { path: path.to_path_buf() });
    }
    arrivals.sort_by(f64::total_cmp);
    match arrivals.last() {
        // A run lasts until the second after its last arrival, and at most a week.
        Some(&last_seconds) if last_seconds.floor() + 1.0 > MAX_SECONDS => {
            Err(Error::TraceTooLong { path: path.to_path_buf(), last_seconds, max_seconds: MAX_SECONDS })
        }
        _ => Ok(arrivals),
    }
}

/// The settings a trace runs with: burst-train's pods, for as long as the trace lasts,
/// and then the overrides; a duration that would end the run before the trace's last
/// arrival is refused (the images after it would count as never answered).
pub fn settings(arrivals: &[f64], overrides: &Overrides) -> Result<Settings, Error> {
    let last = arrivals.last().copied().unwrap_or(0.0);
    let settings =
        overrides.apply(Settings { duration_seconds: last.floor() + 1.0, ..Scenario::BurstTrain.settings() });
    if settings.duration_seconds <= last {
        return Err(Error::InvalidSetting(format!(
            "the duration ({}s) ends before the trace's last arrival at {last}s",
            settings.duration_seconds
        )));
    }
    Ok(settings)
}

/// A run of arrivals with no quiet gap inside.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Burst {
    pub start_seconds: f64,
    pub end_seconds: f64,
    pub images: usize,
}

/// Splits sorted arrivals into bursts wherever `quiet_gap` seconds pass without one.
pub fn bursts(arrivals: &[f64], quiet_gap: f64) -> Vec<Burst> {
    let mut bursts: Vec<Burst> = Vec::new();
    for &time in arrivals {
        match bursts.last_mut() {
            Some(burst) if time - burst.end_seconds < quiet_gap => {
                burst.end_seconds = time;
                burst.images += 1;
            }
            _ => bursts.push(Burst { start_seconds: time, end_seconds: time, images: 1 }),
        }
    }
    bursts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sorts_and_skips_comments_and_blank_lines() {
        let arrivals = parse("# header\n\n3.5\n 1 \n0\n", Path::new("t.txt")).expect("valid trace");
        assert_eq!(arrivals, vec![0.0, 1.0, 3.5]);
    }

    #[test]
    fn names_the_line_of_a_bad_arrival() {
        let error = parse("1\nsoon\n", Path::new("t.txt")).expect_err("not a number");
        assert!(matches!(error, Error::BadArrival { line: 2, .. }), "{error}");
        let error = parse("-1\n", Path::new("t.txt")).expect_err("negative");
        assert!(matches!(error, Error::BadArrival { line: 1, .. }), "{error}");
        let error = parse("inf\n", Path::new("t.txt")).expect_err("infinite");
        assert!(matches!(error, Error::BadArrival { line: 1, .. }), "{error}");
    }

    #[test]
    fn refuses_a_trace_in_unix_times_naming_it() {
        let error = parse("1764806400\n1764806401\n", Path::new("t.txt")).expect_err("Unix times");
        assert!(matches!(error, Error::TraceTooLong { last_seconds: 1_764_806_401.0, .. }), "{error}");
        assert!(error.to_string().contains("not Unix times"), "{error}");
        let a_week = format!("0\n{}\n", MAX_SECONDS - 0.5);
        let settings = settings(&parse(&a_week, Path::new("t.txt")).expect("a week is a trace"), &Overrides::default());
        assert_eq!(settings.expect("its settings").duration_seconds, MAX_SECONDS);
        assert!(parse(&format!("0\n{MAX_SECONDS}\n"), Path::new("t.txt")).is_err(), "a run past a week");
    }

    #[test]
    fn reads_only_a_regular_file_of_a_bounded_number_of_arrivals() {
        let error = read_file(Path::new("/dev/null")).expect_err("a device");
        assert!(matches!(error, Error::ReadTrace { source: ReadError::NotAFile, .. }), "{error}");
        let error = parse(&"1\n".repeat(MAX_ARRIVALS + 1), Path::new("t.txt")).expect_err("too many");
        assert!(matches!(error, Error::TooManyArrivals { max: MAX_ARRIVALS, .. }), "{error}");
        assert_eq!(
            parse(&"1\n".repeat(MAX_ARRIVALS), Path::new("t.txt")).expect("as many as may be").len(),
            MAX_ARRIVALS
        );
    }

    #[test]
    fn a_duration_ending_before_the_last_arrival_is_refused() {
        let arrivals = parse("0\n100\n", Path::new("t.txt")).expect("a trace");
        let short = Overrides { duration: Some(100.0), ..Overrides::default() };
        let error = settings(&arrivals, &short).expect_err("the image at 100 s would never come");
        assert!(error.to_string().contains("last arrival at 100s"), "{error}");
        let longer = Overrides { duration: Some(200.0), ..Overrides::default() };
        assert_eq!(settings(&arrivals, &longer).expect("longer").duration_seconds, 200.0);
    }

    #[test]
    fn refuses_a_trace_without_arrivals() {
        let error = parse("# nothing\n", Path::new("t.txt")).expect_err("empty");
        assert!(matches!(error, Error::EmptyTrace { .. }));
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_panic() {
        let error = read_file(Path::new("/nonexistent/trace.txt")).expect_err("missing");
        assert!(matches!(error, Error::ReadTrace { .. }));
    }

    #[test]
    fn splits_bursts_at_quiet_gaps() {
        let found = bursts(&[0.0, 1.0, 2.0, 100.0, 101.0], 30.0);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].images, found[1].images), (3, 2));
        assert_eq!(found[1].start_seconds, 100.0);
    }
}
