//! Links libibumad (and libibverbs for the shim) from the system rdma-core
//! through pkg-config, and compiles the C shim over the inline verbs.
fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    let umad = pkg_config::probe_library("libibumad").expect("libibumad-dev is required");
    let verbs = pkg_config::probe_library("libibverbs").expect("libibverbs-dev is required");
    let mut build = cc::Build::new();
    build.file("src/shim.c").warnings(true);
    for p in umad.include_paths.iter().chain(verbs.include_paths.iter()) {
        build.include(p);
    }
    build.compile("srptd_shim");
}
