//! The check that a README names every flag of a command line, so that the flags a
//! platform engineer can find are the flags there are: the pod's, the gateway's and the
//! operator's tests each run it against their README.

/// The long flags of `command` (without clap's own `--help` and `--version`) that
/// `readme` never names as `` `--flag``, each as `--flag`.
pub fn flags_not_named_in(command: &clap::Command, readme: &str) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(clap::Arg::get_long)
        .map(|long| format!("--{long}"))
        .filter(|flag| !readme.contains(&format!("`{flag}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;

    #[test]
    fn a_flag_is_named_only_in_backquotes() {
        let command = Command::new("x").arg(Arg::new("a").long("max-wait")).arg(Arg::new("b").long("listen"));
        assert_eq!(flags_not_named_in(&command, "| `--max-wait SECONDS` | 30 |"), ["--listen"]);
        assert_eq!(flags_not_named_in(&command, "--max-wait and --listen in prose"), ["--max-wait", "--listen"]);
        assert!(flags_not_named_in(&command, "`--listen`, `--max-wait`").is_empty());
    }
}
