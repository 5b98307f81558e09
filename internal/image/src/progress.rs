//! Progress bars on stderr for pulls and long build steps: drawn only when stderr is a
//! terminal and informational messages are on (not `-q`); hidden otherwise, so logs and
//! pipes get plain lines.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

fn wanted() -> bool {
    std::io::stderr().is_terminal() && rctr_log::enabled(rctr_log::Level::Info)
}

/// A bar over `total` bytes, labelled `label`.
pub(crate) fn bytes(label: String, total: u64) -> ProgressBar {
    if !wanted() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("#>."),
    );
    bar.set_message(label);
    bar
}

/// A spinner with the elapsed time, for a step whose length is unknown.
pub(crate) fn spinner(label: String) -> ProgressBar {
    if !wanted() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
    );
    bar.set_message(label);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
