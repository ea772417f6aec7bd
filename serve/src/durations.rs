//! How the servers' flags read a number of seconds.

use std::time::Duration;

/// A timeout: at least a millisecond (less is none: every wait would time out) and at
/// most a day.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.001..=86_400.0).contains(&seconds) => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("`{text}` is not a number of seconds from 0.001 to 86400")),
    }
}

/// A delay: 0 (none) to an hour.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.0..=3_600.0).contains(&seconds) => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("`{text}` is not a number of seconds between 0 and 3600")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_must_be_positive_and_bounded() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "1e-10", "0.0009", "-1", "NaN", "inf", "1e30", "soon"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delays_may_be_zero_but_not_negative_or_endless() {
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        for bad in ["-1", "NaN", "3601", "later"] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
    }
}
