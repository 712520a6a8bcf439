//! The loader's runtime, in place of libc's and std's: the process entry point, the syscall
//! instruction, a bump allocator, the panic handler and the memory functions the compiler emits
//! calls to. Nothing here runs before `main` but the three instructions of `_start`.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "elastos-loader's runtime (entry point and syscall instruction) exists for x86_64 only"
);

// The kernel starts us with argc, argv and envp on the stack. The loader's input comes on
// fds::INPUT; of argv it reads only whether `argv[1]` is `join` or `hold` (see [`crate::Mode`]), so
// `_start` hands the initial stack pointer to `entry` and aligns the stack as the C ABI wants.
global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: `stack` is the kernel's initial stack pointer: argc, then argc argv pointers to
    // NUL-terminated strings, then a null pointer (execve(2)'s process start layout); argv[1]
    // is read only when argc says it exists.
    let argument_is =
        |word: &[u8]| unsafe { *stack >= 2 && c_string_is(*stack.add(2) as *const u8, word) };
    exit(crate::main(if argument_is(b"join") {
        crate::Mode::Join
    } else if argument_is(b"hold") {
        crate::Mode::Hold
    } else {
        crate::Mode::Launch
    }))
}

/// Whether the NUL-terminated string at `string` is `expected`.
///
/// # Safety
/// `string` must point to a NUL-terminated string.
unsafe fn c_string_is(string: *const u8, expected: &[u8]) -> bool {
    for (i, byte) in expected.iter().chain([&0u8]).enumerate() {
        // SAFETY: the string is read up to its NUL at the latest: a mismatch stops the loop.
        if unsafe { string.add(i).read() } != *byte {
            return false;
        }
    }
    true
}

/// exit_group(2).
pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes one integer and does not return.
    unsafe { syscall(linux_raw_sys::general::__NR_exit_group, &[code as usize]) };
    unreachable!("exit_group returned")
}

/// The raw syscall instruction: `nr` with up to six arguments; the kernel's return value
/// (negative: -errno).
///
/// # Safety
/// The arguments must be what syscall `nr` expects: pointers valid for the sizes the kernel will
/// read or write.
pub unsafe fn syscall(nr: u32, args: &[usize]) -> isize {
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") arg(0),
            in("rsi") arg(1),
            in("rdx") arg(2),
            in("r10") arg(3),
            in("r8") arg(4),
            in("r9") arg(5),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Room for everything the loader allocates: the input (a few KiB), paths, argv. In .bss, so only
/// the pages actually used become memory.
const ARENA_BYTES: usize = 8 << 20;

/// A bump allocator: the loader allocates a few KiB once, then execs (the app) or waits (init)
/// without allocating, so nothing needs to be freed.
struct Arena {
    memory: UnsafeCell<[u8; ARENA_BYTES]>,
    used: AtomicUsize,
}

// SAFETY: the loader is single-threaded; `used` is only read and written through atomics anyway.
unsafe impl Sync for Arena {}

// SAFETY: every block handed out is inside `memory`, aligned as asked, and never handed out
// twice (`used` only grows, except when the last block itself is resized in place).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.memory.get() as usize;
        let used = self.used.load(Ordering::Relaxed);
        let start = (base + used + layout.align() - 1) & !(layout.align() - 1);
        match start.checked_add(layout.size()) {
            Some(end) if end <= base + ARENA_BYTES => {
                self.used.store(end - base, Ordering::Relaxed);
                start as *mut u8
            }
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _block: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let base = self.memory.get() as usize;
        let used = self.used.load(Ordering::Relaxed);
        // The last block (a growing Vec) grows in place.
        if block as usize + layout.size() == base + used
            && block as usize + new_size <= base + ARENA_BYTES
        {
            self.used
                .store(block as usize + new_size - base, Ordering::Relaxed);
            return block;
        }
        // SAFETY: the caller's contract for realloc; the layout is valid (same alignment).
        unsafe {
            let moved = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !moved.is_null() {
                memcpy(moved, block, layout.size().min(new_size));
            }
            moved
        }
    }
}

#[global_allocator]
static ARENA: Arena = Arena {
    memory: UnsafeCell::new([0; ARENA_BYTES]),
    used: AtomicUsize::new(0),
};

/// A panic is a bug of the loader: say so on stderr and fail like any elastos failure (125).
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    struct Stderr;
    impl core::fmt::Write for Stderr {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            crate::sys::write_all(2, text.as_bytes()).map_err(|_| core::fmt::Error)
        }
    }
    let _ = core::fmt::write(
        &mut Stderr,
        format_args!("elastos-loader: internal error: {info}\n"),
    );
    exit(125)
}

// core and alloc are precompiled with unwinding landing pads that name these two symbols; with
// panic=abort nothing ever unwinds, so neither is ever called.

/// Never called (see above).
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    exit(125)
}

/// Never called (see above).
#[no_mangle]
extern "C" fn rust_eh_personality() {}

// The memory functions the compiler emits calls to, which libc would provide. Written with
// `rep movsb`/`rep stosb` and volatile reads, so the compiler cannot turn them back into calls
// to themselves.

/// memcpy(3).
///
/// # Safety
/// As memcpy: `n` bytes valid at both, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; the direction flag is clear per the ABI.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// memmove(3).
///
/// # Safety
/// As memmove: `n` bytes valid at both.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: a forward copy never overwrites bytes it has yet to read here.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copy backwards (direction flag set, restored after), from the last byte.
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") n => _,
             inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dest
}

/// memset(3).
///
/// # Safety
/// As memset: `n` bytes valid at `dest`.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, byte: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") byte as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// memcmp(3).
///
/// # Safety
/// As memcmp: `n` bytes valid at both.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's contract; volatile keeps this a loop rather than a memcmp call.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// bcmp(3).
///
/// # Safety
/// As bcmp: `n` bytes valid at both.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { memcmp(a, b, n) }
}
