//! How `pull` shows its downloads: progress bars on a terminal, a plain line every few
//! seconds through a pipe, or one JSON object per event.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::client::Dl;
use super::format;

/// A plain progress line per download at most this often (a state change prints at once).
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Which of the three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
}

impl Mode {
    /// `--json` wins; else bars when stdout is a terminal.
    pub fn pick(json: bool) -> Mode {
        use std::io::IsTerminal;
        match (json, std::io::stdout().is_terminal()) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Bars,
            (false, false) => Mode::Plain,
        }
    }
}

/// The display of one `pull`; told of every change of the downloads it follows.
pub enum Display {
    Bars(Bars),
    Plain(Vec<Option<Instant>>),
    Json,
}

impl Display {
    pub fn new(mode: Mode, downloads: &[Dl]) -> Display {
        let display = match mode {
            Mode::Bars => Display::Bars(Bars::new(downloads)),
            Mode::Plain => Display::Plain(vec![None; downloads.len()]),
            Mode::Json => Display::Json,
        };
        for d in downloads {
            match &display {
                Display::Json => emit("queued", json!({ "download": d })),
                Display::Plain(_) => println!("{}: added as {}", d.path, d.id),
                Display::Bars(_) => {}
            }
        }
        display
    }

    /// Download `i` of `all` has new numbers.
    pub fn progress(&mut self, i: usize, all: &[Dl]) {
        let d = &all[i];
        match self {
            Display::Bars(bars) => bars.show(i, all),
            Display::Plain(last) => {
                if last[i].is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    last[i] = Some(Instant::now());
                    println!(
                        "{}: {}",
                        d.path,
                        numbers(d.bytes_done, d.bytes_total, d.speed_bps, d.eta_secs)
                    );
                }
            }
            Display::Json => emit(
                "progress",
                json!({"id": d.id, "path": d.path, "bytes_done": d.bytes_done,
                       "bytes_total": d.bytes_total, "speed_bps": d.speed_bps, "eta_secs": d.eta_secs}),
            ),
        }
    }

    /// Download `i` of `all` changed state.
    pub fn state(&mut self, i: usize, all: &[Dl]) {
        let d = &all[i];
        match self {
            Display::Bars(bars) => bars.state(i, all),
            Display::Plain(_) => println!("{}: {}", d.path, describe_state(d)),
            Display::Json => {
                let event = if d.is_finished() {
                    d.state.as_str()
                } else {
                    "state"
                };
                emit(event, json!({ "download": d }));
            }
        }
    }

    /// Before anything else is printed: leaves the bars as they are drawn.
    pub fn finish(&mut self) {
        if let Display::Bars(bars) = self {
            bars.multi.set_move_cursor(false);
            for bar in bars.files.iter().chain(std::iter::once(&bars.total)) {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

/// `{"event": ..., ...fields}` on one line.
fn emit(event: &str, fields: serde_json::Value) {
    let mut object = json!({ "event": event });
    if let (Some(o), serde_json::Value::Object(f)) = (object.as_object_mut(), fields) {
        o.extend(f);
    }
    println!("{object}");
}

/// `42%  12.0 MiB/26.7 MiB  3.00 MiB/s  ETA 4s`: the service's own numbers.
fn numbers(done: u64, total: Option<u64>, speed: u64, eta: Option<u64>) -> String {
    let total_text = total.map_or_else(|| "?".to_owned(), format::bytes);
    format!(
        "{:>4}  {}/{}  {}  ETA {}",
        format::percent(done, total),
        format::bytes(done),
        total_text,
        format::speed(speed),
        format::eta(eta)
    )
}

/// A state as a line says it: `completed, sha256 3f2a… verified`, `retrying (attempt 2): …`.
pub fn describe_state(d: &Dl) -> String {
    let error = d
        .error
        .as_ref()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .unwrap_or_default();
    match d.state.as_str() {
        "completed" => match &d.sha256 {
            Some(h) => format!(
                "completed, {}, sha256 {} verified",
                format::bytes(d.bytes_done),
                &h[..h.len().min(12)]
            ),
            None => format!("completed, {}", format::bytes(d.bytes_done)),
        },
        "retrying" => format!("retrying (attempt {}): {error}", d.attempt),
        "failed" => format!("failed: {error}"),
        other => other.to_owned(),
    }
}

/// One bar per file and a total, redrawn on every `progress` frame (the service's
/// cadence, 300 ms by default).
pub struct Bars {
    multi: MultiProgress,
    files: Vec<ProgressBar>,
    total: ProgressBar,
}

impl Bars {
    fn new(downloads: &[Dl]) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{prefix:32!} [{bar:24}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = |name: &str| {
            let b = multi.add(ProgressBar::no_length().with_style(style.clone()));
            b.set_prefix(ellipsized(name, NAME_WIDTH));
            b
        };
        let files: Vec<ProgressBar> = downloads.iter().map(|d| bar(&d.file_name)).collect();
        let n = downloads.len();
        let total = bar(&format!(
            "total ({n} file{})",
            if n == 1 { "" } else { "s" }
        ));
        let mut bars = Bars {
            multi,
            files,
            total,
        };
        for i in 0..downloads.len() {
            bars.state(i, downloads);
        }
        bars
    }

    fn show(&mut self, i: usize, all: &[Dl]) {
        let d = &all[i];
        let bar = &self.files[i];
        set_length(bar, d.bytes_total);
        bar.set_position(d.bytes_done);
        bar.set_message(numbers(
            d.bytes_done,
            d.bytes_total,
            d.speed_bps,
            d.eta_secs,
        ));
        self.show_total(all);
    }

    fn show_total(&mut self, all: &[Dl]) {
        let done: u64 = all.iter().map(|d| d.bytes_done).sum();
        let total: Option<u64> = all.iter().map(|d| d.bytes_total).sum();
        let live: Vec<&Dl> = all.iter().filter(|d| !d.is_finished()).collect();
        let speed: u64 = live.iter().map(|d| d.speed_bps).sum();
        let eta = total
            .filter(|_| speed > 0)
            .map(|t| t.saturating_sub(done).div_ceil(speed));
        set_length(&self.total, total);
        self.total.set_position(done);
        self.total.set_message(numbers(done, total, speed, eta));
        if live.is_empty() {
            self.total.finish();
        }
    }

    fn state(&mut self, i: usize, all: &[Dl]) {
        let d = &all[i];
        let bar = &self.files[i];
        match d.state.as_str() {
            "downloading" => self.show(i, all),
            state if d.is_finished() => {
                bar.set_length(d.bytes_total.unwrap_or(d.bytes_done));
                bar.set_position(if state == "completed" {
                    d.bytes_done
                } else {
                    bar.position()
                });
                bar.finish_with_message(describe_state(d));
                self.show_total(all);
            }
            _ => bar.set_message(describe_state(d)),
        }
    }
}

/// The width of a bar's name (the template's `{prefix:32!}`).
const NAME_WIDTH: usize = 32;

/// `name` in at most `width` characters: a longer one ends in `…`, so that a cut name
/// reads as cut.
fn ellipsized(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        return name.to_owned();
    }
    let mut short: String = name.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A bar whose total is unknown is drawn empty (with a length of 0 it would be full).
fn set_length(bar: &ProgressBar, total: Option<u64>) {
    match total {
        Some(t) => bar.set_length(t),
        None => bar.unset_length(),
    }
}

#[cfg(test)]
mod tests {
    use super::ellipsized;

    #[test]
    fn a_long_name_ends_in_an_ellipsis_within_its_width() {
        assert_eq!(ellipsized("model.gguf", 32), "model.gguf");
        let long = "tinyllama-1.1b-chat-v1.0.Q4_K_M-and-more.gguf";
        let short = ellipsized(long, 32);
        assert_eq!(short.chars().count(), 32);
        assert!(short.ends_with('…') && long.starts_with(short.trim_end_matches('…')));
        assert_eq!(ellipsized(&"é".repeat(40), 32).chars().count(), 32);
    }
}
