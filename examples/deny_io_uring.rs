//! Runs a command with `io_uring_setup(2)` failing with `EPERM`, as a
//! container's seccomp policy makes it fail (Docker's default profile
//! since 25.0, for one). `tests/vm/srptd-uring.sh` starts srptd through it
//! to check that srptd says so once and serves its file LUNs on the worker
//! pool.
//!
//!     deny_io_uring <command> [args...]
//!
//! The filter (seccomp-bpf, `PR_SET_NO_NEW_PRIVS` first so that no
//! privilege is needed) is inherited across `execvp`, so the command keeps
//! this process's PID.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

/// `AUDIT_ARCH_X86_64` (linux/audit.h): EM_X86_64 | 64-bit | little endian.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Offsets in `struct seccomp_data` (linux/seccomp.h).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn deny_io_uring_setup() -> std::io::Result<()> {
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(ld, DATA_ARCH),
        // Another architecture's system call numbers mean other calls.
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, DATA_NR),
        jump(jeq, libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `filter`, both alive for the call; the
    // kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    #[cfg(not(target_arch = "x86_64"))]
    compile_error!("the filter checks x86-64 system call numbers");
    let args: Vec<CString> = std::env::args_os()
        .skip(1)
        .map(|a| CString::new(a.as_bytes()).expect("no NUL in arguments"))
        .collect();
    if args.is_empty() {
        eprintln!("usage: deny_io_uring <command> [args...]");
        std::process::exit(2);
    }
    if let Err(e) = deny_io_uring_setup() {
        eprintln!("deny_io_uring: installing the seccomp filter: {e}");
        std::process::exit(1);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: a NUL-terminated array of NUL-terminated strings that
    // outlive the call (it returns only on failure).
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    eprintln!(
        "deny_io_uring: {}: {}",
        args[0].to_string_lossy(),
        std::io::Error::last_os_error()
    );
    std::process::exit(127);
}
