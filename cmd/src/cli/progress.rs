//! A progress bar on stderr for long transfers, only when stderr is a terminal.

use rctr_checkpoint::store::archive::Progress;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Below this, a transfer is over before a bar would be read.
const LARGE: u64 = 64 << 20;
const EVERY: Duration = Duration::from_millis(100);

/// Draws "VERB NAME [#####.....]  45%  123.4 MiB of 274.0 MiB" on one terminal line.
pub struct Bar {
    label: String,
    total: u64,
    done: u64,
    shown: bool,
    last: Option<Instant>,
}

impl Bar {
    /// A bar labelled `label`, or None where none should be drawn (not a terminal, -q).
    pub fn for_terminal(label: String) -> Option<Bar> {
        let wanted = std::io::stderr().is_terminal() && rctr_log::enabled(rctr_log::Level::Info);
        wanted.then_some(Bar {
            label,
            total: 0,
            done: 0,
            shown: false,
            last: None,
        })
    }

    fn draw(&mut self) {
        let share = if self.total == 0 {
            1.0
        } else {
            (self.done as f64 / self.total as f64).min(1.0)
        };
        const WIDTH: usize = 30;
        let full = (share * WIDTH as f64) as usize;
        let line = format!(
            "\r{} [{}{}] {:3.0}%  {} of {}",
            self.label,
            "#".repeat(full),
            ".".repeat(WIDTH - full),
            share * 100.0,
            super::checkpoint::size_text(self.done),
            super::checkpoint::size_text(self.total)
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.shown = true;
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        self.total = total;
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.total < LARGE {
            return;
        }
        let due = match self.last {
            None => true,
            Some(t) => t.elapsed() >= EVERY,
        };
        if due {
            self.last = Some(Instant::now());
            self.draw();
        }
    }

    fn finish(&mut self) {
        if self.shown {
            self.draw();
            let _ = std::io::stderr().write_all(b"\n");
            self.shown = false;
        }
    }
}

impl Drop for Bar {
    /// A transfer that failed halfway: its error goes on a line of its own.
    fn drop(&mut self) {
        if self.shown {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
}

/// [`Bar`] where one is wanted, else nothing shown.
pub fn progress(label: String) -> Box<dyn Progress> {
    match Bar::for_terminal(label) {
        Some(b) => Box::new(b),
        None => Box::new(rctr_checkpoint::store::archive::Quiet),
    }
}
