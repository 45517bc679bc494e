//! Panics as values: a panic inside a library (tract planning a hostile graph, say) that a
//! caller catches becomes its one-line error or reject reason, with nothing else printed;
//! any other panic is a bug, said in one line, and ends the process with the documented
//! exit code for one. A leaf every layer may use.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;

thread_local! {
    /// How many [`catch`]es this thread is inside: the hook stays quiet for their panics.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`; a panic inside it comes back as its message instead of unwinding further, and
/// [`install_hook`]'s hook prints nothing for it (the caller reports it).
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result.map_err(|panic| message(panic.as_ref()))
}

/// A panic's message.
pub fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The binary's panic hook: silent for a panic a [`catch`] will report; for any other, one
/// line on stderr and the process ends with `exit_code` (was: Rust's message, a backtrace of
/// thirty lines where `RUST_BACKTRACE` is set, and exit 101, which `--help` does not list).
pub fn install_hook(exit_code: i32) {
    std::panic::set_hook(Box::new(move |info| {
        if CATCHING.with(|c| c.get()) > 0 {
            return;
        }
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = message(info.payload());
        let text = crate::text::printable(&message);
        eprintln!("error: internal error (a bug, please report it): {text}{at}");
        std::process::exit(exit_code);
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_caught_panic_is_its_message() {
        assert_eq!(super::catch(|| 3), Ok(3));
        let caught = super::catch(|| -> u8 { panic!("planning failed: {}", 7) });
        assert_eq!(caught, Err("planning failed: 7".to_string()));
        // Nested: the inner one caught, the outer goes on.
        let outer = super::catch(|| super::catch(|| panic!("inner")).unwrap_err());
        assert_eq!(outer, Ok("inner".to_string()));
    }
}
