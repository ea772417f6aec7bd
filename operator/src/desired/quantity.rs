//! Kubernetes quantities (`500m`, `1.5Gi`, `2e9`), read as the apiserver reads them
//! (apimachinery's `resource.ParseQuantity`). The schema takes any string for a
//! quantity: one the apiserver would not read must be refused before anything is
//! applied, or the objects before the one that carries it are made and that one is
//! refused, leaving a resource half built.
//!
//! The grammar: a number (an optional sign, digits with an optional fraction, or a
//! fraction alone) and then one suffix, a binary one (`Ki` to `Ei`), a decimal one (`m`,
//! `k`, `M` to `E`) or a decimal exponent (`e` or `E` and a signed integer), never two:
//! `1e3Gi` is no quantity.

/// The value of `text` in its base unit (cores, bytes), or `None` if it is no quantity.
pub fn value(text: &str) -> Option<f64> {
    let number_length = number_prefix(text)?;
    let (number, suffix) = text.split_at(number_length);
    let multiplier = multiplier(suffix)?;
    let value = number.parse::<f64>().ok()? * multiplier;
    value.is_finite().then_some(value)
}

/// The length of the signed number `text` starts with: `None` if it starts with none.
fn number_prefix(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits = |from: usize| bytes[from..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    let whole = digits(at);
    at += whole;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        fraction = digits(at + 1);
        at += 1 + fraction;
    }
    (whole + fraction > 0).then_some(at)
}

/// What the suffix multiplies the number by.
fn multiplier(suffix: &str) -> Option<f64> {
    let binary = |power: i32| Some(1024f64.powi(power));
    let decimal = |power: i32| Some(10f64.powi(power));
    match suffix {
        "" => decimal(0),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        exponent => {
            let power = exponent.strip_prefix(['e', 'E'])?;
            let digits = power.strip_prefix(['+', '-']).unwrap_or(power);
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            decimal(power.parse::<i32>().ok()?)
        }
    }
}

/// Bytes of a memory quantity; `None` for one that is no quantity, below 0, or past the
/// u64 range.
pub fn bytes(text: &str) -> Option<u64> {
    let value = value(text)?;
    (value >= 0.0 && value < u64::MAX as f64).then(|| value.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_the_apiserver_reads_them() {
        for (text, expected) in [
            ("1", 1.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            (".5", 0.5),
            ("2.", 2.0),
            ("+2", 2.0),
            ("-1", -1.0),
            ("1k", 1e3),
            ("1Gi", 1073741824.0),
            ("1.5Gi", 1610612736.0),
            ("2e9", 2e9),
            ("2E+3", 2e3),
            ("5e-1", 0.5),
            ("1Ei", 1024f64.powi(6)),
        ] {
            assert_eq!(value(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn what_the_apiserver_refuses_is_no_quantity() {
        for text in [
            "", "half", "Gi", "1e3Gi", "1Gb", "1gi", "1 Gi", " 1", "1.2.3", "1e", "1e1.5", "1e+", "--1", ".", "1KI",
            "0x10",
        ] {
            assert_eq!(value(text), None, "{text:?}");
        }
    }

    #[test]
    fn bytes_are_whole_and_not_below_zero() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1500m"), Some(2), "a fraction of a byte counts as a byte");
        assert_eq!(bytes("-1Gi"), None);
        assert_eq!(bytes("1e30"), None, "past u64");
        assert_eq!(bytes("1e400"), None, "past any number");
    }
}
