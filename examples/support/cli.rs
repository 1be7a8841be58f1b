//! What every example program shares at its edges: errors as one line `error: <what>: <message>` on
//! stderr with a non-zero exit (1 for bad input or a failed run, 2 for bad usage), `--help`, and
//! output to stdout that ends quietly when the reader goes away (`census ... | head`).
//!
//! Included by `#[path]`, with `#[macro_use]` for [`outln!`] and [`out!`].
#![allow(dead_code, unused_macros)]

use std::fmt::Display;
use std::io::Write;

/// Prints `error: <message>` on stderr and exits with status 1 (bad input, failed run).
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// Prints `error: <what>: <error>` (the error's `Display` form) and exits with status 1.
pub fn fail_on(what: impl Display, error: impl Display) -> ! {
    fail(&format!("{what}: {error}"))
}

/// Prints `error: <message>` and a pointer to `--help` on stderr and exits with status 2 (bad
/// usage: an unknown flag, a missing or unparsable value).
pub fn usage_error(message: &str) -> ! {
    eprintln!("error: {message} (try --help)");
    std::process::exit(2)
}

/// Writes formatted text to stdout. A closed pipe ends the program quietly with status 0 (the
/// reader has what it wanted); any other write error is an error.
pub fn out(args: std::fmt::Arguments) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        fail_on("stdout", e);
    }
}

/// `println!` that ends the program quietly on a closed pipe (see [`out`]).
macro_rules! outln {
    () => {
        $crate::cli::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends the program quietly on a closed pipe (see [`out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!($($arg)*))
    };
}

/// True if the arguments ask for help (`--help` or `-h`); the caller prints its usage and exits 0.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// Parses the value of `flag`, or fails with a usage error naming the flag and the value.
pub fn parse_value<T: std::str::FromStr>(flag: &str, value: Option<String>) -> T
where
    T::Err: Display,
{
    let Some(value) = value else { usage_error(&format!("{flag} needs a value")) };
    value.parse().unwrap_or_else(|e| usage_error(&format!("{flag}: cannot parse {value:?}: {e}")))
}
