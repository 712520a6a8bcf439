//! `elastos-loader`: exec'd by the launcher inside the new namespaces; builds the jail (see
//! `elastos_loader::jail`), forks the app and stays as the jail's init (see
//! `elastos_loader::init`). Not meant to be run by hand.

#![forbid(unsafe_code)]

use std::io::Read;

use elastos_loader::handoff::{fds, LoaderInput};
use elastos_loader::init;
use elastos_loader::jail::{self, JailError, Step};
use elastos_loader::sys;

fn main() {
    let mut report = sys::take_inherited_fd(fds::REPORT, true);
    let code = match read_input().and_then(|input| jail::build_jail(&input).map(|()| input)) {
        Err(e) => {
            init::send(&mut report, &init::failed(&e));
            125
        }
        Ok(input) => init::run(input, report),
    };
    std::process::exit(code);
}

fn read_input() -> Result<LoaderInput, JailError> {
    let fail = |what: &str, source: std::io::Error| JailError {
        step: Step::ReadInput,
        what: what.into(),
        source,
    };
    let mut bytes = Vec::new();
    sys::take_inherited_fd(fds::INPUT, false)
        .read_to_end(&mut bytes)
        .map_err(|e| fail("reading the plan", e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| fail("decoding the plan", std::io::Error::other(e.to_string())))
}
