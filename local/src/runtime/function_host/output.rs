//! The function's output: its stdout and stderr read line by line ([`pump`]), tagged with the
//! invocation in progress, kept in a short tail for exit reports and passed to the caller's
//! [`OutputSink`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::lock;

/// How many of the process's last output lines an exit report quotes.
const TAIL_LINES: usize = 10;
/// Longer lines are passed on in pieces, as Lambda splits long log lines.
const MAX_LINE_BYTES: u64 = 256 * 1024;

/// Which stream a line of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// A line from the host itself about the function, such as Lambda's "Task timed out".
    Platform,
}

/// One line of the function's output.
#[derive(Clone, Copy, Debug)]
pub struct OutputLine<'a> {
    /// The invocation most recently handed to the process when the line was read (so a line
    /// written after an invocation ended still carries its id); `None` before the first.
    pub request_id: Option<&'a str>,
    pub stream: OutputStream,
    /// The line without its line ending.
    pub text: &'a str,
}

impl fmt::Display for OutputLine<'_> {
    /// `[<request id>] <text>`, or `[init] <text>` before the first invocation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.request_id.unwrap_or("init"), self.text)
    }
}

/// Where the function's output goes. Called from the tasks reading the process's pipes, so it
/// should be quick.
#[derive(Clone)]
pub struct OutputSink(Arc<dyn Fn(&OutputLine<'_>) + Send + Sync>);

impl OutputSink {
    pub fn new(sink: impl Fn(&OutputLine<'_>) + Send + Sync + 'static) -> OutputSink {
        OutputSink(Arc::new(sink))
    }

    /// Prints each line to this process's stderr as `[<request id>] <text>`.
    pub fn stderr() -> OutputSink {
        OutputSink::new(|line| eprintln!("{line}"))
    }

    /// Emits each line as a `tracing` event with target `function`.
    pub fn tracing() -> OutputSink {
        OutputSink::new(|line| {
            tracing::info!(
                target: "function",
                request_id = line.request_id.unwrap_or("init"),
                stream = ?line.stream,
                "{}",
                line.text
            )
        })
    }

    fn emit(&self, line: &OutputLine<'_>) {
        (self.0)(line)
    }
}

impl Default for OutputSink {
    fn default() -> OutputSink {
        OutputSink::stderr()
    }
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutputSink")
    }
}

/// The process's output: tags lines with the current request id, keeps the last few for exit
/// reports, and passes them to the sink.
pub(super) struct Output {
    sink: OutputSink,
    request_id: Mutex<Option<String>>,
    tail: Mutex<VecDeque<String>>,
}

impl Output {
    pub(super) fn new(sink: OutputSink) -> Output {
        Output {
            sink,
            request_id: Mutex::new(None),
            tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
        }
    }

    pub(super) fn set_request_id(&self, request_id: &str) {
        *lock(&self.request_id) = Some(request_id.to_owned());
    }

    pub(super) fn emit(&self, stream: OutputStream, text: &str) {
        if stream != OutputStream::Platform {
            let mut tail = lock(&self.tail);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            // Exit reports are read as plain text; colour codes from the function's logger
            // would only get in the way there.
            tail.push_back(strip_ansi(text));
        }
        let request_id = lock(&self.request_id).clone();
        self.sink.emit(&OutputLine {
            request_id: request_id.as_deref(),
            stream,
            text,
        });
    }

    pub(super) fn tail(&self) -> Vec<String> {
        lock(&self.tail).iter().cloned().collect()
    }
}

/// Reads `pipe` line by line into `output` until the process closes it.
pub(super) async fn pump(pipe: impl AsyncRead + Unpin, stream: OutputStream, output: Arc<Output>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                output.emit(stream, text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

/// Removes ANSI escape sequences (colours, cursor moves) from `text`.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        // CSI sequences (`ESC [ … final`) end at a byte in '@'..='~'; other escapes are
        // two characters long.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colours_only() {
        assert_eq!(
            strip_ansi("\u{1b}[31mERROR\u{1b}[0m bucket \u{1b}[2mx\u{1b}[0m"),
            "ERROR bucket x"
        );
        assert_eq!(strip_ansi("plain [text]"), "plain [text]");
    }
}
