//! Links `elastos-loader` as a freestanding static executable: our own `_start` (src/rt.rs), no C
//! runtime and no libc, not position-independent. The kernel maps it and jumps to `_start`; there
//! is no dynamic loader, nothing to relocate and no libc start-up (glibc's probes of the CPU at
//! start cost ~0.4 ms per process on virtual machines that trap `cpuid`).

fn main() {
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bin=elastos-loader={arg}");
    }
}
