// Embeds libtorch's directory as an rpath so training binaries and tests run without
// LD_LIBRARY_PATH (cargo overwrites that variable, so `.cargo/config.toml` cannot set it).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    }
    // With the linker's default --as-needed, libtorch_cuda.so is dropped because no symbol
    // of it is referenced directly, and tch then sees no GPU.
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
