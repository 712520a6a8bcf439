//! `elastos-loader`: exec'd by the launcher (crate `elastos-loader`, `launch`) inside the new
//! namespaces; builds the jail around itself (see [`jail`]), forks the app and stays as the
//! jail's init (see [`init`]). Not meant to be run by hand.
//!
//! A freestanding program: no libc, no std, no dynamic loader. Its start costs one exec and
//! nothing more (a glibc program pays ~0.4 ms of CPU probing at start on a VM that traps `cpuid`),
//! and it holds ~100 KiB while it waits as init. [`rt`] is its runtime, [`sys`] its syscalls;
//! `unsafe` lives only in those two.

#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod hold;
mod init;
mod jail;
// The runtime (`_start`, the allocator, memcpy and friends) and the syscalls: the only modules
// with `unsafe`, each block with its SAFETY argument.
#[allow(unsafe_code)]
mod rt;
#[allow(unsafe_code)]
mod sys;

use elastos_handoff::fds;

/// What the loader was exec'd for (`argv[1]`).
pub enum Mode {
    /// A new jail (no argument): build it, then run the app as pid 2 and wait for it.
    Launch,
    /// `join`: a process the runtime adds to a running jail (`elastos oci exec`). The launcher
    /// has put this process in the jail's namespaces (the app's user namespace at
    /// [`fds::APP_USER_NAMESPACE`], joined here) and cgroups; only the app's own steps remain.
    Join,
    /// `hold`: the holder of a user's namespace, which later launches of that user join
    /// (see [`hold`]).
    Hold,
}

/// The loader's whole life; its exit code.
fn main(mode: Mode) -> i32 {
    match mode {
        Mode::Hold => hold::run(),
        Mode::Launch => jail_main(false),
        Mode::Join => jail_main(true),
    }
}

/// Read the plan, build the jail (unless `joined` to a running one), run the app as pid 2 and
/// wait for it. The exit code is init's: the app's code, 128+N if it died of signal N, 125 if
/// the jail failed.
fn jail_main(joined: bool) -> i32 {
    // The report pipe must not leak into the app.
    let _ = sys::set_cloexec(fds::REPORT);
    let input = match jail::read_input() {
        Ok(input) if !joined => jail::build_jail(&input).map(|()| input),
        read => read,
    };
    match input {
        Err(e) => {
            init::send(fds::REPORT, &init::failed(&e));
            125
        }
        Ok(input) if joined => init::run_joined(&input, fds::REPORT),
        Ok(input) => init::run(&input, fds::REPORT),
    }
}
