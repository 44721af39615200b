//! Running shell commands over the serial console.
//!
//! A command is typed as one line framed by two markers that the shell prints:
//! `printf '%s_%s\n' __CAIRN_BEGIN N; CMD; printf '%s_%s=%d\n' __CAIRN_RC N "$?"`.
//! The markers as printed (`__CAIRN_BEGIN_N`, `__CAIRN_RC_N=rc`) never occur
//! in the typed text, so the tty's echo of the line (if echo is still on)
//! can never be mistaken for them; everything between them is the output.

/// Longest command accepted: the tty's canonical-mode line buffer holds 4095
/// bytes, and the markers need room too.
pub const MAX_COMMAND_LEN: usize = 3800;

/// Typed once after login so that command output is clean: no echo of typed
/// lines (readline echoes by itself, so line editing goes off too), no
/// prompts, no pager or colours, wide lines, and kernel messages kept off
/// the console except emergencies. Each part tolerates a shell without it.
pub const SHELL_SETUP: &str = "stty -echo cols 400 2>/dev/null; \
if [ -n \"$BASH_VERSION\" ]; then set +o emacs +o vi; fi; \
PS1=''; PS2=''; unset PROMPT_COMMAND; \
export TERM=dumb PAGER=cat SYSTEMD_PAGER='' SYSTEMD_COLORS=0 LC_ALL=C; \
dmesg -n 1 2>/dev/null; true";

pub(crate) fn begin_marker(nonce: &str) -> String {
    format!("__CAIRN_BEGIN_{nonce}")
}

pub(crate) fn rc_marker(nonce: &str) -> String {
    format!("__CAIRN_RC_{nonce}=")
}

/// The line to type for `cmd` (without the line terminator). `cmd` must be
/// one line that can be followed by `;` (so no trailing `&`).
pub(crate) fn framed_command(cmd: &str, nonce: &str) -> String {
    format!(
        "printf '%s_%s\\n' __CAIRN_BEGIN {nonce}; {cmd}; printf '%s_%s=%d\\n' __CAIRN_RC {nonce} \"$?\""
    )
}

/// Extracts (exit code, output) from console text that contains the framed
/// command's markers. Output is exactly what the command printed, minus
/// `\r`s; a last line without a newline is kept as such.
pub(crate) fn parse_run_output(text: &str, nonce: &str) -> Option<(i32, String)> {
    let text = text.replace('\r', "");
    let begin = begin_marker(nonce);
    let after_begin = &text[text.find(&begin)? + begin.len()..];
    // The rest of the begin marker's line is its newline.
    let body = &after_begin[after_begin.find('\n')? + 1..];
    let rc = rc_marker(nonce);
    let rc_at = body.find(&rc)?;
    let digits: String = body[rc_at + rc.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    let code = digits.parse().ok()?;
    Some((code, drop_console_messages(&body[..rc_at])))
}

/// Removes whole lines the kernel or a `journal+console` service printed on
/// the serial console while the command ran ("[   24.58] cairn-health[194]:
/// …"): they share the tty with the shell but are not the command's output.
fn drop_console_messages(out: &str) -> String {
    let is_message = |l: &str| {
        let Some(rest) = l.strip_prefix('[') else {
            return false;
        };
        let Some((stamp, _)) = rest.split_once("] ") else {
            return false;
        };
        let stamp = stamp.trim_start();
        !stamp.is_empty()
            && stamp.contains('.')
            && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
    };
    let mut kept = String::with_capacity(out.len());
    for l in out.split_inclusive('\n') {
        if !is_message(l) {
            kept.push_str(l);
        }
    }
    kept
}

/// Regex for the prompt of an interactive shell that is waiting for input.
pub(crate) const PROMPT_REGEX: &str = r"[#$>] ?$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_messages_are_not_command_output() {
        let out = "[   24.581011] cairn-health[194]: cairn-health: passed after 5s\na\n[x] kept\n[ 1.5]no space kept\n";
        assert_eq!(
            drop_console_messages(out),
            "a\n[x] kept\n[ 1.5]no space kept\n"
        );
    }

    #[test]
    fn framed_command_is_one_line_and_hides_the_markers() {
        let line = framed_command("ls /", "7f");
        assert!(!line.contains('\n'));
        assert!(!line.contains(&begin_marker("7f")));
        assert!(!line.contains(&rc_marker("7f")));
        assert_eq!(
            line,
            "printf '%s_%s\\n' __CAIRN_BEGIN 7f; ls /; printf '%s_%s=%d\\n' __CAIRN_RC 7f \"$?\""
        );
    }

    #[test]
    fn parses_output_with_echo_and_prompts() {
        let n = "a1";
        let typed = framed_command("cat /etc/hostname", n);
        // Echo on, a bash prompt, CRLF line ends, the next prompt after.
        let text = format!(
            "root@cairn:~# {typed}\r\n__CAIRN_BEGIN_a1\r\ncairn\r\n__CAIRN_RC_a1=0\r\nroot@cairn:~# "
        );
        assert_eq!(parse_run_output(&text, n), Some((0, "cairn\n".to_string())));
    }

    #[test]
    fn parses_output_without_trailing_newline_and_nonzero_rc() {
        let text = "__CAIRN_BEGIN_b2\nline1\npartial__CAIRN_RC_b2=3\n";
        assert_eq!(
            parse_run_output(text, "b2"),
            Some((3, "line1\npartial".to_string()))
        );
        let empty = "__CAIRN_BEGIN_b2\n__CAIRN_RC_b2=127\n";
        assert_eq!(parse_run_output(empty, "b2"), Some((127, String::new())));
    }

    #[test]
    fn other_nonces_and_incomplete_output_are_ignored() {
        let text = "__CAIRN_BEGIN_old\nx\n__CAIRN_RC_old=0\n__CAIRN_BEGIN_new\ny\n";
        assert_eq!(parse_run_output(text, "new"), None);
        assert_eq!(parse_run_output(text, "old"), Some((0, "x\n".to_string())));
        // The rc line has not arrived in full yet.
        assert_eq!(
            parse_run_output("__CAIRN_BEGIN_c\n__CAIRN_RC_c=", "c"),
            None
        );
    }

    #[test]
    fn prompt_regex_matches_common_prompts() -> anyhow::Result<()> {
        let p = crate::Pattern::regex(PROMPT_REGEX)?;
        for prompt in ["root@cairn:~# ", "$ ", "/ #", "Shell> "] {
            assert!(p.find_in(prompt, 0).is_some(), "{prompt}");
        }
        assert!(p.find_in("Debian GNU/Linux 12 cairn ttyS0", 0).is_none());
        Ok(())
    }
}
