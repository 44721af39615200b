//! The serial console as text: raw bytes from qemu become clean lines with
//! host timestamps, searchable from a cursor.
//!
//! Firmware and shells draw on a terminal, so the raw stream carries ANSI
//! escape sequences and `\r`s. Patterns should not have to know about them, so
//! they are removed here; a screen clear, or a cursor move to another row
//! (which OVMF uses instead of newlines), ends the current line, while moves
//! within a row (OVMF echoing typed keys) do not.

use crate::pattern::Pattern;
use std::fs::File;
use std::io::Write;

/// One console line. `t` is seconds from qemu's spawn to the line's first byte.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Index of the line in the VM's console (0-based, across restarts).
    pub n: usize,
    /// Which qemu process printed it (0 for the first, +1 per `Vm::restart`).
    pub spawn: u32,
    pub t: f64,
    pub text: String,
}

/// A position in the console output (a byte offset into the cleaned text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Mark(pub(crate) usize);

#[derive(Clone, Copy, Debug)]
struct LineMeta {
    start: usize,
    t: f64,
    spawn: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Esc {
    None,
    /// Saw ESC.
    Start,
    /// ESC [ params … final byte (params in `Cleaner::csi`).
    Csi,
    /// ESC followed by intermediates (0x20..=0x2f), until a final byte.
    Intermediate,
    /// OSC / DCS / PM / APC string, until BEL or ESC \.
    Str,
    /// ESC seen inside a string.
    StrEscape,
}

/// Escape-sequence and control-character filter; keeps state across reads.
#[derive(Debug)]
struct Cleaner {
    esc: Esc,
    /// Parameter bytes of the CSI sequence being read.
    csi: Vec<u8>,
    /// The terminal row the cursor is on, as far as known.
    row: Option<u32>,
    /// Bytes of an incomplete UTF-8 sequence at the end of the last read.
    utf8_tail: Vec<u8>,
}

/// What the cleaner produces: printable bytes and line breaks.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(Vec<u8>),
    /// `hard` for a newline; soft breaks (cursor moves) never make empty lines.
    Break {
        hard: bool,
    },
}

impl Cleaner {
    fn new() -> Cleaner {
        Cleaner {
            esc: Esc::None,
            csi: Vec::new(),
            row: None,
            utf8_tail: Vec::new(),
        }
    }

    /// Splits `bytes` into runs of printable bytes and line breaks.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut out = |p: Piece| pieces.push(p);
        let mut run_start: Option<usize> = None;
        for (i, &b) in bytes.iter().enumerate() {
            let printable = self.esc == Esc::None && (b >= 0x20 && b != 0x7f || b == b'\t');
            if printable {
                run_start.get_or_insert(i);
                continue;
            }
            if let Some(s) = run_start.take() {
                out(Piece::Text(bytes[s..i].to_vec()));
            }
            self.esc = match (self.esc, b) {
                (Esc::None, 0x1b) => Esc::Start,
                (Esc::None, b'\n') => {
                    out(Piece::Break { hard: true });
                    self.row = self.row.map(|r| r + 1);
                    Esc::None
                }
                // \r and other C0 controls carry no text.
                (Esc::None, _) => Esc::None,
                (Esc::Start, b'[') => {
                    self.csi.clear();
                    Esc::Csi
                }
                (Esc::Start, b']' | b'P' | b'X' | b'^' | b'_') => Esc::Str,
                (Esc::Start, 0x20..=0x2f) => Esc::Intermediate,
                (Esc::Start, _) => Esc::None,
                (Esc::Intermediate, 0x20..=0x2f) => Esc::Intermediate,
                (Esc::Intermediate, _) => Esc::None,
                // Overlong sequences are garbage; give up on them.
                (Esc::Csi, 0x20..=0x3f) if self.csi.len() < 32 => {
                    self.csi.push(b);
                    Esc::Csi
                }
                (Esc::Csi, final_byte) => {
                    match final_byte {
                        b'H' | b'f' => {
                            let row = std::str::from_utf8(&self.csi)
                                .ok()
                                .and_then(|p| p.split(';').next())
                                .and_then(|r| r.parse().ok())
                                .unwrap_or(1);
                            if self.row != Some(row) {
                                out(Piece::Break { hard: false });
                            }
                            self.row = Some(row);
                        }
                        b'J' => out(Piece::Break { hard: false }),
                        _ => {}
                    }
                    Esc::None
                }
                (Esc::Str, 0x07) => Esc::None,
                (Esc::Str, 0x1b) => Esc::StrEscape,
                (Esc::Str, _) => Esc::Str,
                (Esc::StrEscape, b'\\') => Esc::None,
                (Esc::StrEscape, _) => Esc::Str,
            };
        }
        if let Some(s) = run_start {
            out(Piece::Text(bytes[s..].to_vec()));
        }
        pieces
    }

    /// Decodes printable bytes to text, holding back an incomplete UTF-8
    /// sequence at the end until the next read completes it.
    fn decode(&mut self, bytes: &[u8], text: &mut String) {
        let mut buf = std::mem::take(&mut self.utf8_tail);
        buf.extend_from_slice(bytes);
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    break;
                }
                Err(e) => {
                    let (ok, bad) = rest.split_at(e.valid_up_to());
                    // valid_up_to() is a char boundary by definition.
                    text.push_str(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        None => {
                            self.utf8_tail = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// All console output of one VM, across qemu restarts.
#[derive(Debug)]
pub(crate) struct Console {
    /// Cleaned text; lines are separated by `\n`.
    text: String,
    lines: Vec<LineMeta>,
    /// The last line has not seen its newline yet.
    open: bool,
    spawn: u32,
    /// Offset where the current spawn's output starts.
    spawn_start: usize,
    /// The current qemu's stdout reached EOF.
    pub(crate) closed: bool,
    cleaner: Cleaner,
    log: Option<File>,
    /// The bytes exactly as qemu sent them, for debugging the cleaner.
    raw: Option<File>,
}

impl Console {
    pub(crate) fn new(log: Option<File>, raw: Option<File>) -> Console {
        Console {
            text: String::new(),
            lines: Vec::new(),
            open: false,
            spawn: 0,
            spawn_start: 0,
            closed: false,
            cleaner: Cleaner::new(),
            log,
            raw,
        }
    }

    /// Called before a new qemu process starts printing.
    pub(crate) fn begin_spawn(&mut self, spawn: u32) {
        self.finish_open_line();
        self.spawn = spawn;
        self.spawn_start = self.text.len();
        self.closed = false;
        self.cleaner = Cleaner::new();
        if spawn > 0 {
            self.log_raw(&format!("===== qemu restarted (spawn {spawn}) =====\n"));
        }
    }

    /// The current qemu's output ended.
    pub(crate) fn close(&mut self) {
        self.finish_open_line();
        self.closed = true;
    }

    /// Appends raw serial bytes that arrived `t` seconds after spawn.
    pub(crate) fn push(&mut self, bytes: &[u8], t: f64) {
        if let Some(f) = self.raw.as_mut()
            && f.write_all(bytes).is_err()
        {
            self.raw = None;
        }
        for piece in self.cleaner.feed(bytes) {
            match piece {
                Piece::Text(b) => {
                    if !self.open {
                        self.lines.push(LineMeta {
                            start: self.text.len(),
                            t,
                            spawn: self.spawn,
                        });
                        self.open = true;
                    }
                    self.cleaner.decode(&b, &mut self.text);
                }
                Piece::Break { hard } => {
                    // A sequence cut by a line break can never complete.
                    if !self.cleaner.utf8_tail.is_empty() {
                        self.cleaner.utf8_tail.clear();
                        self.text.push(char::REPLACEMENT_CHARACTER);
                    }
                    if self.open {
                        self.end_line();
                    } else if hard {
                        // An empty line is still a line (kept so counts match the log).
                        self.lines.push(LineMeta {
                            start: self.text.len(),
                            t,
                            spawn: self.spawn,
                        });
                        self.open = true;
                        self.end_line();
                    }
                }
            }
        }
    }

    fn end_line(&mut self) {
        self.text.push('\n');
        self.open = false;
        if let Some(n) = self.lines.len().checked_sub(1) {
            let line = self.line(n);
            let entry = format!("[{:9.3}] {}\n", line.t, line.text);
            self.log_raw(&entry);
        }
    }

    fn finish_open_line(&mut self) {
        if self.open {
            self.end_line();
        }
    }

    fn log_raw(&mut self, s: &str) {
        if let Some(f) = self.log.as_mut() {
            // The in-memory copy is authoritative; a failing log write must not
            // take the console reader (and with it the test) down.
            if f.write_all(s.as_bytes()).is_err() {
                self.log = None;
            }
        }
    }

    pub(crate) fn end(&self) -> Mark {
        Mark(self.text.len())
    }

    pub(crate) fn spawn_mark(&self) -> Mark {
        Mark(self.spawn_start)
    }

    /// Whether line `n` has its newline (is final).
    pub(crate) fn line_complete(&self, n: usize) -> bool {
        n + 1 < self.lines.len() || (n + 1 == self.lines.len() && !self.open)
    }

    fn line_end(&self, n: usize) -> usize {
        match self.lines.get(n + 1) {
            Some(next) => next.start - 1,
            None if self.open => self.text.len(),
            None => self.text.len().saturating_sub(1),
        }
    }

    pub(crate) fn line(&self, n: usize) -> Line {
        let m = self.lines[n];
        Line {
            n,
            spawn: m.spawn,
            t: m.t,
            text: self.text[m.start..self.line_end(n)].to_string(),
        }
    }

    /// Where the last line (complete or not) starts.
    pub(crate) fn last_line_start(&self) -> Mark {
        Mark(self.lines.last().map_or(0, |m| m.start))
    }

    /// Index of the line containing offset `at` (or the first line after it).
    fn line_at(&self, at: usize) -> usize {
        self.lines
            .partition_point(|m| m.start <= at)
            .saturating_sub(1)
    }

    /// First match of any of `pats` at or after `from`: the earliest line
    /// wins, then the earliest position in it, then the lowest pattern index.
    /// Returns (pattern index, line index, offset just past the match).
    pub(crate) fn find(&self, from: Mark, pats: &[Pattern]) -> Option<(usize, usize, Mark)> {
        for n in self.line_at(from.0)..self.lines.len() {
            let start = self.lines[n].start;
            let text = &self.text[start..self.line_end(n)];
            let off = from.0.saturating_sub(start);
            if off > text.len() {
                continue;
            }
            let best = pats
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.find_in(text, off).map(|(s, e)| (s, i, e)))
                .min();
            if let Some((_, i, e)) = best {
                return Some((i, n, Mark(start + e)));
            }
        }
        None
    }

    /// Text from `mark` to the end.
    pub(crate) fn text_since(&self, mark: Mark) -> &str {
        let mut at = mark.0.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at += 1;
        }
        &self.text[at..]
    }

    /// Lines that start at or after `mark`, plus the one containing it.
    pub(crate) fn lines_since(&self, mark: Mark) -> Vec<Line> {
        if self.lines.is_empty() {
            return Vec::new();
        }
        (self.line_at(mark.0)..self.lines.len())
            .map(|n| self.line(n))
            .collect()
    }

    pub(crate) fn tail(&self, count: usize) -> Vec<Line> {
        let first = self.lines.len().saturating_sub(count);
        (first..self.lines.len()).map(|n| self.line(n)).collect()
    }

    /// For each pattern, the time of the first line since `from` that matches.
    pub(crate) fn first_times(&self, from: Mark, pats: &[Pattern]) -> Vec<Option<f64>> {
        pats.iter()
            .map(|p| {
                self.find(from, std::slice::from_ref(p))
                    .map(|(_, n, _)| self.lines[n].t)
            })
            .collect()
    }
}

/// Formats lines like console.log does.
pub(crate) fn format_lines(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| format!("[{:9.3}] {}\n", l.t, l.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(chunks: &[&[u8]]) -> Console {
        let mut c = Console::new(None, None);
        c.begin_spawn(0);
        for (i, ch) in chunks.iter().enumerate() {
            c.push(ch, i as f64);
        }
        c
    }

    fn texts(c: &Console) -> Vec<String> {
        c.lines_since(Mark(0)).into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn strips_escapes_and_carriage_returns() {
        let c = console(&[
            b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: loading Boot0002\r\n",
            b"\x1b[1m\x1b[33m\x1b[40mMapping table\x1b[0m\r\n",
            b"\x1b]0;title\x07plain\x1b(Bdone\r\n",
        ]);
        assert_eq!(
            texts(&c),
            ["BdsDxe: loading Boot0002", "Mapping table", "plaindone"]
        );
    }

    #[test]
    fn cursor_moves_break_lines_and_lines_span_reads() {
        let c = console(&[
            b"\x1b[06;01HMapping\x1b[07;01HPress ESC in 5 seconds\x1b[07;01HPress ESC in 4",
            b" seconds\r\n\x1b[08;01H\x1b[1mShell> ",
        ]);
        // A move back within row 7 overwrites on a screen; here it appends.
        assert_eq!(
            texts(&c),
            [
                "Mapping",
                "Press ESC in 5 secondsPress ESC in 4 seconds",
                "Shell> "
            ]
        );
        // The prompt line is still open, and its time is when it began.
        assert!(!c.line_complete(2));
        assert_eq!(c.line(2).t, 1.0);
        assert_eq!(c.line(1).t, 0.0);
    }

    #[test]
    fn moves_within_a_row_do_not_break_lines() {
        // OVMF's shell echoes each typed key with a cursor move on its row.
        let c = console(&[
            b"\x1b[08;01HShell> \x1b[08;08He\x1b[08;09Hc\x1b[08;10Hho\r\n",
            b"hi\r\n",
        ]);
        assert_eq!(texts(&c), ["Shell> echo", "hi"]);
    }

    #[test]
    fn escape_sequences_split_across_reads() {
        let c = console(&[b"a\x1b[", b"1;3", b"1mb\n"]);
        assert_eq!(texts(&c), ["ab"]);
    }

    #[test]
    fn utf8_split_across_reads_is_decoded() {
        let c = console(&[b"caf\xc3", b"\xa9 \xff!\n"]);
        assert_eq!(texts(&c), ["caf\u{e9} \u{fffd}!"]);
    }

    #[test]
    fn empty_lines_are_kept() {
        let c = console(&[b"a\r\n\r\nb\n"]);
        assert_eq!(texts(&c), ["a", "", "b"]);
    }

    #[test]
    fn find_moves_forward_from_the_cursor() -> anyhow::Result<()> {
        let c = console(&[b"login: \n", b"x login: y\n", b"cairn login: "]);
        let pats = [Pattern::from("login:")];
        let (_, n0, m0) = c
            .find(Mark(0), &pats)
            .ok_or_else(|| anyhow::anyhow!("first"))?;
        assert_eq!(n0, 0);
        let (_, n1, m1) = c.find(m0, &pats).ok_or_else(|| anyhow::anyhow!("second"))?;
        assert_eq!(n1, 1);
        let (_, n2, m2) = c.find(m1, &pats).ok_or_else(|| anyhow::anyhow!("third"))?;
        assert_eq!(n2, 2);
        assert!(c.find(m2, &pats).is_none());
        // The earliest line wins over the pattern order.
        let any = [Pattern::from("y"), Pattern::from("login")];
        assert_eq!(c.find(Mark(0), &any).map(|(i, n, _)| (i, n)), Some((1, 0)));
        assert_eq!(c.first_times(Mark(0), &any), vec![Some(1.0), Some(0.0)]);
        Ok(())
    }

    #[test]
    fn restarts_close_the_open_line() {
        let mut c = console(&[b"half"]);
        c.begin_spawn(1);
        c.push(b"new\n", 0.5);
        let lines = c.lines_since(Mark(0));
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1].spawn, lines[1].text.as_str()), (1, "new"));
        assert_eq!(c.text_since(c.spawn_mark()), "new\n");
    }
}
