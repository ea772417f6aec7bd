//! Kubernetes' qualified names (`example.com/name`), which label keys and extended
//! resource names are, checked as the apiserver checks them: a name the operator passes
//! on that the apiserver refuses would have the object carrying it refused.

/// A qualified name, `[prefix/]name`: an optional prefix that is a lower-case DNS
/// subdomain, then a [`is_name_part`].
pub fn is_qualified_name(text: &str) -> bool {
    match text.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(text),
    }
}

/// A label's value: empty, or a [`is_name_part`].
pub fn is_label_value(text: &str) -> bool {
    text.is_empty() || is_name_part(text)
}

/// The name of a qualified name, and a label's value when not empty: at most 63
/// letters, digits, `-`, `_` and `.`, beginning and ending with a letter or digit.
pub fn is_name_part(text: &str) -> bool {
    text.len() <= 63
        && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A lower-case DNS subdomain, as the apiserver reads one (RFC 1123's, with no limit on
/// a label's length but the whole's): at most 253 characters of dot-separated labels of
/// letters, digits and `-`, none beginning or ending with `-`.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_are_an_optional_subdomain_and_a_name() {
        for valid in ["release", "example.com/team", "app.kubernetes.io/name", "a_b.c-d"] {
            assert!(is_qualified_name(valid), "{valid}");
        }
        for invalid in ["", "-a", "a-", "Example.com/x", "a//b", "a/b/c", "example..com/x", &"b".repeat(64)] {
            assert!(!is_qualified_name(invalid), "{invalid}");
        }
        // A subdomain's labels are bounded only by its whole length.
        assert!(is_dns_subdomain(&format!("{}.example.com", "a".repeat(70))));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }
}
