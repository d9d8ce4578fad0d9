//! Pull progress on stderr: a bar with bytes, speed and ETA on a terminal,
//! a line every few seconds otherwise (logs, CI, pipes).

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use shelf_pull::Progress;

use crate::store_cmds::human_bytes;

const LINE_EVERY: Duration = Duration::from_secs(2);

/// Bars or lines, depending on whether stderr is a terminal.
pub enum Reporter {
    Bars(Mutex<Option<ProgressBar>>),
    Lines(Mutex<Lines>),
}

pub struct Lines {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    at_start: u64,
    last_print: Instant,
}

impl Reporter {
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bars(Mutex::new(None))
        } else {
            let now = Instant::now();
            Self::Lines(Mutex::new(Lines {
                label: String::new(),
                total: 0,
                done: 0,
                started: now,
                at_start: 0,
                last_print: now,
            }))
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl Lines {
    fn print(&mut self) {
        let rate =
            (self.done - self.at_start) as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let percent = (self.done * 100)
            .checked_div(self.total)
            .map_or_else(|| String::from("?%"), |p| format!("{p}%"));
        eprintln!(
            "pulling {}: {percent} ({} of {}, {}/s)",
            self.label,
            human_bytes(self.done),
            human_bytes(self.total),
            human_bytes(rate as u64)
        );
        self.last_print = Instant::now();
    }
}

impl Progress for Reporter {
    fn blob_started(&self, label: &str, total: u64, done: u64) {
        match self {
            Self::Bars(bar) => {
                let new = ProgressBar::new(total).with_style(bar_style());
                new.set_message(label.to_string());
                new.set_position(done);
                new.reset_eta();
                *bar.lock().unwrap_or_else(PoisonError::into_inner) = Some(new);
            }
            Self::Lines(lines) => {
                let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                *lines = Lines {
                    label: label.to_string(),
                    total,
                    done,
                    started: now,
                    at_start: done,
                    last_print: now,
                };
                if done > 0 {
                    eprintln!(
                        "pulling {label}: resuming, {} already here",
                        human_bytes(done)
                    );
                } else {
                    eprintln!("pulling {label}: {}", human_bytes(total));
                }
            }
        }
    }

    fn advanced(&self, bytes: u64) {
        match self {
            Self::Bars(bar) => {
                if let Some(bar) = bar.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                    bar.inc(bytes);
                }
            }
            Self::Lines(lines) => {
                let mut lines = lines.lock().unwrap_or_else(PoisonError::into_inner);
                lines.done += bytes;
                if lines.last_print.elapsed() >= LINE_EVERY {
                    lines.print();
                }
            }
        }
    }

    fn blob_finished(&self, label: &str) {
        match self {
            Self::Bars(bar) => {
                if let Some(bar) = bar.lock().unwrap_or_else(PoisonError::into_inner).take() {
                    bar.finish_and_clear();
                }
                eprintln!("verified {label}");
            }
            Self::Lines(_) => eprintln!("verified {label}"),
        }
    }

    fn message(&self, text: &str) {
        match self {
            Self::Bars(bar) => match bar.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            },
            Self::Lines(_) => eprintln!("{text}"),
        }
    }
}
