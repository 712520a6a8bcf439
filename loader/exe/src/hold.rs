//! `elastos-loader hold`: the process that keeps a user's namespace alive between launches (the
//! launcher's `holder` module makes it and says why). It holds nothing but its place in that
//! namespace: no capability is used, no file is opened, nothing is read from anyone.
//!
//! Started by the launcher already in the new user namespace (whose id maps the launcher writes
//! through `newuidmap`/`newgidmap` meanwhile), with its holder record at fd 0 and a pipe at fd 1.
//! It forks so that the holder is no launcher's child (a long-lived launcher, the daemon, would
//! otherwise keep it as a zombie once it ended), tells its pid on fd 1, and waits.
//!
//! It ends on SIGTERM (`elastos unshare --stop`), once its record is gone or replaced (fd 0 is
//! then an unlinked inode: its runtime directory was removed, or another holder took over), or
//! once no launch used it for [`IDLE_SECONDS`] (each launch that joins it touches the record).
//! Ending never harms a jail: the namespace lives on as long as any jail nested in it.

use alloc::format;

use crate::sys;

/// How often the record is looked at.
const CHECK_SECONDS: i64 = 10;

/// How long a holder no launch touched lives on.
pub const IDLE_SECONDS: i64 = 600;

/// The holder's whole life; the exit code of the process the launcher waits for.
pub fn run() -> i32 {
    // Only the record (0) and the pipe (1) were given; anything else inherited (an fd the
    // launcher's caller left open without close-on-exec) must not be held for the holder's life.
    if sys::close_from(2).is_err() {
        return 125;
    }
    match sys::fork() {
        Ok(Some(_)) => return 0,
        Ok(None) => {}
        Err(_) => return 125,
    }
    // Out of the launcher's session, so that a terminal's hangup or Ctrl-C never reaches it, and
    // out of its working directory, which it must not keep busy.
    let _ = sys::setsid();
    let _ = sys::chdir(&sys::CPath::new(b"/"));
    let told = sys::write_all(1, format!("{}\n", sys::getpid()).as_bytes());
    sys::close(1);
    if told.is_err() {
        return 125;
    }
    loop {
        sys::sleep(CHECK_SECONDS);
        let in_use = match (sys::links_and_mtime(0), sys::now()) {
            (Ok((links, touched)), Ok(now)) => links > 0 && now - touched < IDLE_SECONDS,
            _ => false,
        };
        if !in_use {
            return 0;
        }
    }
}
