//! Links libibumad (and libibverbs for the shim) from the system rdma-core
//! through pkg-config, librbd and librados from Ceph (no pkg-config files:
//! found by their headers), and compiles the C shim over the inline verbs
//! and librbd's struct layouts.
fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    let umad = pkg_config::probe_library("libibumad").expect("libibumad-dev is required");
    let verbs = pkg_config::probe_library("libibverbs").expect("libibverbs-dev is required");
    // Debian's librbd-dev/librados-dev ship headers and .so links only.
    for h in ["rbd/librbd.h", "rados/librados.h"] {
        let found = ["/usr/include", "/usr/local/include"]
            .iter()
            .any(|d| std::path::Path::new(d).join(h).exists());
        assert!(found, "{h} not found: librbd-dev and librados-dev are required");
    }
    let mut build = cc::Build::new();
    build.file("src/shim.c").warnings(true);
    for p in umad.include_paths.iter().chain(verbs.include_paths.iter()) {
        build.include(p);
    }
    build.compile("srptd_shim");
}
