//! Benign modes: what an ordinary app does (threads, memory, files, time, randomness, stdio),
//! for the positive tests, plus the two bombs that show the jail's limits hold.
//!
//! Each mode prints what it saw on stdout and exits 0, or says what failed on stderr and exits 1.

use std::io::{Read, Write};
use std::time::Duration;

/// What a mode returns: Ok(exit code) or a message for stderr (exit 1).
pub type ModeResult = Result<i32, String>;

fn number<T: std::str::FromStr>(args: &[String], index: usize, what: &str) -> Result<T, String> {
    let word = args
        .get(index)
        .ok_or_else(|| format!("missing argument: {what}"))?;
    word.parse()
        .map_err(|_| format!("{what} {word:?} is not a number"))
}

fn home() -> Result<String, String> {
    std::env::var("HOME").map_err(|_| "HOME is not set".to_owned())
}

/// `exit N`: exit with code N.
pub fn exit(args: &[String]) -> ModeResult {
    number(args, 0, "exit code")
}

/// The line `exec-marker` prints; harnesses look for it when a probe run ends early.
pub const EXEC_MARKER: &str =
    "EXEC-MARKER: a copy of elastos-probe that the app wrote was executed";

/// `exec-marker`: what exec probes run when they manage to execute a file the app wrote.
pub fn exec_marker() -> ModeResult {
    println!("{EXEC_MARKER}");
    Ok(0)
}

/// `raise SIG`: die by signal SIG with its default action.
pub fn raise(args: &[String]) -> ModeResult {
    let signal: i32 = number(args, 0, "signal number")?;
    // SAFETY: resetting to the default action and raising take no pointers; Rust's runtime
    // installs its own SIGSEGV handler, which the reset removes.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
    Err(format!("still alive after raise({signal})"))
}

/// `segv`: a real invalid memory access (a fault the kernel forces, unlike raise).
pub fn segv() -> ModeResult {
    // SAFETY: not safe at all, deliberately: the write to address 0 faults and the default
    // SIGSEGV action ends the process. The handler reset makes sure nothing catches it.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1);
    }
    Err("still alive after writing to address 0".to_owned())
}

/// `threads N`: start N threads that each sum a range, join them, check the sums.
pub fn threads(args: &[String]) -> ModeResult {
    let count: u64 = number(args, 0, "thread count")?;
    let handles: Vec<_> = (0..count)
        .map(|i| std::thread::Builder::new().spawn(move || (0..=i).sum::<u64>()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("spawning a thread failed: {e}"))?;
    for (i, handle) in (0..count).zip(handles) {
        let sum = handle.join().map_err(|_| "a thread panicked".to_owned())?;
        if sum != i * (i + 1) / 2 {
            return Err(format!("thread {i} computed {sum}"));
        }
    }
    println!("threads {count} ok");
    Ok(0)
}

/// `mmap`: map, fill, protect and unmap 16 MiB of anonymous memory.
pub fn mmap() -> ModeResult {
    const LEN: usize = 16 << 20;
    // SAFETY: a fresh anonymous private mapping; we touch only its LEN bytes and unmap it.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap failed: {}", std::io::Error::last_os_error()));
        }
        let bytes = std::slice::from_raw_parts_mut(addr.cast::<u8>(), LEN);
        bytes.fill(0xa5);
        let ok = bytes.iter().all(|&b| b == 0xa5);
        if libc::mprotect(addr, LEN, libc::PROT_READ) != 0 {
            return Err(format!(
                "mprotect failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::munmap(addr, LEN);
        if !ok {
            return Err("mapped memory did not read back".to_owned());
        }
    }
    println!("mmap ok");
    Ok(0)
}

/// Writes, reads back and removes a file in `dir`.
fn file_round_trip(dir: &str) -> ModeResult {
    let path = format!("{dir}/elastos-probe-io-{}", std::process::id());
    let data: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    std::fs::write(&path, &data).map_err(|e| format!("write {path}: {e}"))?;
    let back = std::fs::read(&path).map_err(|e| format!("read {path}: {e}"))?;
    std::fs::remove_file(&path).map_err(|e| format!("remove {path}: {e}"))?;
    if back != data {
        return Err(format!("{path} did not read back"));
    }
    println!("io ok in {dir}");
    Ok(0)
}

/// `home-io`: a file round trip in $HOME.
pub fn home_io() -> ModeResult {
    file_round_trip(&home()?)
}

/// `tmp-io`: a file round trip in /tmp.
pub fn tmp_io() -> ModeResult {
    file_round_trip("/tmp")
}

fn home_file(args: &[String]) -> Result<String, String> {
    let name = args.first().ok_or("missing argument: file name")?;
    Ok(format!("{}/{name}", home()?))
}

/// `home-put NAME VALUE`: store VALUE in $HOME/NAME.
pub fn home_put(args: &[String]) -> ModeResult {
    let path = home_file(args)?;
    let value = args.get(1).ok_or("missing argument: value")?;
    std::fs::write(&path, value).map_err(|e| format!("write {path}: {e}"))?;
    Ok(0)
}

/// `home-get NAME`: print $HOME/NAME; exit 1 when it does not exist.
pub fn home_get(args: &[String]) -> ModeResult {
    let path = home_file(args)?;
    let value = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    println!("{value}");
    Ok(0)
}

/// `home-digest [mmap-first:]NAME..`: per file of $HOME, one line `NAME stat SIZE MODE
/// MTIME_NS` (before any read), then `NAME read LEN FNV` (read(2) to the end) and `NAME mmap LEN
/// FNV` (a shared read-only mapping; first with `mmap-first:`), or `NAME error STEP ERRNO` when
/// a step fails (files on demand: an evicted file's content must come back byte-exact, or fail
/// with a clear errno).
pub fn home_digest(args: &[String]) -> ModeResult {
    use std::os::unix::fs::MetadataExt;
    let home = home()?;
    for arg in args {
        let (mmap_first, name) = match arg.strip_prefix("mmap-first:") {
            Some(name) => (true, name),
            None => (false, arg.as_str()),
        };
        let path = format!("{home}/{name}");
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("stat {path}: {e}"))?;
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        println!(
            "{name} stat {} {:o} {mtime_ns}",
            meta.len(),
            meta.mode() & 0o7777
        );
        let steps: [DigestStep; 2] = if mmap_first {
            [digest_mmap, digest_read]
        } else {
            [digest_read, digest_mmap]
        };
        for step in steps {
            match step(&path, meta.len()) {
                Ok(line) => println!("{name} {line}"),
                Err((what, errno)) => println!("{name} error {what} {errno}"),
            }
        }
    }
    Ok(0)
}

/// `home-marker NAME`: tries to read, set and remove the files-on-demand marker
/// (`trusted.elastos.placeholder`) of $HOME/NAME; prints `getxattr|setxattr|removexattr RET
/// ERRNO` (an app must not be able to see, forge or hide one).
pub fn home_marker(args: &[String]) -> ModeResult {
    let path = std::ffi::CString::new(home_file(args)?).map_err(|e| e.to_string())?;
    let name = c"trusted.elastos.placeholder";
    let mut buf = [0u8; 64];
    let value = b"ECP1 forged by the app";
    let last = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let got = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    println!("getxattr {got} {}", if got < 0 { last() } else { 0 });
    // SAFETY: as above; the value is read, not written.
    let set = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    println!("setxattr {set} {}", if set < 0 { last() } else { 0 });
    // SAFETY: valid NUL-terminated strings.
    let removed = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    println!(
        "removexattr {removed} {}",
        if removed < 0 { last() } else { 0 }
    );
    Ok(0)
}

/// One way of reading a file for `home-digest`: its line, or the step that failed and errno.
type DigestStep = fn(&str, u64) -> Result<String, (&'static str, i32)>;

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn digest_read(path: &str, _len: u64) -> Result<String, (&'static str, i32)> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| ("read", errno(&e)))?;
    Ok(format!("read {} {:016x}", bytes.len(), fnv1a(&bytes)))
}

fn digest_mmap(path: &str, len: u64) -> Result<String, (&'static str, i32)> {
    let file = std::fs::File::open(path).map_err(|e| ("open", errno(&e)))?;
    let len = len as usize;
    if len == 0 {
        return Ok(format!("mmap 0 {:016x}", fnv1a(&[])));
    }
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, read once and
    // unmapped before the file is closed.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(("mmap", errno(&std::io::Error::last_os_error())));
    }
    // SAFETY: the mapping is `len` readable bytes until munmap below.
    let view = unsafe { std::slice::from_raw_parts(mapped.cast::<u8>(), len) };
    let line = format!("mmap {len} {:016x}", fnv1a(view));
    // SAFETY: unmaps exactly the mapping made above; `view` is not used after.
    unsafe { libc::munmap(mapped, len) };
    Ok(line)
}

/// FNV-1a, 64 bits: enough to tell two contents apart in a test.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `time`: print the realtime clock (seconds since the epoch) and the monotonic clock.
pub fn time() -> ModeResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("realtime clock before 1970: {e}"))?;
    let start = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(10));
    println!("realtime {}", now.as_secs());
    println!("monotonic-elapsed-ms {}", start.elapsed().as_millis());
    Ok(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `random`: 32 bytes from getrandom(2) and 32 from /dev/urandom, in hex.
pub fn random() -> ModeResult {
    let mut buf = [0u8; 32];
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(format!(
            "getrandom returned {n}: {}",
            std::io::Error::last_os_error()
        ));
    }
    println!("getrandom {}", hex(&buf));
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    println!("urandom {}", hex(&buf));
    Ok(0)
}

/// `stdout BYTES`: write BYTES bytes ('x') to stdout.
pub fn stdout(args: &[String]) -> ModeResult {
    let mut left: u64 = number(args, 0, "byte count")?;
    let chunk = [b'x'; 1 << 16];
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])
            .map_err(|e| format!("write stdout: {e}"))?;
        left -= n as u64;
    }
    out.flush().map_err(|e| format!("flush stdout: {e}"))?;
    Ok(0)
}

/// `cat`: copy stdin to stdout.
pub fn cat() -> ModeResult {
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
        .map_err(|e| format!("copy stdin to stdout: {e}"))?;
    Ok(0)
}

/// `read PATH...`: for each path, one line: `PATH ok BYTES` when it could be read whole (a
/// directory: listed), else `PATH errno N`; then each readable file's content, after a line
/// `== PATH`. Exits 0 either way: the lines say what the jail allowed.
pub fn read(args: &[String]) -> ModeResult {
    let mut contents = Vec::new();
    for path in args {
        let read = std::fs::read(path).or_else(|e| match e.raw_os_error() {
            Some(libc::EISDIR) => std::fs::read_dir(path).map(|entries| {
                let names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.join("\n").into_bytes()
            }),
            _ => Err(e),
        });
        match read {
            Ok(bytes) => {
                println!("{path} ok {}", bytes.len());
                contents.push((path, bytes));
            }
            Err(e) => println!("{path} errno {}", errno(&e)),
        }
    }
    for (path, bytes) in contents {
        println!("== {path}");
        println!("{}", String::from_utf8_lossy(&bytes));
    }
    Ok(0)
}

/// `sleep SECS [WORDS...]`: sleep; the extra words only mark this process's argv for a harness.
pub fn sleep(args: &[String]) -> ModeResult {
    let secs: u64 = number(args, 0, "seconds")?;
    std::thread::sleep(Duration::from_secs(secs));
    Ok(0)
}

/// `ignore-term SECS`: ignore SIGTERM (saying so on stderr each time it comes), print `ready`,
/// sleep: an app that only SIGKILL stops.
pub fn ignore_term(args: &[String]) -> ModeResult {
    let secs: u64 = number(args, 0, "seconds")?;
    extern "C" fn on_term(_: libc::c_int) {
        let said = b"TERM ignored\n";
        // SAFETY: write(2) is async-signal-safe; the buffer is a static byte string.
        unsafe { libc::write(2, said.as_ptr().cast(), said.len()) };
    }
    // SAFETY: installs a handler that only calls write(2) (async-signal-safe).
    let previous =
        unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    if previous == libc::SIG_ERR {
        return Err("cannot install a SIGTERM handler".to_owned());
    }
    println!("ready");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("flush stdout: {e}"))?;
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    // A signal cuts a sleep short: sleep again until the time is up.
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(left);
    }
    Ok(0)
}

/// `ticker COUNT MILLIS [EXIT]`: print `tick N` (stdout) and `tock N` (stderr) COUNT times,
/// MILLIS apart, then exit with EXIT (default 0).
pub fn ticker(args: &[String]) -> ModeResult {
    let count: u64 = number(args, 0, "count")?;
    let millis: u64 = number(args, 1, "milliseconds")?;
    let code: i32 = if args.len() > 2 {
        number(args, 2, "exit code")?
    } else {
        0
    };
    for i in 0..count {
        println!("tick {i}");
        eprintln!("tock {i}");
        std::io::stdout()
            .flush()
            .map_err(|e| format!("flush stdout: {e}"))?;
        std::thread::sleep(Duration::from_millis(millis));
    }
    Ok(code)
}

/// `env`: print the environment, one NAME=VALUE per line.
pub fn env() -> ModeResult {
    for (name, value) in std::env::vars_os() {
        println!("{}={}", name.to_string_lossy(), value.to_string_lossy());
    }
    Ok(0)
}

/// `fds`: print the open fds, comma-separated.
pub fn fds() -> ModeResult {
    let fds: Vec<String> = crate::probes::open_fds()
        .iter()
        .map(i32::to_string)
        .collect();
    println!("{}", fds.join(","));
    Ok(0)
}

/// `status`: the identity and confinement lines of /proc/self/status.
pub fn status() -> ModeResult {
    const FIELDS: [&str; 7] = [
        "Uid:",
        "CapEff:",
        "CapBnd:",
        "CapPrm:",
        "NoNewPrivs:",
        "Seccomp:",
        "Cpus_allowed_list:",
    ];
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("read /proc/self/status: {e}"))?;
    for line in status
        .lines()
        .filter(|line| FIELDS.iter().any(|f| line.starts_with(f)))
    {
        println!("{line}");
    }
    Ok(0)
}

/// `args [WORDS...]`: print each word on its own line.
pub fn args(args: &[String]) -> ModeResult {
    for word in args {
        println!("{word}");
    }
    Ok(0)
}

/// `thread-bomb N`: start up to N threads that wait; print how many started. Exit 0 when the
/// limit stopped it, 1 when all N started (no limit held).
pub fn thread_bomb(args: &[String]) -> ModeResult {
    let wanted: usize = number(args, 0, "thread count")?;
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut started = Vec::new();
    let mut stopped_by = None;
    for _ in 0..wanted {
        let wait = std::sync::Arc::clone(&wait);
        let spawned = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                // Blocks until the sender is dropped.
                let _ = wait.lock().map(|rx| rx.recv());
            });
        match spawned {
            Ok(handle) => started.push(handle),
            Err(e) => {
                stopped_by = Some(e);
                break;
            }
        }
    }
    drop(release);
    let count = started.len();
    for handle in started {
        let _ = handle.join();
    }
    match stopped_by {
        Some(e) => {
            println!("thread-bomb: started {count} of {wanted}, then: {e}");
            Ok(0)
        }
        None => {
            println!("thread-bomb: started all {wanted}");
            Ok(1)
        }
    }
}

/// `mem-bomb BYTES`: map and touch memory 1 MiB at a time up to BYTES; print how far it got.
/// Exit 0 when an allocation failed (the limit held), 1 when all of it was touched; a memory
/// cgroup may instead kill the process (SIGKILL).
pub fn mem_bomb(args: &[String]) -> ModeResult {
    const CHUNK: usize = 1 << 20;
    let wanted: u64 = number(args, 0, "byte count")?;
    let mut touched: u64 = 0;
    while touched < wanted {
        // SAFETY: a fresh anonymous mapping, written only within its CHUNK bytes and never freed
        // (the point is to hold it).
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            println!(
                "mem-bomb: touched {touched} of {wanted} bytes, then: {}",
                std::io::Error::last_os_error()
            );
            return Ok(0);
        }
        // SAFETY: addr..addr+CHUNK is the mapping just created.
        unsafe { std::ptr::write_bytes(addr.cast::<u8>(), 0x5a, CHUNK) };
        touched += CHUNK as u64;
    }
    println!("mem-bomb: touched all {wanted} bytes");
    Ok(1)
}

/// `spin SECONDS`: a busy loop on one thread for SECONDS of wall-clock time (the CPU limit's
/// test reads how much CPU time the app's cgroup was given meanwhile).
pub fn spin(args: &[String]) -> ModeResult {
    let secs: f64 = number(args, 0, "seconds")?;
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut turns: u64 = 0;
    while std::time::Instant::now() < end {
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
    println!("spin: {turns} turns");
    Ok(0)
}

/// `fill-home BYTES`: writes $HOME/fill 64 KiB at a time (each flushed to the disk with
/// fdatasync) up to BYTES; prints how far it got and the error that stopped it. Exit 0 when
/// a write failed before BYTES (the quota held), 1 when all of it was written.
pub fn fill_home(args: &[String]) -> ModeResult {
    let wanted: u64 = number(args, 0, "byte count")?;
    let path = format!("{}/fill", home()?);
    let mut file = std::fs::File::create(&path).map_err(|e| format!("create {path}: {e}"))?;
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut written: u64 = 0;
    while written < wanted {
        let result = file.write_all(&chunk).and_then(|()| file.sync_data());
        if let Err(e) = result {
            println!("fill-home: wrote {written} of {wanted} bytes, then: {e}");
            return Ok(0);
        }
        written += chunk.len() as u64;
    }
    println!("fill-home: wrote all {wanted} bytes");
    Ok(1)
}

/// `terminal`: the app's session and what its stdin terminal says when the app tries to become
/// its foreground process group (TIOCSPGRP, with the app's own group: harmless, it only moves
/// the terminal's foreground to where it already runs, when the terminal is its own).
pub fn terminal() -> ModeResult {
    // SAFETY: getsid/getpgrp take integers; the ioctl reads one pid_t from a live local.
    let (sid, pgrp, answer) = unsafe {
        let pgrp = libc::getpgrp();
        let answer = match libc::ioctl(0, libc::TIOCSPGRP, &pgrp as *const libc::pid_t) {
            0 => "ok".to_owned(),
            _ => std::io::Error::last_os_error()
                .raw_os_error()
                .map_or_else(|| "error".to_owned(), |e| format!("errno {e}")),
        };
        (libc::getsid(0), pgrp, answer)
    };
    println!("sid={sid} pgrp={pgrp} tiocspgrp={answer}");
    Ok(0)
}

/// The errno of the last failed call, as `errno N`.
fn last_errno() -> String {
    std::io::Error::last_os_error()
        .raw_os_error()
        .map_or_else(|| "error".to_owned(), |e| format!("errno {e}"))
}

/// `stdio-host`: what the app can do to the file behind its stdout, reported on stderr as
/// `stdout=TYPE fchmod-setuid=.. fchmod=.. flock=.. setfl=..`. Harmless to a pipe; to a host file
/// it is what a hostile app would try: make it setuid (04755) or world-writable (0666), lock it
/// (LOCK_NB: contends with a lock the harness holds) and flag it O_NONBLOCK (a flag of the open
/// file description, which the harness shares).
pub fn stdio_host() -> ModeResult {
    let result = |ret: libc::c_int| {
        if ret == 0 {
            "ok".to_owned()
        } else {
            last_errno()
        }
    };
    // SAFETY: fstat fills a live local stat; the other calls take integers.
    let report = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        let kind = if libc::fstat(1, &mut stat) != 0 {
            last_errno()
        } else {
            match stat.st_mode & libc::S_IFMT {
                libc::S_IFIFO => "fifo",
                libc::S_IFREG => "regular",
                libc::S_IFCHR => "chardev",
                libc::S_IFSOCK => "socket",
                _ => "other",
            }
            .to_owned()
        };
        let setuid = result(libc::fchmod(1, 0o4755));
        let chmod = result(libc::fchmod(1, 0o666));
        let flock = result(libc::flock(1, libc::LOCK_EX | libc::LOCK_NB));
        let flags = libc::fcntl(1, libc::F_GETFL);
        let setfl = result(libc::fcntl(1, libc::F_SETFL, flags | libc::O_NONBLOCK).min(0));
        format!("stdout={kind} fchmod-setuid={setuid} fchmod={chmod} flock={flock} setfl={setfl}")
    };
    eprintln!("{report}");
    Ok(0)
}

/// Window size of the terminal on fd 0, as `ROWSxCOLS` (or the errno).
fn window_size() -> String {
    // SAFETY: TIOCGWINSZ fills a live local winsize.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut size) == 0 {
            format!("{}x{}", size.ws_row, size.ws_col)
        } else {
            last_errno()
        }
    }
}

/// `tty`: for an interactive session on a terminal. Prints `isatty=I,O,E rdev=DEV size=RxC` and
/// `ready`, then `size=RxC` at each SIGWINCH, until a signal with its default action (Ctrl-C's
/// SIGINT) ends it; or, on a line `exit`, exits 0.
pub fn tty() -> ModeResult {
    let isatty: Vec<String> = (0..=2)
        // SAFETY: isatty takes an integer.
        .map(|fd| unsafe { libc::isatty(fd) }.to_string())
        .collect();
    // SAFETY: fstat fills a live local stat.
    let rdev = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(0, &mut stat);
        stat.st_rdev
    };
    println!(
        "isatty={} rdev={rdev} size={}\nready",
        isatty.join(","),
        window_size()
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // SIGWINCH is waited for by a thread of its own (blocked everywhere first, so it is never
    // lost), the main thread reads lines.
    // SAFETY: sigset operations on a live local; the mask applies to this thread and is
    // inherited by the one spawned after it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || loop {
        let mut signal = 0;
        // SAFETY: sigwait reads the live set and writes one int.
        if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
            println!("size={}", window_size());
            let _ = std::io::stdout().flush();
        }
    });
    let mut line = String::new();
    while std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?
        > 0
    {
        if line.trim() == "exit" {
            return Ok(0);
        }
        line.clear();
    }
    Ok(0)
}

/// `split N`: N lines `out I` on stdout and `err I` on stderr, alternating, each written at
/// once (no buffering across the two).
pub fn split(args: &[String]) -> ModeResult {
    let lines: u64 = number(args, 0, "line count")?;
    for i in 0..lines {
        std::io::stdout()
            .write_all(format!("out {i}\n").as_bytes())
            .map_err(|e| format!("write stdout: {e}"))?;
        std::io::stderr()
            .write_all(format!("err {i}\n").as_bytes())
            .map_err(|e| format!("write stderr: {e}"))?;
    }
    Ok(0)
}

/// `close-stdout`: `before` on stdout, closes it, then `after` on stderr: the app's end of its
/// stdout, not the launcher's, is what closes.
pub fn close_stdout() -> ModeResult {
    let mut out = std::io::stdout().lock();
    out.write_all(b"before\n")
        .and_then(|()| out.flush())
        .map_err(|e| format!("write stdout: {e}"))?;
    // SAFETY: closes fd 1; its buffer was flushed and nothing writes to stdout afterwards.
    unsafe { libc::close(1) };
    eprintln!("after");
    Ok(0)
}
